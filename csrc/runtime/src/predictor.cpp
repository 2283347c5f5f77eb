// amanet::Predictor: the C++ twin of amanet/runtime/predictor.py for exported models.
#include <amanet/predictor.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <tuple>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <nlohmann/json.hpp>

#include "backend.h"
#include "build_info.h"  // csrc/ops: amanet::build_info() (also ties us to libamanet_ops)

namespace amanet {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

constexpr int kExportFormat = 1;  // amanet/deploy/metadata.py FORMAT_VERSION

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

void check_model_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) throw Error("model path is empty");
  if (!fs::exists(path, ec)) throw Error("model file not found: " + path);
  if (fs::is_directory(path, ec)) throw Error("expected a model file, got a directory: " + path);
  if (fs::file_size(path, ec) == 0) throw Error("model file is empty: " + path);
}

c10::Device parse_device(const std::string& name) {
  try {
    return c10::Device(name);
  } catch (const c10::Error&) {
    throw Error("unknown device '" + name + "': use \"cpu\", \"cuda\" or \"cuda:N\"");
  }
}

// Typed reads of amanet.json's fields (nlohmann-json): each names the field it could not read.
using Json = nlohmann::json;

const Json& field(const Json& obj, const std::string& key, const std::string& where = "") {
  if (!obj.is_object()) throw Error("expected an object holding '" + where + key + "'");
  const auto it = obj.find(key);
  if (it == obj.end()) throw Error("missing field '" + where + key + "'");
  return *it;
}

double as_number(const Json& v, const std::string& what) {
  if (!v.is_number()) throw Error("field '" + what + "' is not a number");
  return v.get<double>();
}

int64_t as_int(const Json& v, const std::string& what) {
  if (v.is_number_integer()) return v.get<int64_t>();
  const double d = as_number(v, what);  // 800.0 is an integer too
  if (d != std::floor(d)) throw Error("field '" + what + "' is not an integer");
  return static_cast<int64_t>(d);
}

std::string as_string(const Json& v, const std::string& what) {
  if (!v.is_string()) throw Error("field '" + what + "' is not a string");
  return v.get<std::string>();
}

// Reads amanet.json into ModelInfo; returns the list of output names.
std::vector<std::string> parse_metadata(const std::string& text, const std::string& path, ModelInfo& info) {
  try {
    const Json meta = Json::parse(text);
    const int64_t version = as_int(field(meta, "amanet_export_format"), "amanet_export_format");
    if (version != kExportFormat)
      throw Error("unsupported amanet export format " + std::to_string(version) + " (this runtime reads " +
                  std::to_string(kExportFormat) + "); re-export the model with this amanet version");
    info.family = as_string(field(meta, "family"), "family");
    const Json& input = field(meta, "input");
    info.channels = input.contains("channels") ? as_string(input["channels"], "input.channels") : "BGR";
    info.export_min_size = static_cast<int>(as_int(field(input, "min_size_test", "input."), "input.min_size_test"));
    info.export_max_size = static_cast<int>(as_int(field(input, "max_size_test", "input."), "input.max_size_test"));
    info.size_divisibility =
        static_cast<int>(as_int(field(input, "size_divisibility", "input."), "input.size_divisibility"));
    info.heatmap_size = static_cast<int>(as_int(field(meta, "heatmap_size"), "heatmap_size"));
    info.gate_mode = static_cast<int>(as_int(field(meta, "gate_mode"), "gate_mode"));
    info.gate_threshold = as_number(field(meta, "gate_threshold"), "gate_threshold");
    info.precision = meta.contains("precision") ? as_string(meta["precision"], "precision") : "fp32";
    info.max_detections =
        meta.contains("max_detections") ? static_cast<int>(as_int(meta["max_detections"], "max_detections")) : 0;
    std::vector<std::string> outputs;
    const Json& outs = field(meta, "outputs");
    if (!outs.is_array()) throw Error("field 'outputs' is not a list");
    for (const auto& o : outs) outputs.push_back(as_string(o, "outputs[]"));
    return outputs;
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  } catch (const std::exception& e) {  // nlohmann::json::exception: not JSON at all
    throw Error(path + ": bad amanet.json metadata: " + e.what());
  }
}

using IuvPasteFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, int64_t, double, int64_t, int64_t, bool);

