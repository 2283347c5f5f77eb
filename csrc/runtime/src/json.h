#pragma once
// A small JSON reader for the export metadata (amanet.json): objects, arrays, strings (with
// \uXXXX escapes), numbers, true/false/null. Enough for the few fields the runtime reads; not
// a general-purpose library (no writer, no streaming). Errors throw std::runtime_error.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace amanet::json {

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_object() const { return type == Type::Object; }
  bool has(const std::string& key) const { return is_object() && object.count(key) > 0; }
  // Member lookup; throws naming the key when it is missing.
  const Value& at(const std::string& key) const;
  // Typed reads; throw naming `what` when the value has another type.
  double as_number(const std::string& what) const;
  int64_t as_int(const std::string& what) const;
  const std::string& as_string(const std::string& what) const;
};

Value parse(const std::string& text);

}  // namespace amanet::json
