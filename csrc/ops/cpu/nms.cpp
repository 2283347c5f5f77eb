// CPU kernel of amanet::nms: torchvision's greedy NMS with identical results (same stable sort,
// same overlap arithmetic, same threshold comparison), restructured for speed: the boxes are
// first gathered into score order (structure of arrays), then each kept box suppresses all later
// boxes in one branch-free pass that the compiler vectorises. Testing an already suppressed box
// again changes nothing (suppression is an OR), so the kept set is the same.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/nms.h"
#include "../nms.h"

namespace amanet {
namespace {

using namespace amanet::nms;

// x86-64: an AVX2 clone next to the baseline SSE2 one, picked at load time (IEEE element-wise
// operations, no FMA contraction under -std=c++20: both clones give the same bits).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define AMANET_NMS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define AMANET_NMS_CLONES
#endif

// The float threshold f with ((double)v > thr) == (v > f) for every float v: thr itself when it
// is a float, else the float just below it. Lets the float kernel compare in float (vectorised)
// with the result of torchvision's float-vs-double comparison.
float float_threshold(double thr) {
  if (std::isnan(thr)) return std::numeric_limits<float>::quiet_NaN();
  if (thr >= static_cast<double>(std::numeric_limits<float>::max())) return std::numeric_limits<float>::max();
  if (thr < -static_cast<double>(std::numeric_limits<float>::max())) return -std::numeric_limits<float>::infinity();
  float f = static_cast<float>(thr);
  if (static_cast<double>(f) > thr) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  return f;
}

// Boxes in score order, structure of arrays.
template <typename T>
struct SortedBoxes {
  const T* x1;
  const T* y1;
  const T* x2;
  const T* y2;
  const T* area;
};

// sup[j] |= IoU(box i, box j) > threshold for j in [i + 1, n): branch-free, vectorised.
template <typename T>
inline void suppress_after_impl(int64_t i, int64_t n, SortedBoxes<T> b, T threshold,
                                uint8_t* __restrict__ sup) {
  const T* __restrict__ x1 = b.x1;
  const T* __restrict__ y1 = b.y1;
  const T* __restrict__ x2 = b.x2;
  const T* __restrict__ y2 = b.y2;
  const T* __restrict__ area = b.area;
  const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = area[i];
  for (int64_t j = i + 1; j < n; j++) {
    sup[j] |= static_cast<uint8_t>(
        iou_above<T>(ix1, iy1, ix2, iy2, ia, x1[j], y1[j], x2[j], y2[j], area[j], threshold));
  }
}

AMANET_NMS_CLONES
void suppress_after(int64_t i, int64_t n, SortedBoxes<float> b, float threshold, uint8_t* sup) {
  suppress_after_impl<float>(i, n, b, threshold, sup);
}

AMANET_NMS_CLONES
void suppress_after(int64_t i, int64_t n, SortedBoxes<double> b, double threshold, uint8_t* sup) {
  suppress_after_impl<double>(i, n, b, threshold, sup);
}

template <typename T>
at::Tensor nms_kernel(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const int64_t n = boxes.size(0);
  // stable descending sort, as torchvision: equal scores are visited by increasing index
  const at::Tensor order_t = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor boxes_c = boxes.contiguous();
  const T* b = boxes_c.const_data_ptr<T>();
  const int64_t* order = order_t.const_data_ptr<int64_t>();

  std::vector<T> x1(n), y1(n), x2(n), y2(n), area(n);
  for (int64_t s = 0; s < n; s++) {
    const T* box = b + order[s] * 4;
    x1[s] = box[0];
    y1[s] = box[1];
    x2[s] = box[2];
    y2[s] = box[3];
    area[s] = box_area<T>(box[0], box[1], box[2], box[3]);
  }
  const SortedBoxes<T> sorted{x1.data(), y1.data(), x2.data(), y2.data(), area.data()};
  // float boxes: the equivalent float threshold; double boxes: the threshold itself
  const T threshold = std::is_same_v<T, float> ? static_cast<T>(float_threshold(iou_threshold))
                                               : static_cast<T>(iou_threshold);
  std::vector<uint8_t> suppressed(n, 0);
  at::Tensor keep_t = at::empty({n}, boxes.options().dtype(at::kLong));
  int64_t* keep = keep_t.mutable_data_ptr<int64_t>();
  int64_t num_kept = 0;
  for (int64_t i = 0; i < n; i++) {
    if (suppressed[i]) continue;
    keep[num_kept++] = order[i];
    suppress_after(i, n, sorted, threshold, suppressed.data());
  }
  return keep_t.narrow(0, 0, num_kept);
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_inputs(boxes, scores);
  TORCH_CHECK(boxes.device().is_cpu(), "nms (CPU kernel): boxes must be a CPU tensor");
  TORCH_CHECK(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble,
              "nms: CPU boxes must be float32 or float64, got ", boxes.scalar_type());
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    keep = nms_kernel<scalar_t>(boxes, scores, iou_threshold);
  });
  return keep;
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
}

}  // namespace amanet