const c10::TypedOperatorHandle<IuvPasteFn>& iuv_paste_op() {
  static const c10::TypedOperatorHandle<IuvPasteFn> op = [] {
    try {
      return c10::Dispatcher::singleton().findSchemaOrThrow("amanet::iuv_paste", "").typed<IuvPasteFn>();
    } catch (const c10::Error& e) {
      throw Error(std::string("the amanet::iuv_paste op is not registered (libamanet_ops not loaded?): ") +
                  e.what_without_backtrace());
    }
  }();
  return op;
}

// [3, h, w] uint8 CPU tensor -> CV_8UC3 (channels I, U, V) that owns its pixels.
cv::Mat chw_to_mat(const at::Tensor& chw) {
  const int h = static_cast<int>(chw.size(1)), w = static_cast<int>(chw.size(2));
  at::Tensor hwc = chw.permute({1, 2, 0}).contiguous();
  cv::Mat m(h, w, CV_8UC3);
  if (hwc.numel() > 0) std::memcpy(m.data, hwc.data_ptr<uint8_t>(), static_cast<size_t>(hwc.numel()));
  return m;
}

}  // namespace

std::string ops_build_info() { return amanet::build_info(); }

struct Predictor::Impl {
  PredictorOptions options;
  ModelInfo info;
  c10::Device device{c10::kCPU};
  std::unique_ptr<detail::Backend> backend;
  std::vector<std::string> outputs;
  std::map<std::string, size_t> index;

