// CPU kernels of amanet::uv_interp_loss(_backward) (math and byte minimums in
// common/uv_interp_loss.h). The U/V maps are read in place through their strides.
// Forward: points are split into fixed blocks of kBlock; each block's partial sum is kept in
// acc_t (double for float) and the blocks are added in order, so the result does not depend on
// the thread count. Backward: dU/dV (only those in output_mask) are zero-filled once and the 4
// corner terms per point are scattered serially in point order: deterministic and race-free
// (K is small, ~200 points per RoI; the dense zero fill is the cost that matters).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "../common/uv_interp_loss.h"
#include "../uv_interp_loss.h"

namespace amanet {
namespace {

using namespace amanet::uv_loss;

constexpr int64_t kBlock = 1024;
// Blocks per parallel chunk: below ~4k points one thread is faster than waking a second one.
constexpr int64_t kGrainBlocks = 4;

struct Points {
  at::Tensor roi_index, part, x, y, target_u, target_v;
};

Points prepare_points(const at::Tensor& u, const at::Tensor& roi_index, const at::Tensor& x, const at::Tensor& y,
                      const at::Tensor& part, const at::Tensor& target_u, const at::Tensor& target_v) {
  const auto dt = uv_interp_loss_compute_dtype(u);  // == u's dtype for the CPU types
  return {roi_index.contiguous(), part.contiguous(), x.to(dt).contiguous(), y.to(dt).contiguous(),
          target_u.to(dt).contiguous(), target_v.to(dt).contiguous()};
}

inline void check_point(int64_t k, int64_t roi, int64_t part, int64_t N, int64_t C) {
  TORCH_CHECK(roi >= 0 && roi < N, "uv_interp_loss: roi_index[", k, "] = ", roi, " is out of range for ", N,
              " RoIs");
  TORCH_CHECK(part >= 0 && part < C, "uv_interp_loss: part[", k, "] = ", part, " is out of range [0, ", C,
              ") (0 = ignored point)");
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
          check_point(k, roi[k], prt[k], N, C);
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

std::tuple<at::Tensor, at::Tensor> uv_interp_loss_backward_cpu(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& part, const at::Tensor& target_u,
    const at::Tensor& target_v, int64_t mode, double beta, std::array<bool, 2> output_mask) {
  check_uv_interp_loss_inputs(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
  TORCH_CHECK(grad.numel() == 1, "uv_interp_loss_backward: grad must be a scalar, got shape ", grad.sizes());
  TORCH_CHECK(u.is_cpu() && grad.is_cpu(), "uv_interp_loss_backward (CPU kernel): tensors must be on the CPU");
  const auto opts = u.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_u = output_mask[0] ? at::zeros(u.sizes(), opts) : at::Tensor();
  at::Tensor grad_v = output_mask[1] ? at::zeros(v.sizes(), opts) : at::Tensor();
  const int64_t K = roi_index.numel();
  if (K == 0 || (!output_mask[0] && !output_mask[1])) return {grad_u, grad_v};
  const Points pts = prepare_points(u, roi_index, x, y, part, target_u, target_v);
  const int64_t N = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  const int m = static_cast<int>(mode);
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
    for (int64_t k = 0; k < K; ++k) {
      check_point(k, roi[k], prt[k], N, C);
      const Corners<scalar_t> c = corners(px[k], py[k], prt[k], H, W, m);
      if (!c.counted) continue;
      const int64_t plane = (roi[k] * C + prt[k]) * H * W;
      if (dU != nullptr) {
        const scalar_t ue = sample(U.plane(roi[k], prt[k]), U.sh, U.sw, c);
        scatter(dU + plane, W, c, g * smooth_l1_grad<scalar_t>(ue - tu[k], b));
      }
      if (dV != nullptr) {
        const scalar_t ve = sample(V.plane(roi[k], prt[k]), V.sh, V.sw, c);
        scatter(dV + plane, W, c, g * smooth_l1_grad<scalar_t>(ve - tv[k], b));
      }
    }
  });
  return {grad_u, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CPU, m) {
  m.impl("uv_interp_loss", TORCH_FN(uv_interp_loss_cpu));
  m.impl("uv_interp_loss_backward", TORCH_FN(uv_interp_loss_backward_cpu));
}

}  // namespace amanet
