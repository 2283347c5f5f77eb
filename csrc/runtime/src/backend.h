#pragma once
// Internal: the runtimes that execute an exported graph. Each one takes the resized image
// [3, H, W] float32 (0..255, the graph's channel order) and returns the graph outputs named in
// the export metadata (boxes in the resized image's coordinates), as CPU or device tensors.
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

namespace amanet::detail {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::vector<at::Tensor> run(const at::Tensor& image) = 0;
  virtual std::string name() const = 0;
  // The precision the graph runs in: "" = the export's own (TorchScript), else what the
  // backend was asked for ("fp32", "bf16", "fp16").
  virtual std::string precision() const { return ""; }
  // The export's metadata text (amanet.json), read when the model loads.
  std::string metadata_json;
};

// TorchScript (.ts / .pt / .jit ...): torch::jit::load; the `amanet::` ops come from amanet_ops.
std::unique_ptr<Backend> make_torchscript_backend(const std::string& path, const c10::Device& device);

// OpenVINO (.onnx) on the CPU, in `precision` ("" / "fp32", "bf16", "fp16"): only when built
// with AMANET_WITH_OPENVINO (else throws amanet::Error).
std::unique_ptr<Backend> make_openvino_backend(const std::string& path, const c10::Device& device, int threads,
                                               const std::string& precision);

}  // namespace amanet::detail