  size_t output(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) throw Error(info.path + ": the export has no '" + name + "' output");
    return it->second;
  }

  Prediction run(const cv::Mat& resized_bgr, cv::Size original, Clock::time_point t0) {
    if (resized_bgr.type() != CV_8UC3 || resized_bgr.empty())
      throw Error("internal: the resized image must be a non-empty CV_8UC3 image");
    const int64_t h1 = resized_bgr.rows, w1 = resized_bgr.cols;
    const int64_t h0 = original.height, w0 = original.width;
    if (h0 <= 0 || w0 <= 0) throw Error("the original image size must be positive");

    c10::InferenceMode guard;
    // As amanet/runtime/predictor.py: uint8 HWC -> contiguous CHW (channel order of the graph)
    // -> float32 on the device.
    cv::Mat src = resized_bgr.isContinuous() ? resized_bgr : resized_bgr.clone();
    at::Tensor x = at::from_blob(src.data, {h1, w1, 3}, at::kByte);
    if (info.channels == "RGB") x = x.flip({2});
    x = x.permute({2, 0, 1}).contiguous().to(device, at::kFloat);

    Prediction pred;
    pred.height = static_cast<int>(h0);
    pred.width = static_cast<int>(w0);
    pred.timing.preprocess_ms = ms_since(t0);

    auto t1 = Clock::now();
    std::vector<at::Tensor> out = backend->run(x);
    if (out.size() != outputs.size())
      throw Error(info.path + ": the graph returned " + std::to_string(out.size()) + " outputs, its metadata names " +
                  std::to_string(outputs.size()));
    if (device.is_cuda()) {  // kernels are asynchronous: wait for them before reading the clock
      const auto* guard_impl = c10::impl::getDeviceGuardImpl(device.type());
      guard_impl->synchronizeDevice(device.has_index() ? device.index() : guard_impl->getDevice().index());
    }
    pred.timing.inference_ms = ms_since(t1);

    auto t2 = Clock::now();
    at::Tensor boxes = out[output("boxes")], scores = out[output("scores")], classes = out[output("classes")];
    at::Tensor gate = out[output("gate")], fine = out[output("fine_segm")];
    at::Tensor u = out[output("u")], v = out[output("v")];
    if (index.count("num_detections")) {  // fixed-size export: keep the real rows
      const int64_t n = out[output("num_detections")].reshape({-1})[0].item<int64_t>();
      boxes = boxes.narrow(0, 0, n);
      scores = scores.narrow(0, 0, n);
      classes = classes.narrow(0, 0, n);
      gate = gate.narrow(0, 0, n);
      fine = fine.narrow(0, 0, n);
      u = u.narrow(0, 0, n);
      v = v.narrow(0, 0, n);
    }
    // The Python Predictor's _postprocess, op for op (same kernels, same numbers).
    boxes = boxes.clone();
    using at::indexing::None;
    using at::indexing::Slice;
    boxes.index({Slice(), Slice(0, None, 2)}).mul_(static_cast<double>(w0) / static_cast<double>(w1));
    boxes.index({Slice(), Slice(1, None, 2)}).mul_(static_cast<double>(h0) / static_cast<double>(h1));
    const at::Scalar zero(int64_t{0}), width(w0), height(h0);
    boxes = at::stack({boxes.select(1, 0).clamp(zero, width), boxes.select(1, 1).clamp(zero, height),
                       boxes.select(1, 2).clamp(zero, width), boxes.select(1, 3).clamp(zero, height)},
                      -1);
    at::Tensor keep = ((boxes.select(1, 2) - boxes.select(1, 0)) > 0) &
                      ((boxes.select(1, 3) - boxes.select(1, 1)) > 0);
    if (options.score_threshold > 0) keep = keep & (scores >= options.score_threshold);
    boxes = boxes.index({keep});
    scores = scores.index({keep});
    classes = classes.index({keep});
    gate = gate.index({keep});
    fine = fine.index({keep});
    u = u.index({keep});
    v = v.index({keep});
    // Detectron2's make_int_box: XYWH truncated, w, h >= 1.
    at::Tensor xywh = at::stack({boxes.select(1, 0), boxes.select(1, 1), boxes.select(1, 2) - boxes.select(1, 0),
                                 boxes.select(1, 3) - boxes.select(1, 1)},
                                -1)
                          .to(at::kLong);
    xywh.index({Slice(), Slice(2, None)}).clamp_min_(1);

    auto [charts, offsets, image] =
        iuv_paste_op().call(fine, gate, u, v, xywh, scores, info.gate_mode, info.gate_threshold, h0, w0,
                            options.whole_image_iuv);

    const at::Tensor boxes_c = boxes.to(at::kCPU, at::kFloat).contiguous();
    const at::Tensor scores_c = scores.to(at::kCPU, at::kFloat).contiguous();
    const at::Tensor classes_c = classes.to(at::kCPU, at::kLong).contiguous();
    const at::Tensor xywh_c = xywh.to(at::kCPU).contiguous();
    const at::Tensor charts_c = charts.to(at::kCPU).contiguous();
    const at::Tensor offsets_c = offsets.to(at::kCPU, at::kLong).contiguous();
    const int64_t n = boxes_c.size(0);
    const float* b = boxes_c.data_ptr<float>();
    const int64_t* bi = xywh_c.data_ptr<int64_t>();
    const int64_t* off = offsets_c.data_ptr<int64_t>();
    pred.people.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      Person& p = pred.people[static_cast<size_t>(i)];
      p.box = Box{b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]};
      p.score = scores_c[i].item<float>();
      p.class_id = classes_c[i].item<int64_t>();
      p.chart_box = cv::Rect(static_cast<int>(bi[4 * i]), static_cast<int>(bi[4 * i + 1]),
                             static_cast<int>(bi[4 * i + 2]), static_cast<int>(bi[4 * i + 3]));
      at::Tensor chart = charts_c.narrow(0, 3 * off[i], 3 * (off[i + 1] - off[i]))
                             .view({3, p.chart_box.height, p.chart_box.width});
      p.iuv = chw_to_mat(chart);
    }
    if (options.whole_image_iuv) pred.iuv = chw_to_mat(image.to(at::kCPU));
    pred.timing.postprocess_ms = ms_since(t2);
    return pred;
  }
};

namespace {

std::mutex memory_policy_mutex;
std::string memory_policy_state = "default";

// The Python runtime's amanet.runtime.memory.retain_freed_memory, decided once per process.
void apply_memory_policy(bool wanted) {
  std::lock_guard<std::mutex> lock(memory_policy_mutex);
  if (memory_policy_state != "default") return;
  const char* env = std::getenv("AMANET_MALLOC");
  const std::string choice = env != nullptr ? lower(env) : "retain";
  if (choice != "retain" && choice != "system")
    throw Error("AMANET_MALLOC must be 'retain' (default) or 'system', got '" + choice + "'");
  if (!wanted || choice == "system") {
    memory_policy_state = "system";
    return;
  }
#if defined(__GLIBC__)
  // mmap off first: no large block allocated meanwhile can bypass the heap.
  const bool ok = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
  memory_policy_state = ok ? "retained" : "unsupported";
#else
  memory_policy_state = "unsupported";
#endif
}

}  // namespace

