// CUDA kernels of amanet::uv_interp_loss(_backward) (math in common/uv_interp_loss.h).
// Forward: a fixed grid of blocks walks the points; each block writes one partial sum (acc_t)
// and the partials are summed by at::sum: no atomics, the result is deterministic.
// Backward: dU/dV (those in output_mask) are zero-filled once, one thread per point scatters its
// corner terms with atomicAdd — into float buffers for half / bfloat16 maps (16-bit atomics
// would round every partial sum), cast once at the end. Atomic sums depend on thread order, so
// the backward alerts under torch.use_deterministic_algorithms(True). The upstream gradient is
// read on the device. The U/V maps are read in place through their strides.
// roi_index / part are range-checked on the host first (check_point_indices: one small
// device-to-host copy), so a bad index is a Python error, not a device-side assert that would
// poison the CUDA context; the kernels' asserts stay as a last guard.
#include <ATen/AccumulateType.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <type_traits>

#include "../common/uv_interp_loss.h"
#include "../uv_interp_loss.h"
#include "block_reduce.cuh"

namespace amanet {
namespace {

using namespace amanet::uv_loss;

constexpr int kThreads = 256;
constexpr int64_t kMaxForwardBlocks = 512;

// A [N, C, H, W] map read through its strides (no contiguous copy).
template <typename scalar_t>
struct Map {
  const scalar_t* data;
  int64_t sn, sc, sh, sw;
  __device__ const scalar_t* plane(int64_t roi, int64_t part) const { return data + roi * sn + part * sc; }
};

template <typename scalar_t>
Map<scalar_t> map_of(const at::Tensor& t) {
  return {t.const_data_ptr<scalar_t>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// opmath_t: the coordinate / target dtype (float, or double for double maps).
template <typename scalar_t, typename opmath_t, typename acc_t>
__global__ void forward_kernel(Map<scalar_t> U, Map<scalar_t> V, const int64_t* __restrict__ roi,
                               const int64_t* __restrict__ part, const opmath_t* __restrict__ px,
                               const opmath_t* __restrict__ py, const opmath_t* __restrict__ tu,
                               const opmath_t* __restrict__ tv, int64_t K, int64_t N, int64_t C, int64_t H,
                               int64_t W, int mode, opmath_t beta, acc_t* __restrict__ partial) {
  __shared__ acc_t shared[32];
  acc_t acc = 0;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = roi[k], p = part[k];
    CUDA_KERNEL_ASSERT(r >= 0 && r < N && "uv_interp_loss: roi_index out of range");
    CUDA_KERNEL_ASSERT(p >= 0 && p < C && "uv_interp_loss: part out of range");
    const Corners<opmath_t> c = corners(px[k], py[k], p, H, W, mode);
    if (!c.counted) continue;
    const opmath_t ue = sample(U.plane(r, p), U.sh, U.sw, c);
    const opmath_t ve = sample(V.plane(r, p), V.sh, V.sw, c);
    acc += static_cast<acc_t>(smooth_l1(ue - tu[k], beta));
    acc += static_cast<acc_t>(smooth_l1(ve - tv[k], beta));
  }
  acc = amanet::cuda::block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

template <typename grad_t, typename opmath_t>
__device__ __forceinline__ void scatter(grad_t* plane, int64_t W, const Corners<opmath_t>& c, opmath_t coef) {
  gpuAtomicAdd(plane + c.y_lo * W + c.x_lo, static_cast<grad_t>(coef * c.w00));
  gpuAtomicAdd(plane + c.y_lo * W + c.x_hi, static_cast<grad_t>(coef * c.w01));
  gpuAtomicAdd(plane + c.y_hi * W + c.x_lo, static_cast<grad_t>(coef * c.w10));
  gpuAtomicAdd(plane + c.y_hi * W + c.x_hi, static_cast<grad_t>(coef * c.w11));
}

// grad_t: the dU / dV buffers' type (float for half / bfloat16 maps, else the maps' own)
template <typename scalar_t, typename opmath_t, typename grad_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, Map<scalar_t> U, Map<scalar_t> V,
                                const int64_t* __restrict__ roi, const int64_t* __restrict__ part,
                                const opmath_t* __restrict__ px, const opmath_t* __restrict__ py,
                                const opmath_t* __restrict__ tu, const opmath_t* __restrict__ tv, int64_t K,
                                int64_t N, int64_t C, int64_t H, int64_t W, int mode, opmath_t beta,
                                grad_t* __restrict__ dU, grad_t* __restrict__ dV) {
  const opmath_t g = static_cast<opmath_t>(grad[0]);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(blockDim.x) * gridDim.x) {
    const int64_t r = roi[k], p = part[k];
    CUDA_KERNEL_ASSERT(r >= 0 && r < N && "uv_interp_loss: roi_index out of range");
    CUDA_KERNEL_ASSERT(p >= 0 && p < C && "uv_interp_loss: part out of range");
    const Corners<opmath_t> c = corners(px[k], py[k], p, H, W, mode);
    if (!c.counted) continue;
    const int64_t plane = (r * C + p) * H * W;
    if (dU != nullptr) {
      const opmath_t ue = sample(U.plane(r, p), U.sh, U.sw, c);
      scatter(dU + plane, W, c, g * smooth_l1_grad(ue - tu[k], beta));
    }
    if (dV != nullptr) {
      const opmath_t ve = sample(V.plane(r, p), V.sh, V.sw, c);
      scatter(dV + plane, W, c, g * smooth_l1_grad(ve - tv[k], beta));
    }
  }
}

struct Points {
  at::Tensor roi_index, part, x, y, target_u, target_v;
};

Points prepare_points(const at::Tensor& u, const at::Tensor& roi_index, const at::Tensor& x, const at::Tensor& y,
                      const at::Tensor& part, const at::Tensor& target_u, const at::Tensor& target_v) {
  const auto dt = uv_interp_loss_compute_dtype(u);
  return {roi_index.contiguous(), part.contiguous(), x.to(dt).contiguous(), y.to(dt).contiguous(),
          target_u.to(dt).contiguous(), target_v.to(dt).contiguous()};
}

int point_blocks(int64_t K, int64_t cap) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((K + kThreads - 1) / kThreads, cap)));
}

