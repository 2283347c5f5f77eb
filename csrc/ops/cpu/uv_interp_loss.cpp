// CPU kernels of amanet::uv_interp_loss(_backward) (math and byte minimums in
// common/uv_interp_loss.h). The U/V maps are read in place through their strides.
// Forward: points are split into fixed blocks of kBlock; each block's partial sum is kept in
// acc_t (double for float) and the blocks are added in order, so the result does not depend on
// the thread count. Backward: the points are bucketed by (RoI, part) plane (a stable counting
// sort, O(K + N*C)); then, in parallel over planes, each plane of dU/dV (only those in
// output_mask) is zero-filled and its points' 4 corner terms are added in point order while it
// is in L1 (for maps beyond the caches: in a scratch plane, then streamed out): one write pass
// over the dense gradients, deterministic and race-free.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "../common/uv_interp_loss.h"
#include "../uv_interp_loss.h"
#include "stream_store.h"

namespace amanet {
namespace {

using namespace amanet::uv_loss;

constexpr int64_t kBlock = 1024;
// Blocks per parallel chunk: below ~4k points one thread is faster than waking a second one.
constexpr int64_t kGrainBlocks = 4;
// Backward: map elements (zero fill + scatter) per parallel chunk of planes.
constexpr int64_t kPlaneGrainElements = 32768;

struct Points {
  at::Tensor roi_index, part, x, y, target_u, target_v;
};

Points prepare_points(const at::Tensor& u, const at::Tensor& roi_index, const at::Tensor& x, const at::Tensor& y,
                      const at::Tensor& part, const at::Tensor& target_u, const at::Tensor& target_v) {
  const auto dt = uv_interp_loss_compute_dtype(u);  // == u's dtype for the CPU types
  return {roi_index.contiguous(), part.contiguous(), x.to(dt).contiguous(), y.to(dt).contiguous(),
          target_u.to(dt).contiguous(), target_v.to(dt).contiguous()};
}

// A [N, C, H, W] map read through its strides.
template <typename scalar_t>
struct Map {
  const scalar_t* data;
  int64_t sn, sc, sh, sw;
  explicit Map(const at::Tensor& t)
      : data(t.const_data_ptr<scalar_t>()), sn(t.stride(0)), sc(t.stride(1)), sh(t.stride(2)), sw(t.stride(3)) {}
  const scalar_t* plane(int64_t roi, int64_t part) const { return data + roi * sn + part * sc; }
};

template <typename scalar_t>
void scatter(scalar_t* plane, int64_t W, const Corners<scalar_t>& c, scalar_t coef) {
  plane[c.y_lo * W + c.x_lo] += coef * c.w00;
  plane[c.y_lo * W + c.x_hi] += coef * c.w01;
  plane[c.y_hi * W + c.x_lo] += coef * c.w10;
  plane[c.y_hi * W + c.x_hi] += coef * c.w11;
}

at::Tensor uv_interp_loss_cpu(const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
                              const at::Tensor& x, const at::Tensor& y, const at::Tensor& part,
                              const at::Tensor& target_u, const at::Tensor& target_v, int64_t mode, double beta) {
  check_uv_interp_loss_inputs(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
  TORCH_CHECK(u.is_cpu(), "uv_interp_loss (CPU kernel): u must be a CPU tensor");
  const Points pts = prepare_points(u, roi_index, x, y, part, target_u, target_v);
  const int64_t K = roi_index.numel();
  const int64_t N = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  check_point_indices(pts.roi_index, pts.part, N, C);
  const int m = static_cast<int>(mode);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "uv_interp_loss_cpu", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;
    const Map<scalar_t> U(u), V(v);
    const int64_t* roi = pts.roi_index.const_data_ptr<int64_t>();
    const int64_t* prt = pts.part.const_data_ptr<int64_t>();
    const scalar_t* px = pts.x.const_data_ptr<scalar_t>();
    const scalar_t* py = pts.y.const_data_ptr<scalar_t>();
    const scalar_t* tu = pts.target_u.const_data_ptr<scalar_t>();
    const scalar_t* tv = pts.target_v.const_data_ptr<scalar_t>();
    const scalar_t b = static_cast<scalar_t>(beta);
    const int64_t blocks = (K + kBlock - 1) / kBlock;
    std::vector<acc_t> partial(blocks, acc_t(0));
    at::parallel_for(0, blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        acc_t acc = 0;
        const int64_t end = std::min(K, (blk + 1) * kBlock);
        for (int64_t k = blk * kBlock; k < end; ++k) {
          const Corners<scalar_t> c = corners(px[k], py[k], prt[k], H, W, m);
          if (!c.counted) continue;
          const scalar_t ue = sample(U.plane(roi[k], prt[k]), U.sh, U.sw, c);
          const scalar_t ve = sample(V.plane(roi[k], prt[k]), V.sh, V.sw, c);
          acc += static_cast<acc_t>(smooth_l1<scalar_t>(ue - tu[k], b));
          acc += static_cast<acc_t>(smooth_l1<scalar_t>(ve - tv[k], b));
        }
        partial[blk] = acc;
      }
    });
    acc_t total = 0;
    for (const acc_t p : partial) total += p;
    out = at::scalar_tensor(static_cast<double>(total), u.options());
  });
  return out;
}

// Stable counting sort of the points by map plane (roi * C + part): plane q's points are
// order[begin[q] .. begin[q + 1]) in their original order (points validated by the caller).
void bucket_by_plane(const int64_t* roi, const int64_t* part, int64_t K, int64_t N, int64_t C,
                     std::vector<int64_t>& begin, std::vector<int64_t>& order) {
  begin.assign(N * C + 1, 0);
  for (int64_t k = 0; k < K; ++k) {
    ++begin[roi[k] * C + part[k] + 1];
  }
  for (int64_t q = 0; q < N * C; ++q) begin[q + 1] += begin[q];
  std::vector<int64_t> next(begin.begin(), begin.end() - 1);
  order.resize(K);
  for (int64_t k = 0; k < K; ++k) order[next[roi[k] * C + part[k]]++] = k;
}

