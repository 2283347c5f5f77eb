#pragma once
// Non-maximum suppression: the pairwise overlap test, shared by the CPU loop (cpu/nms.cpp) and
// the CUDA kernel (cuda/nms.cu).
//
//   boxes [N, 4] (x1, y1, x2, y2), scores [N] -> int64 indices of the kept boxes, by decreasing
//   score. Boxes are visited in the order of a stable descending sort of the scores (as
//   torchvision: equal scores by increasing index); a box is kept unless an already kept box
//   overlaps it with IoU > iou_threshold (strictly greater).
//
// The overlap test keeps torchvision's operation order: intersection clamped at 0, then
// inter / (area_a + area_b - inter) (area = (x2 - x1) * (y2 - y1), computed once per box). The
// threshold type is the caller's: the CPU compares against the double threshold (as
// torchvision's CPU kernel), the CUDA kernel against a float threshold (as torchvision's CUDA
// kernel). Acc is the area / IoU type: float for half and bfloat16 boxes.
#include "host_device.h"

namespace amanet {
namespace nms {

template <typename T>
AMANET_HOST_DEVICE inline T hd_max(T a, T b) {
  return (a < b) ? b : a;  // std::max
}

template <typename T>
AMANET_HOST_DEVICE inline T hd_min(T a, T b) {
  return (b < a) ? b : a;  // std::min
}

template <typename Acc, typename T>
AMANET_HOST_DEVICE inline Acc box_area(T x1, T y1, T x2, T y2) {
  return ((Acc)x2 - x1) * (y2 - y1);
}

// IoU(a, b) > threshold.
template <typename Acc, typename T, typename Thr>
AMANET_HOST_DEVICE inline bool iou_above(T ax1, T ay1, T ax2, T ay2, Acc area_a, T bx1, T by1, T bx2,
                                         T by2, Acc area_b, Thr threshold) {
  const T xx1 = hd_max(ax1, bx1);
  const T yy1 = hd_max(ay1, by1);
  const T xx2 = hd_min(ax2, bx2);
  const T yy2 = hd_min(ay2, by2);
  const T w = hd_max(static_cast<T>(0), static_cast<T>(xx2 - xx1));
  const T h = hd_max(static_cast<T>(0), static_cast<T>(yy2 - yy1));
  const Acc inter = (Acc)w * h;
  return inter / (area_a + area_b - inter) > threshold;
}

}  // namespace nms
}  // namespace amanet
