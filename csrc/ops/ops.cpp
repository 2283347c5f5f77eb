// The amanet op library: every schema is defined here once, in the `amanet` namespace.
// Device kernels register with TORCH_LIBRARY_IMPL in cpu/*.cpp and cuda/*.cu; autograd
// wrappers register for the Autograd key. The library is loaded from Python as `amanet._C`
// and linked into C++ apps as `amanet_ops`.
#include <torch/library.h>

#include "build_info.h"

TORCH_LIBRARY(amanet, m) {
  // Which kernels this build contains: "cpu" or "cpu+cuda(<archs>)".
  m.def("build_info() -> str", &amanet::build_info);
  // Gated paths G = gates * features, summed over consecutive groups of `group_size` paths
  // ([N, P / group_size, C, H, W]; group_size 1 = G itself, 2 = the AMA predictor's G1+G2,
  // G3+G4; 0 = none: an empty [0] tensor, all inference needs), and their sum S over P.
  m.def("adaptive_aggregation(Tensor features, Tensor gates, int group_size=1) -> (Tensor groups, Tensor summed)");
  // (dfeatures, dgates) from the optional gradients of the group sums and of S, in one pass
  // over features.
  m.def("adaptive_aggregation_backward(Tensor? grad_groups, Tensor? grad_summed, Tensor features, Tensor gates, int group_size) -> (Tensor grad_features, Tensor grad_gates)");
  // Sum of smooth-L1(U/V bilinearly read at K annotated points - targets) (DensePose UV loss);
  // mode 0 = AMANet point rule, 1 = Detectron2 s1x (drops points outside the grid); beta 0 = L1.
  m.def("uv_interp_loss(Tensor u, Tensor v, Tensor roi_index, Tensor x, Tensor y, Tensor part, Tensor target_u, Tensor target_v, int mode=0, float beta=1.0) -> Tensor");
  // (du, dv) of uv_interp_loss for the scalar upstream gradient `grad`; an output whose
  // output_mask entry is False is undefined (None) and costs nothing.
  m.def("uv_interp_loss_backward(Tensor grad, Tensor u, Tensor v, Tensor roi_index, Tensor x, Tensor y, Tensor part, Tensor target_u, Tensor target_v, int mode, float beta, bool[2] output_mask=[True, True]) -> (Tensor grad_u, Tensor grad_v)");
  // DensePose chart post-processing in one op (inference only; layout in iuv_paste.h): per-box
  // uint8 IUV charts packed in `charts` (chart i = [3, h_i, w_i] block at 3 * offsets[i]) and,
  // when whole_image, the [3, H, W] whole-image IUV (else an empty [0] tensor).
  // mode 0: s1x gate argmax(gate) > 0; mode 1: AMANet gate softmax(gate)[1] > threshold.
  m.def("iuv_paste(Tensor fine, Tensor gate, Tensor u, Tensor v, Tensor boxes, Tensor scores, int mode, float threshold, int image_height, int image_width, bool whole_image=True) -> (Tensor charts, Tensor offsets, Tensor image)");
  // ROIAlign (average), torchvision.ops.roi_align semantics and numerics (layout in roi_align.h):
  // input [N, C, H, W], rois [K, 5] (batch_index, x1, y1, x2, y2) -> [K, C, ph, pw].
  m.def("roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, int sampling_ratio, bool aligned) -> Tensor");
  // d input [batch_size, channels, height, width] from d output [K, C, ph, pw].
  m.def("roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, int batch_size, int channels, int height, int width, int sampling_ratio, bool aligned) -> Tensor");
  // Greedy NMS, torchvision.ops.nms semantics: int64 indices of the kept boxes by decreasing score.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
}
