// ONNX Runtime backend (AMANET_WITH_ONNXRUNTIME=ON, ONNXRUNTIME_ROOT = an ONNX Runtime install
// with include/onnxruntime_cxx_api.h and lib/libonnxruntime.so). Runs an `amanet export --format
// onnx` graph; the metadata is the model's `amanet` metadata_props entry. Post-processing is the
// same as for TorchScript (libtorch + amanet::iuv_paste). NOT built or tested in this project's
// CI: the ONNX Runtime pip wheel ships no C/C++ headers.
#include <amanet/predictor.h>

#include "backend.h"

#ifdef AMANET_WITH_ONNXRUNTIME

#include <ATen/ATen.h>
#include <onnxruntime_cxx_api.h>

#include <array>
#include <cstring>

namespace amanet::detail {
namespace {

constexpr const char* kMetadataKey = "amanet";  // amanet/deploy/onnx.py METADATA_KEY

Ort::Env& ort_env() {
  static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "amanet");
  return env;
}

class OnnxRuntimeBackend final : public Backend {
 public:
  OnnxRuntimeBackend(const std::string& path, const c10::Device& device, int threads) {
    try {
      Ort::SessionOptions so;
      if (threads > 0) so.SetIntraOpNumThreads(threads);
      so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
      if (device.is_cuda()) {
        OrtCUDAProviderOptions cuda{};
        cuda.device_id = device.has_index() ? device.index() : 0;
        so.AppendExecutionProvider_CUDA(cuda);
      }
      session_ = std::make_unique<Ort::Session>(ort_env(), path.c_str(), so);
      Ort::AllocatorWithDefaultOptions alloc;
      Ort::ModelMetadata md = session_->GetModelMetadata();
      Ort::AllocatedStringPtr meta = md.LookupCustomMetadataMapAllocated(kMetadataKey, alloc);
      if (!meta)
        throw Error(path + " is an ONNX model but not an amanet export (no '" + std::string(kMetadataKey) +
                    "' metadata)");
      metadata_json = meta.get();
      if (session_->GetInputCount() != 1) throw Error(path + ": expected one graph input (the image)");
      input_name_ = session_->GetInputNameAllocated(0, alloc).get();
      for (size_t i = 0; i < session_->GetOutputCount(); ++i)
        output_names_.push_back(session_->GetOutputNameAllocated(i, alloc).get());
    } catch (const Ort::Exception& e) {
      throw Error("cannot load " + path + " with ONNX Runtime: " + e.what());
    }
  }

  std::vector<at::Tensor> run(const at::Tensor& image) override {
    at::Tensor x = image.to(at::kCPU, at::kFloat).contiguous();
    std::array<int64_t, 3> shape{x.size(0), x.size(1), x.size(2)};
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value input = Ort::Value::CreateTensor<float>(mem, x.data_ptr<float>(), static_cast<size_t>(x.numel()),
                                                       shape.data(), shape.size());
    std::vector<const char*> out_names;
    for (const auto& n : output_names_) out_names.push_back(n.c_str());
    const char* in_name = input_name_.c_str();
    std::vector<Ort::Value> outs;
    try {
      outs = session_->Run(Ort::RunOptions{nullptr}, &in_name, &input, 1, out_names.data(), out_names.size());
    } catch (const Ort::Exception& e) {
      throw Error(std::string("ONNX Runtime inference failed: ") + e.what());
    }
    std::vector<at::Tensor> tensors;
    for (auto& v : outs) {
      auto info = v.GetTensorTypeAndShapeInfo();
      std::vector<int64_t> dims = info.GetShape();
      switch (info.GetElementType()) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
          tensors.push_back(at::from_blob(const_cast<float*>(v.GetTensorData<float>()), dims, at::kFloat).clone());
          break;
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
          tensors.push_back(at::from_blob(const_cast<int64_t*>(v.GetTensorData<int64_t>()), dims, at::kLong).clone());
          break;
        default:
          throw Error("ONNX Runtime backend: unexpected output element type " +
                      std::to_string(static_cast<int>(info.GetElementType())));
      }
    }
    return tensors;
  }

  std::string name() const override { return "onnxruntime"; }

 private:
  std::unique_ptr<Ort::Session> session_;
  std::string input_name_;
  std::vector<std::string> output_names_;
};

}  // namespace

std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& path, const c10::Device& device,
                                                  int threads) {
  return std::make_unique<OnnxRuntimeBackend>(path, device, threads);
}

}  // namespace amanet::detail

#else  // !AMANET_WITH_ONNXRUNTIME

namespace amanet::detail {

std::unique_ptr<Backend> make_onnxruntime_backend(const std::string& path, const c10::Device&, int) {
  throw Error(path + ": this amanet_runtime was built without ONNX Runtime; reconfigure with "
              "-DAMANET_WITH_ONNXRUNTIME=ON -DONNXRUNTIME_ROOT=<onnxruntime install>, or use the "
              "TorchScript export (.ts)");
}

}  // namespace amanet::detail

#endif
