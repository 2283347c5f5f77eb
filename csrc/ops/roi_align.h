#pragma once
// Host-side contract of amanet::roi_align / amanet::roi_align_backward: the input checks every
// device kernel runs first (the per-sample math is in common/roi_align.h).
//
// Schemas (ops.cpp):
//   roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height,
//             int pooled_width, int sampling_ratio, bool aligned) -> Tensor
//     input [N, C, H, W]; rois [K, 5] (batch_index, x1, y1, x2, y2), same floating dtype and
//     device as input; returns [K, C, pooled_height, pooled_width] (zeros when K == 0).
//   roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height,
//                      int pooled_width, int batch_size, int channels, int height, int width,
//                      int sampling_ratio, bool aligned) -> Tensor
//     grad [K, C, pooled_height, pooled_width]; returns d input [batch_size, channels, height,
//     width].
// dtypes: float and double (bit-identical to torchvision's CPU kernel), half and bfloat16
// (computed and accumulated in float).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace amanet {

// rois[:, 0] must truncate to an image index of the input (torchvision does not check: it reads
// out of bounds). Checked with tensor ops on the rois' own device, so that the CPU and CUDA
// kernels raise the same error: on CUDA it costs one device-to-host copy of a flag, where a
// device-side assert would poison the CUDA context for the rest of the process.
inline void check_batch_indices(const char* op, const at::Tensor& rois, int64_t batch_size) {
  if (rois.size(0) == 0) return;
  const at::Tensor b = rois.select(1, 0);
  const at::Tensor bad = b.gt(-1).logical_and(b.lt(static_cast<double>(batch_size))).logical_not();
  if (!bad.any().item<bool>()) return;
  const int64_t k = bad.nonzero().select(1, 0)[0].item<int64_t>();
  TORCH_CHECK(false, op, ": rois[", k, ", 0] = ", b[k].item<double>(),
              " is not a batch index of the input (batch size ", batch_size, ")");
}

inline bool is_reduced_float(at::ScalarType st) {
  return st == at::kHalf || st == at::kBFloat16;
}

// rois are read in the kernels' compute type (float32 for float16 / bfloat16 features), so
// reduced-precision features may come with float32 rois (what autocast passes: box coordinates
// of large images do not fit 16 bits); otherwise rois have the features' dtype.
inline void check_rois_dtype(const char* op, const at::Tensor& rois, at::ScalarType st) {
  TORCH_CHECK(rois.scalar_type() == st || (is_reduced_float(st) && rois.scalar_type() == at::kFloat),
              op, ": rois dtype ", rois.scalar_type(), " must match the input dtype ", st,
              " (or be float32 for float16 / bfloat16 input)");
}

// rois as the kernels read them: contiguous, in the compute type of `st`.
inline at::Tensor rois_for_kernel(const at::Tensor& rois, at::ScalarType st) {
  return rois.to(is_reduced_float(st) ? at::kFloat : st).contiguous();
}

inline void check_roi_align_common(const char* op, const at::Tensor& rois, int64_t pooled_height,
                                   int64_t pooled_width) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op,
              ": rois must be a [K, 5] tensor of (batch_index, x1, y1, x2, y2) rows, got shape ",
              rois.sizes());
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op,
              ": the output size must be positive, got pooled_height=", pooled_height,
              ", pooled_width=", pooled_width);
  TORCH_CHECK(at::isFloatingType(rois.scalar_type()), op, ": rois must be a floating tensor, got ",
              rois.scalar_type());
}

inline void check_roi_align_inputs(const at::Tensor& input, const at::Tensor& rois,
                                   int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK(input.dim() == 4, "roi_align: input must be a [N, C, H, W] tensor, got shape ",
              input.sizes());
  check_roi_align_common("roi_align", rois, pooled_height, pooled_width);
  const auto st = input.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "roi_align: input must be float32, float64, float16 or bfloat16, got ", st);
  check_rois_dtype("roi_align", rois, st);
  TORCH_CHECK(rois.device() == input.device(), "roi_align: rois are on ", rois.device(),
              " but input is on ", input.device());
}

inline void check_roi_align_backward_inputs(const at::Tensor& grad, const at::Tensor& rois,
                                            int64_t pooled_height, int64_t pooled_width,
                                            int64_t batch_size, int64_t channels, int64_t height,
                                            int64_t width) {
  check_roi_align_common("roi_align_backward", rois, pooled_height, pooled_width);
  TORCH_CHECK(batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0,
              "roi_align_backward: the input size must be non-negative, got [", batch_size, ", ",
              channels, ", ", height, ", ", width, "]");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == rois.size(0) && grad.size(1) == channels &&
                  grad.size(2) == pooled_height && grad.size(3) == pooled_width,
              "roi_align_backward: grad must be [K, C, pooled_height, pooled_width] = [",
              rois.size(0), ", ", channels, ", ", pooled_height, ", ", pooled_width, "], got ",
              grad.sizes());
  const auto st = grad.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "roi_align_backward: grad must be float32, float64, float16 or bfloat16, got ", st);
  check_rois_dtype("roi_align_backward", rois, st);
  TORCH_CHECK(rois.device() == grad.device(), "roi_align_backward: rois are on ", rois.device(),
              " but grad is on ", grad.device());
}

}  // namespace amanet
