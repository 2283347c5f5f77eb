// TorchScript backend: torch::jit::load of an amanet export (the graph calls aten:: and
// amanet:: ops only; the latter are registered by libamanet_ops, which amanet_runtime links).
#include <amanet/predictor.h>

#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include "backend.h"

namespace amanet::detail {
namespace {

constexpr const char* kExtraFile = "amanet.json";

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

class TorchScriptBackend final : public Backend {
 public:
  TorchScriptBackend(const std::string& path, const c10::Device& device) {
    torch::jit::ExtraFilesMap extra{{kExtraFile, ""}};
    try {
      module_ = torch::jit::load(path, device, extra);
    } catch (const c10::Error& e) {
      throw Error("cannot load " + path + " as a TorchScript model (is it an amanet export?): " +
                  first_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error("cannot load " + path + " as a TorchScript model: " + first_line(e.what()));
    }
    metadata_json = extra[kExtraFile];
    if (metadata_json.empty())
      throw Error(path + " is a TorchScript file but not an amanet export (it has no " +
                  std::string(kExtraFile) + "); export it with `amanet export` / "
                  "amanet.deploy.export_torchscript");
    module_.eval();
  }

  std::vector<at::Tensor> run(const at::Tensor& image) override {
    c10::InferenceMode guard;
    c10::IValue out = module_.forward({image});
    if (!out.isTensorList() && !out.isList() && !out.isTuple())
      throw Error("the exported graph returned " + out.tagKind() + ", expected a list of tensors");
    std::vector<at::Tensor> tensors;
    if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) tensors.push_back(v.toTensor());
    } else {
      tensors = out.toTensorVector();
    }
    return tensors;
  }

  std::string name() const override { return "torchscript"; }

 private:
  torch::jit::Module module_;
};

}  // namespace

std::unique_ptr<Backend> make_torchscript_backend(const std::string& path, const c10::Device& device) {
  return std::make_unique<TorchScriptBackend>(path, device);
}

}  // namespace amanet::detail