at::Tensor uv_interp_loss_cuda(const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
                               const at::Tensor& x, const at::Tensor& y, const at::Tensor& part,
                               const at::Tensor& target_u, const at::Tensor& target_v, int64_t mode, double beta) {
  check_uv_interp_loss_inputs(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
  TORCH_CHECK(u.is_cuda(), "uv_interp_loss (CUDA kernel): u must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(u.device());
  const Points pts = prepare_points(u, roi_index, x, y, part, target_u, target_v);
  const int64_t K = roi_index.numel();
  const int64_t N = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  check_point_indices(pts.roi_index, pts.part, N, C);
  const int blocks = point_blocks(K, kMaxForwardBlocks);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "uv_interp_loss_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    at::Tensor partial = at::empty({blocks}, u.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    forward_kernel<scalar_t, opmath_t, acc_t><<<blocks, kThreads, 0, stream>>>(
        map_of<scalar_t>(u), map_of<scalar_t>(v), pts.roi_index.const_data_ptr<int64_t>(),
        pts.part.const_data_ptr<int64_t>(), pts.x.const_data_ptr<opmath_t>(), pts.y.const_data_ptr<opmath_t>(),
        pts.target_u.const_data_ptr<opmath_t>(), pts.target_v.const_data_ptr<opmath_t>(), K, N, C, H, W,
        static_cast<int>(mode), static_cast<opmath_t>(beta), partial.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    out = partial.sum().to(u.scalar_type());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> uv_interp_loss_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& part, const at::Tensor& target_u,
    const at::Tensor& target_v, int64_t mode, double beta, std::array<bool, 2> output_mask) {
  check_uv_interp_loss_inputs(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
  TORCH_CHECK(grad_in.numel() == 1, "uv_interp_loss_backward: grad must be a scalar, got shape ", grad_in.sizes());
  TORCH_CHECK(u.is_cuda() && grad_in.device() == u.device(),
              "uv_interp_loss_backward (CUDA kernel): grad and u must be on the same CUDA device");
  c10::cuda::CUDAGuard guard(u.device());
  at::Tensor grad_u, grad_v;  // (not structured bindings: the kernel lambdas capture them)
  const int64_t K = roi_index.numel();
  const bool reduced = u.scalar_type() == at::kHalf || u.scalar_type() == at::kBFloat16;
  // half / bfloat16: accumulate in float buffers of u's shape, cast once at the end
  std::tie(grad_u, grad_v) = zeros_for_uv_grads(u, output_mask, reduced ? at::kFloat : u.scalar_type());
  if (K == 0 || (!output_mask[0] && !output_mask[1])) {
    return {grad_u.defined() ? grad_u.to(u.scalar_type()) : grad_u,
            grad_v.defined() ? grad_v.to(u.scalar_type()) : grad_v};
  }
  at::globalContext().alertNotDeterministic("amanet::uv_interp_loss_backward (CUDA)");
  const Points pts = prepare_points(u, roi_index, x, y, part, target_u, target_v);
  const int64_t N = u.size(0), C = u.size(1), H = u.size(2), W = u.size(3);
  check_point_indices(pts.roi_index, pts.part, N, C);
  const at::Tensor grad = grad_in.to(u.scalar_type()).contiguous();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, u.scalar_type(), "uv_interp_loss_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    using grad_t = std::conditional_t<std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>,
                                      float, scalar_t>;
    backward_kernel<scalar_t, opmath_t, grad_t><<<point_blocks(K, int64_t(1) << 20), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), map_of<scalar_t>(u), map_of<scalar_t>(v),
        pts.roi_index.const_data_ptr<int64_t>(), pts.part.const_data_ptr<int64_t>(), pts.x.const_data_ptr<opmath_t>(),
        pts.y.const_data_ptr<opmath_t>(), pts.target_u.const_data_ptr<opmath_t>(),
        pts.target_v.const_data_ptr<opmath_t>(), K, N, C, H, W, static_cast<int>(mode), static_cast<opmath_t>(beta),
        output_mask[0] ? grad_u.mutable_data_ptr<grad_t>() : nullptr,
        output_mask[1] ? grad_v.mutable_data_ptr<grad_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (reduced) {
    if (grad_u.defined()) grad_u = grad_u.to(u.scalar_type());
    if (grad_v.defined()) grad_v = grad_v.to(u.scalar_type());
  }
  return {grad_u, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CUDA, m) {
  m.impl("uv_interp_loss", TORCH_FN(uv_interp_loss_cuda));
  m.impl("uv_interp_loss_backward", TORCH_FN(uv_interp_loss_backward_cuda));
}

}  // namespace amanet
