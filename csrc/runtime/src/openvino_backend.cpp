// OpenVINO backend: runs an `amanet export onnx` graph (.onnx) on the CPU with OpenVINO's
// runtime, fp32 or in the precision asked for (OpenVINO's inference-precision hint lowers the
// fp32 graph: bf16 on CPUs with AVX512-BF16 / AMX), or an int8 export in int8. The compiled model is cached next to the
// export (<model>.onnx.ovcache/), as in Python, so a second start skips compilation. The
// metadata is the model's `amanet` metadata_props entry (OpenVINO keeps it in the model's
// rt_info under "framework"). Post-processing is the same as for TorchScript (libtorch +
// amanet::iuv_paste). Built when CMake finds OpenVINO (the pip wheel ships its C++ SDK).
#include <amanet/predictor.h>

#include "backend.h"

#ifdef AMANET_WITH_OPENVINO

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <openvino/openvino.hpp>

#include <algorithm>
#include <filesystem>
#include <system_error>

namespace amanet::detail {
namespace {

constexpr const char* kMetadataKey = "amanet";  // amanet/deploy/onnx.py METADATA_KEY

// OpenVINO's name of a capability and its precision hint, per amanet precision name.
struct PrecisionHint {
  const char* name;
  const char* capability;  // in ov::device::capabilities, "" = always available
  ov::element::Type type;
};

// `exported`: the export's own precision (metadata). An int8 export (post-training quantized,
// amanet/deploy/quantize.py) carries its int8 layers in the graph and runs as it is (f32 hint
// for the float layers between them); an fp32 export runs fp32 or lowered to bf16 / fp16.
PrecisionHint precision_hint(const std::string& precision, const std::string& exported,
                             const std::string& path) {
  if (exported == "int8") {
    if (!precision.empty() && precision != "int8")
      throw Error(path + " is an int8 export: it runs in int8 (leave precision unset or int8), or "
                  "export fp32 for precision " + precision);
    return {"int8", "INT8", ov::element::f32};
  }
  if (precision.empty() || precision == "fp32") return {"fp32", "", ov::element::f32};
  if (precision == "bf16") return {"bf16", "BF16", ov::element::bf16};
  if (precision == "fp16") return {"fp16", "FP16", ov::element::f16};
  if (precision == "int8")
    throw Error("precision int8 needs an int8 export, and " + path + " is " + exported +
                ": amanet export onnx --precision int8 --calibration IMAGES writes one");
  throw Error("precision '" + precision + "' is not supported; choose fp32, bf16, fp16 or int8");
}

std::string export_precision(const std::string& metadata_json) {
  try {
    const auto meta = nlohmann::json::parse(metadata_json);
    return meta.contains("precision") ? meta.at("precision").get<std::string>() : "fp32";
  } catch (const std::exception&) {
    return "fp32";  // Predictor's metadata parser reports what is wrong with it
  }
}

class OpenVINOBackend final : public Backend {
 public:
  OpenVINOBackend(const std::string& path, const c10::Device& device, int threads,
                  const std::string& precision) {
    if (!device.is_cpu())
      throw Error(path + ": the OpenVINO backend runs on the CPU; for a GPU use the TorchScript export");
    try {
      ov::Core core;
      std::shared_ptr<ov::Model> model = core.read_model(path);
      if (!model->has_rt_info("framework", kMetadataKey))
        throw Error(path + " is an ONNX model but not an amanet export (no '" + std::string(kMetadataKey) +
                    "' metadata)");
      metadata_json = model->get_rt_info<std::string>("framework", kMetadataKey);
      if (model->inputs().size() != 1) throw Error(path + ": expected one graph input (the image)");
      const PrecisionHint hint = precision_hint(precision, export_precision(metadata_json), path);
      if (*hint.capability) {
        const auto caps = core.get_property("CPU", ov::device::capabilities);
        if (std::find(caps.begin(), caps.end(), hint.capability) == caps.end())
          throw Error(std::string("OpenVINO cannot run ") + hint.name + " on this CPU (no " +
                      hint.capability + " capability)");
      }
      const std::filesystem::path cache = path + ".ovcache";
      std::error_code ec;
      std::filesystem::create_directories(cache, ec);
      if (!ec) core.set_property(ov::cache_dir(cache.string()));  // unwritable: no cache, no error
      ov::AnyMap config{ov::hint::inference_precision(hint.type),
                        ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
      if (threads > 0) config.emplace(ov::inference_num_threads(threads));
      compiled_ = core.compile_model(model, "CPU", config);
      request_ = compiled_.create_infer_request();
      precision_ = hint.name;
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error("cannot load " + path + " with OpenVINO: " + e.what());
    }
  }

  std::vector<at::Tensor> run(const at::Tensor& image) override {
    at::Tensor x = image.to(at::kCPU, at::kFloat).contiguous();
    ov::Tensor input(ov::element::f32, ov::Shape{static_cast<size_t>(x.size(0)), static_cast<size_t>(x.size(1)),
                                                 static_cast<size_t>(x.size(2))},
                     x.data_ptr<float>());
    std::vector<at::Tensor> tensors;
    try {
      request_.set_input_tensor(input);
      request_.infer();
      for (size_t i = 0; i < compiled_.outputs().size(); ++i) {
        const ov::Tensor out = request_.get_output_tensor(i);
        const ov::Shape shape = out.get_shape();
        const std::vector<int64_t> dims(shape.begin(), shape.end());
        const ov::element::Type type = out.get_element_type();
        if (type == ov::element::f32) {
          tensors.push_back(at::from_blob(const_cast<float*>(out.data<const float>()), dims, at::kFloat).clone());
        } else if (type == ov::element::i64) {
          tensors.push_back(at::from_blob(const_cast<int64_t*>(out.data<const int64_t>()), dims, at::kLong).clone());
        } else if (type == ov::element::i32) {  // OpenVINO may narrow int64 indices
          tensors.push_back(at::from_blob(const_cast<int32_t*>(out.data<const int32_t>()), dims, at::kInt)
                                .to(at::kLong));
        } else {
          throw Error("OpenVINO backend: unexpected output element type " + type.get_type_name());
        }
      }
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(std::string("OpenVINO inference failed: ") + e.what());
    }
    return tensors;
  }

  std::string name() const override { return "openvino"; }
  std::string precision() const override { return precision_; }

 private:
  ov::CompiledModel compiled_;
  ov::InferRequest request_;
  std::string precision_;
};

}  // namespace

std::unique_ptr<Backend> make_openvino_backend(const std::string& path, const c10::Device& device, int threads,
                                               const std::string& precision) {
  return std::make_unique<OpenVINOBackend>(path, device, threads, precision);
}

}  // namespace amanet::detail

#else  // !AMANET_WITH_OPENVINO

namespace amanet::detail {

std::unique_ptr<Backend> make_openvino_backend(const std::string& path, const c10::Device&, int,
                                               const std::string&) {
  throw Error(path + ": this amanet_runtime was built without OpenVINO (CMake did not find it: "
              "pip install openvino, or -DOpenVINO_DIR=<openvino>/cmake); use the TorchScript "
              "export (.ts)");
}

}  // namespace amanet::detail

#endif
