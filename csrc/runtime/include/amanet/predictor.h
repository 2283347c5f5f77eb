#pragma once
// amanet C++ runtime: DensePose (AMANet / Detectron2 R_50_FPN_s1x) on images, from a model
// exported by `amanet export` / amanet.deploy.export_torchscript (a TorchScript file carrying
// the extra file `amanet.json`), or its ONNX export (.onnx, run by OpenVINO on the CPU). One
// class, plain result structs, exceptions on errors.
//
//   #include <amanet/predictor.h>
//   amanet::Predictor predictor("model.ts");                  // or {"model.ts", options}
//   amanet::Prediction p = predictor.predict(cv::imread("photo.jpg"));
//   for (const amanet::Person& person : p.people)
//     ... person.box.x1, person.score, person.iuv (CV_8UC3 I,U,V) at person.chart_box ...
//   p.iuv;                                                    // whole-image CV_8UC3 I,U,V
//
// It does what the Python `amanet.runtime.Predictor` does with a TorchScript export: resize
// the shortest edge (Detectron2's rule), run the exported graph, scale the boxes back to the
// original image, clip, drop empty boxes, and paste the IUV charts with the `amanet::iuv_paste`
// op (the same kernel as Python). Link `amanet::runtime` (CMake: find_package(amanet)).
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace amanet {

// Every error of this API: missing or unreadable model, not an amanet export, empty or
// unsupported image, unknown device, ... The message says what and where.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PredictorOptions {
  // "cpu", "cuda" or "cuda:N" (needs a CUDA build of libtorch and amanet_ops with CUDA kernels).
  std::string device = "cpu";
  // Intra-op threads of libtorch (at::set_num_threads: process-wide) and of OpenVINO. 0 = the
  // libraries' defaults.
  int threads = 0;
  // Compute precision. "" = the export's own (a TorchScript export runs what it was exported
  // in: fp32, or bf16 / fp16 from `amanet export torchscript --precision`), fp32 for .onnx.
  // An fp32 .onnx export runs on OpenVINO in "fp32", "bf16" (CPUs with AVX512-BF16 / AMX) or
  // "fp16"; an int8 .onnx export (`amanet export onnx --precision int8`) in "int8" only; any
  // export asked for a precision it cannot run is an Error.
  std::string precision;
  // Post-filter on the exported model's detections: keep score >= score_threshold. The export
  // already dropped everything below its own MODEL.ROI_HEADS.SCORE_THRESH_TEST (0.05 by
  // default): a threshold lower than the export's cannot bring those detections back.
  float score_threshold = 0.0f;
  // Shortest-edge resize target and longest-edge cap; 0 = the export's INPUT.MIN_SIZE_TEST /
  // INPUT.MAX_SIZE_TEST (from amanet.json).
  int min_size = 0;
  int max_size = 0;
  // Also composite the whole-image IUV map (Prediction::iuv); the per-person charts are always
  // returned.
  bool whole_image_iuv = true;
  // Process-wide, decided by the first Predictor: have the C library keep freed memory for reuse
  // (glibc; elsewhere nothing changes) so that large tensors do not start on fresh pages the
  // kernel must fault in and zero again (the Python runtime's policy, README "Performance").
  // The process then keeps its peak heap size. The environment variable AMANET_MALLOC=system
  // overrides true; any value other than "retain" or "system" is an Error.
  bool retain_freed_memory = true;
};

// The memory policy in effect: "retained", "system" (turned off), "unsupported" (not glibc) or
// "default" (no Predictor has decided yet).
std::string memory_policy();

struct Box {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;  // XYXY, original-image pixels
};

struct Person {
  Box box;
  float score = 0;
  int64_t class_id = 0;  // 0 = person (the models have one class)
  // IUV chart of this person: CV_8UC3, chart_box.height x chart_box.width, channel 0 = I (part
  // 0..24, 0 = background), 1 = U (0..255), 2 = V (0..255). NOT BGR: convert before display.
  cv::Mat iuv;
  // Where the chart sits in the original image: Detectron2's integer box (x, y truncated,
  // w, h = max(trunc(x2 - x1), 1), ...). May reach one pixel past the image border.
  cv::Rect chart_box;
};

