#pragma once
// Host-side contract of amanet::iuv_paste: input checks and the small per-box tables (chart
// offsets, score ranks, vector width of ATen's CPU kernels) that both device implementations
// compute first. The per-pixel math is in common/iuv_paste.h.
//
// Schema (ops.cpp):
//   iuv_paste(Tensor fine, Tensor gate, Tensor u, Tensor v, Tensor boxes, Tensor scores, int mode,
//             float threshold, int image_height, int image_width, bool whole_image=True)
//     -> (Tensor charts, Tensor offsets, Tensor image)
//   fine, u, v [N, K, S_h, S_w] and gate [N, Cg, S_h, S_w] (one floating dtype: float, double,
//   half or bfloat16, computed in float); boxes [N, 4] int64 XYWH with w, h >= 1; scores [N].
//   charts   uint8 [3 * P], P = sum_i h_i * w_i: chart i is the contiguous [3, h_i, w_i] block
//            charts[3 * offsets[i] : 3 * offsets[i + 1]] (planes I, U, V);
//   offsets  int64 [N + 1], offsets[i] = sum_{j < i} h_j * w_j (pixels, not bytes);
//   image    uint8 [3, H, W] whole-image IUV (higher score wins where foregrounds overlap, equal
//            scores: lower index), or an empty [0] tensor when whole_image=False.
//   All outputs are on the inputs' device.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace amanet {

struct IuvPastePlan {
  int64_t N = 0, K = 0, Cg = 0, Sh = 0, Sw = 0;
  int64_t total_pixels = 0;        // P
  std::vector<int64_t> boxes;      // N x (x, y, w, h), host copy
  std::vector<int64_t> offsets;    // N + 1
  std::vector<int32_t> rank;       // rank[i]: position of box i in (score desc, index asc) order
  std::vector<int32_t> order;      // order[r]: box of rank r
};

// Checks every input (clear messages) and builds the plan. Copies boxes and scores to the host.
IuvPastePlan plan_iuv_paste(const at::Tensor& fine, const at::Tensor& gate, const at::Tensor& u,
                            const at::Tensor& v, const at::Tensor& boxes, const at::Tensor& scores,
                            int64_t mode, int64_t image_height, int64_t image_width);

// Vector width (floats) of ATen's CPU kernels in this process: 16 with the AVX512 capability,
// else 8 (see common/iuv_paste.h: it decides which channels take ATen's scalar-tail formula).
int64_t aten_float_vector_width();

}  // namespace amanet