std::tuple<at::Tensor, at::Tensor> uv_interp_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& part, const at::Tensor& target_u,
    const at::Tensor& target_v, int64_t mode, double beta, std::array<bool, 2> output_mask) {
  check_uv_interp_loss_inputs(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
  TORCH_CHECK(grad.numel() == 1, "uv_interp_loss_backward: grad must be a scalar, got shape ", grad.sizes());
  TORCH_CHECK(u.is_cpu() && grad.is_cpu(), "uv_interp_loss_backward (CPU kernel): tensors must be on the CPU");
  at::Tensor grad_u, grad_v;  // (not structured bindings: the kernel lambdas capture them)
  std::tie(grad_u, grad_v) = empty_uv_grads(u, output_mask);
  if (!output_mask[0] && !output_mask[1]) return {grad_u, grad_v};
  const Points pts = prepare_points(u, roi_index, x, y, part, target_u, target_v);
  const int64_t K = roi_index.numel();
  const int64_t N = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  check_point_indices(pts.roi_index, pts.part, N, C);
  const int m = static_cast<int>(mode);
  std::vector<int64_t> begin, order;
  bucket_by_plane(pts.roi_index.const_data_ptr<int64_t>(), pts.part.const_data_ptr<int64_t>(), K, N, C, begin,
                  order);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "uv_interp_loss_backward_cpu", [&] {
    const scalar_t g = grad.item<scalar_t>();
    const scalar_t b = static_cast<scalar_t>(beta);
    const Map<scalar_t> U(u), V(v);
    scalar_t* dU = output_mask[0] ? grad_u.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* dV = output_mask[1] ? grad_v.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t* roi = pts.roi_index.const_data_ptr<int64_t>();
    const int64_t* prt = pts.part.const_data_ptr<int64_t>();
    const scalar_t* px = pts.x.const_data_ptr<scalar_t>();
    const scalar_t* py = pts.y.const_data_ptr<scalar_t>();
    const scalar_t* tu = pts.target_u.const_data_ptr<scalar_t>();
    const scalar_t* tv = pts.target_v.const_data_ptr<scalar_t>();
    const int64_t HW = H * W;
    // One plane at a time: zero it, then add its points' corner terms while it is in L1.
    // Large gradients (beyond the caches anyway) are assembled in an L1/L2-resident scratch
    // plane and streamed out (a plane without points is streamed zeros): each output line is
    // written once, never read (ordinary stores would fetch every line first: twice the
    // traffic). Planes are disjoint, so threads never share an element; within a plane the points
    // are added in their original order, so the result is the serial loop's, bit for bit.
    const int64_t maps = (dU != nullptr ? 1 : 0) + (dV != nullptr ? 1 : 0);
    const bool stream = maps * N * C * HW * static_cast<int64_t>(sizeof(scalar_t)) >= cpu::kStreamMinBytes;
    at::parallel_for(0, N * C, std::max<int64_t>(1, kPlaneGrainElements / std::max<int64_t>(1, HW)),
                     [&](int64_t q0, int64_t q1) {
      std::vector<scalar_t> scratch(stream ? 2 * HW : 0);
      for (int64_t q = q0; q < q1; ++q) {
        scalar_t* out_u = dU != nullptr ? dU + q * HW : nullptr;
        scalar_t* out_v = dV != nullptr ? dV + q * HW : nullptr;
        if (stream && begin[q] == begin[q + 1]) {
          if (out_u != nullptr) cpu::stream_store<scalar_t>(out_u, nullptr, HW);
          if (out_v != nullptr) cpu::stream_store<scalar_t>(out_v, nullptr, HW);
          continue;
        }
        scalar_t* du = out_u == nullptr ? nullptr : stream ? scratch.data() : out_u;
        scalar_t* dv = out_v == nullptr ? nullptr : stream ? scratch.data() + HW : out_v;
        if (du != nullptr) std::fill(du, du + HW, scalar_t(0));
        if (dv != nullptr) std::fill(dv, dv + HW, scalar_t(0));
        for (int64_t j = begin[q]; j < begin[q + 1]; ++j) {
          const int64_t k = order[j];
          const Corners<scalar_t> c = corners(px[k], py[k], prt[k], H, W, m);
          if (!c.counted) continue;
          if (du != nullptr) {
            const scalar_t ue = sample(U.plane(roi[k], prt[k]), U.sh, U.sw, c);
            scatter(du, W, c, g * smooth_l1_grad<scalar_t>(ue - tu[k], b));
          }
          if (dv != nullptr) {
            const scalar_t ve = sample(V.plane(roi[k], prt[k]), V.sh, V.sw, c);
            scatter(dv, W, c, g * smooth_l1_grad<scalar_t>(ve - tv[k], b));
          }
        }
        if (stream && out_u != nullptr) cpu::stream_store<scalar_t>(out_u, du, HW);
        if (stream && out_v != nullptr) cpu::stream_store<scalar_t>(out_v, dv, HW);
      }
      if (stream) cpu::stream_fence();
    });
  });
  return {grad_u, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CPU, m) {
  m.impl("uv_interp_loss", TORCH_FN(uv_interp_loss_cpu));
  m.impl("uv_interp_loss_backward", TORCH_FN(uv_interp_loss_backward_cpu));
}

}  // namespace amanet