std::string memory_policy() {
  std::lock_guard<std::mutex> lock(memory_policy_mutex);
  return memory_policy_state;
}

Predictor::Predictor(const std::string& model_path, PredictorOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.options = options;
  m.info.path = model_path;
  if (options.threads < 0) throw Error("PredictorOptions::threads must be >= 0 (0 = libtorch default)");
  if (options.min_size < 0 || options.max_size < 0)
    throw Error("PredictorOptions::min_size/max_size must be >= 0 (0 = from the export)");
  check_model_file(model_path);
  apply_memory_policy(options.retain_freed_memory);
  m.device = parse_device(options.device);
  if (!m.device.is_cpu() && !m.device.is_cuda())
    throw Error("unsupported device '" + options.device + "': use \"cpu\" or \"cuda[:N]\"");
  if (m.device.is_cuda()) {
    if (!at::hasCUDA())
      throw Error("device '" + options.device + "' requested but CUDA is not available (no GPU, or a "
                  "CPU-only libtorch)");
    if (ops_build_info().find("cuda") == std::string::npos)
      throw Error("device '" + options.device + "' requested but libamanet_ops was built without CUDA "
                  "kernels (" + ops_build_info() + "); rebuild with -DAMANET_WITH_CUDA=ON");
  }
  if (options.threads > 0) at::set_num_threads(options.threads);

  std::string ext = lower(std::filesystem::path(model_path).extension().string());
  m.backend = ext == ".onnx"
                  ? detail::make_openvino_backend(model_path, m.device, options.threads, options.precision)
                  : detail::make_torchscript_backend(model_path, m.device);
  m.info.backend = m.backend->name();
  m.outputs = parse_metadata(m.backend->metadata_json, model_path, m.info);
  if (!m.backend->precision().empty()) {
    m.info.precision = m.backend->precision();  // OpenVINO: what it was asked to run
  } else if (!options.precision.empty() && options.precision != m.info.precision) {
    throw Error(model_path + " computes in " + m.info.precision + " (its export precision); precision '" +
                options.precision + "' needs a re-export (amanet export torchscript --precision " +
                options.precision + ") or the .onnx export with OpenVINO");
  }
  for (size_t i = 0; i < m.outputs.size(); ++i) m.index[m.outputs[i]] = i;
  for (const char* name : {"boxes", "scores", "classes", "gate", "fine_segm", "u", "v"}) m.output(name);
  if (m.info.gate_mode != 0 && m.info.gate_mode != 1)
    throw Error(model_path + ": unknown gate_mode " + std::to_string(m.info.gate_mode));
  if (m.info.channels != "BGR" && m.info.channels != "RGB")
    throw Error(model_path + ": unknown input channel order '" + m.info.channels + "'");
  m.info.min_size = options.min_size > 0 ? options.min_size : m.info.export_min_size;
  m.info.max_size = options.max_size > 0 ? options.max_size : m.info.export_max_size;
  iuv_paste_op();  // fail now, not on the first image, if the op is missing
}

Predictor::~Predictor() = default;
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;

const ModelInfo& Predictor::info() const { return impl_->info; }

cv::Size Predictor::input_size(cv::Size image_size) const {
  return resized_size(image_size, impl_->info.min_size, impl_->info.max_size);
}

Prediction Predictor::predict(const cv::Mat& image) {
  auto t0 = Clock::now();
  cv::Mat bgr = to_bgr8(image);
  cv::Size in = input_size(bgr.size());
  cv::Mat resized = in == bgr.size() ? bgr : resize_bilinear_antialias(bgr, in);
  return impl_->run(resized, bgr.size(), t0);
}

std::vector<Prediction> Predictor::predict(const std::vector<cv::Mat>& images) {
  std::vector<Prediction> out;
  out.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    try {
      out.push_back(predict(images[i]));
    } catch (const Error& e) {
      throw Error("image " + std::to_string(i) + ": " + e.what());
    }
  }
  return out;
}

Prediction Predictor::predict_resized(const cv::Mat& resized, cv::Size original_size) {
  auto t0 = Clock::now();
  if (original_size.width <= 0 || original_size.height <= 0)
    throw Error("predict_resized: original_size must be positive, got " + std::to_string(original_size.width) + "x" +
                std::to_string(original_size.height));
  return impl_->run(to_bgr8(resized), original_size, t0);
}

}  // namespace amanet