struct Timing {
  double preprocess_ms = 0;   // type conversion + resize + upload
  double inference_ms = 0;    // the exported graph
  double postprocess_ms = 0;  // box mapping + amanet::iuv_paste + copies into cv::Mat
};

struct Prediction {
  int height = 0, width = 0;   // original image size
  std::vector<Person> people;  // ordered as the model returns them (by decreasing score)
  // Whole-image IUV, CV_8UC3 height x width (I, U, V; where people overlap the higher score
  // wins); empty when PredictorOptions::whole_image_iuv is false.
  cv::Mat iuv;
  Timing timing;
};

// What the export's amanet.json says (read once when the model loads).
struct ModelInfo {
  std::string path;
  std::string backend;             // "torchscript", or "openvino" (.onnx, when built with it)
  std::string precision;           // what the graph computes in: "fp32", "bf16", "fp16", "int8"
  std::string family;              // "amanet" or "s1x"
  std::string channels;            // "BGR" or "RGB": what the graph expects
  int min_size = 0, max_size = 0;  // in effect (options override the export's)
  int export_min_size = 0, export_max_size = 0;
  int size_divisibility = 0;
  int heatmap_size = 0;
  int gate_mode = 0;               // 0: s1x coarse argmax, 1: AMANet softmax(mask)[1] > threshold
  double gate_threshold = 0;
  int max_detections = 0;          // > 0: fixed-size (padded) export
};

// Not safe to call from several threads at once: use one Predictor per thread (they can share
// nothing but the process-wide thread setting), or serialize the calls.
class Predictor {
 public:
  // Loads the export (throws amanet::Error: missing file, not an amanet export, bad device).
  explicit Predictor(const std::string& model_path, PredictorOptions options = {});
  ~Predictor();
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  // One image: CV_8U or CV_16U with 1 (gray), 3 (BGR) or 4 (BGRA: alpha dropped) channels, like
  // the Python Predictor's array input (16-bit is scaled to 8 bits with rounding). Anything else
  // (empty, float, 2 channels) throws amanet::Error.
  Prediction predict(const cv::Mat& image);
  // Several images, one after the other (the exported graph takes one image per call).
  std::vector<Prediction> predict(const std::vector<cv::Mat>& images);
  // An image the caller already resized to the model input (e.g. with PIL, for bit-exact parity
  // with Python); results are mapped to an original image of `original_size`.
  Prediction predict_resized(const cv::Mat& resized, cv::Size original_size);

  // The model input size for an image of `image_size` (Detectron2's ResizeShortestEdge rule).
  cv::Size input_size(cv::Size image_size) const;
  const ModelInfo& info() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads an image file as OpenCV does (EXIF orientation applied) and converts it to 8-bit BGR
// like the Python side (gray replicated, alpha composited over black, 16-bit scaled). Throws
// amanet::Error for a missing, empty or undecodable file.
cv::Mat read_image(const std::string& path);

// Any supported cv::Mat (see Predictor::predict) -> CV_8UC3 BGR; throws amanet::Error otherwise.
cv::Mat to_bgr8(const cv::Mat& image);

// Detectron2's ResizeShortestEdge output size: (new_w, new_h), rounded with int(x + 0.5).
cv::Size resized_size(cv::Size image_size, int short_edge, int max_size);

// Bilinear, antialiased resize of a CV_8UC3 image with libtorch (interpolate on uint8 with
// antialias=true, align_corners=false). Detectron2 resizes with PIL; this matches PIL within one
// gray level on under 0.5% of the pixel values (measured on the bundled photo).
cv::Mat resize_bilinear_antialias(const cv::Mat& bgr8, cv::Size size);

// Which kernels the linked amanet_ops library holds: "cpu" or "cpu+cuda13.0(sm_75,...)".
std::string ops_build_info();

}  // namespace amanet
