#pragma once
// Host-side contract of amanet::nms: the input checks every device kernel runs first (the
// overlap test is in common/nms.h).
//
// Schema (ops.cpp):
//   nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor
//     boxes [N, 4] (x1, y1, x2, y2), scores [N], same floating dtype and device; returns int64
//     [M] indices into boxes of the kept boxes, sorted by decreasing score (torchvision.ops.nms).
// dtypes: float and double on CPU and CUDA, half and bfloat16 on CUDA.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace amanet {

inline void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "nms: boxes must be a [N, 4] tensor of (x1, y1, x2, y2) rows, got shape ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1, "nms: scores must be a 1-D [N] tensor, got shape ", scores.sizes());
  TORCH_CHECK(boxes.size(0) == scores.size(0), "nms: boxes and scores must have the same length, got ",
              boxes.size(0), " boxes and ", scores.size(0), " scores");
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), "nms: boxes must be a floating tensor, got ",
              boxes.scalar_type());
  TORCH_CHECK(scores.scalar_type() == boxes.scalar_type(), "nms: scores dtype ", scores.scalar_type(),
              " must match the boxes dtype ", boxes.scalar_type());
  TORCH_CHECK(scores.device() == boxes.device(), "nms: scores are on ", scores.device(),
              " but boxes are on ", boxes.device());
}

}  // namespace amanet
