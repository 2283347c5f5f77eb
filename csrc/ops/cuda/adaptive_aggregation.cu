// CUDA kernels of amanet::adaptive_aggregation(_backward) (math in common/adaptive_aggregation.h,
// byte minimums there too). Forward: one thread per S element walks the P paths (coalesced over
// H*W), so F is read once and S and each group sum R written once from registers. Backward: one
// block per (n, p, c) row: dF is written in the same pass that reduces dg = sum_i F * (dS + dR)
// in a block sum.
// half / bfloat16 compute in float (at::opmath_type), dg accumulates in at::acc_type.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../adaptive_aggregation.h"
#include "../common/adaptive_aggregation.h"
#include "block_reduce.cuh"

namespace amanet {
namespace {

using namespace amanet::aggregation;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ features, const scalar_t* __restrict__ gates,
                               scalar_t* __restrict__ groups, scalar_t* __restrict__ summed, int64_t P, int64_t C,
                               int64_t HW, int64_t total, int64_t group_size) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t K = group_size > 0 ? P / group_size : 0;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(blockDim.x) * gridDim.x) {
    const int64_t nc = e / HW;
    const int64_t i = e - nc * HW;
    const int64_t n = nc / C;
    const int64_t c = nc - n * C;
    opmath_t acc = 0;
    opmath_t group_acc = 0;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t row = (n * P + p) * C + c;
      const opmath_t v =
          gate<opmath_t>(static_cast<opmath_t>(features[row * HW + i]), static_cast<opmath_t>(gates[row]));
      if (groups != nullptr) {
        group_acc = starts_group(p, group_size) ? v : accumulate(group_acc, v);
        if (starts_group(p + 1, group_size)) {  // p ends its group
          groups[((n * K + group_of(p, group_size)) * C + c) * HW + i] = static_cast<scalar_t>(group_acc);
        }
      }
      acc = p == 0 ? v : accumulate(acc, v);
    }
    summed[e] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, bool kSummed, bool kGroups>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_summed, const scalar_t* __restrict__ grad_groups,
                                const scalar_t* __restrict__ features, const scalar_t* __restrict__ gates,
                                scalar_t* __restrict__ grad_features, scalar_t* __restrict__ grad_gates, int64_t P,
                                int64_t C, int64_t HW, int64_t rows, int64_t group_size) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t K = group_size > 0 ? P / group_size : 0;
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  __shared__ acc_t shared[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t np = row / C;
    const int64_t c = row - np * C;
    const int64_t n = np / P;
    const int64_t p = np - n * P;
    const scalar_t* ds = kSummed ? grad_summed + (n * C + c) * HW : nullptr;
    const scalar_t* dr = kGroups ? grad_groups + ((n * K + group_of(p, group_size)) * C + c) * HW : nullptr;
    const scalar_t* f = features + row * HW;
    scalar_t* df = grad_features + row * HW;
    const opmath_t gv = static_cast<opmath_t>(gates[row]);
    acc_t acc = 0;
    for (int64_t i = threadIdx.x; i < HW; i += blockDim.x) {
      opmath_t t;
      if constexpr (kSummed && kGroups) {
        t = upstream(static_cast<opmath_t>(ds[i]), static_cast<opmath_t>(dr[i]));
      } else if constexpr (kSummed) {
        t = static_cast<opmath_t>(ds[i]);
      } else {
        t = static_cast<opmath_t>(dr[i]);
      }
      df[i] = static_cast<scalar_t>(grad_feature(gv, t));
      acc += grad_gate_term<opmath_t, acc_t>(static_cast<opmath_t>(f[i]), t);
    }
    acc = amanet::cuda::block_sum(acc, shared);
    if (threadIdx.x == 0) grad_gates[row] = static_cast<scalar_t>(acc);
    __syncthreads();  // `shared` is reused by the next row
  }
}

int blocks_for(int64_t work) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(work, kMaxBlocks)));
}

std::tuple<at::Tensor, at::Tensor> adaptive_aggregation_cuda(const at::Tensor& features_in,
                                                             const at::Tensor& gates_in, int64_t group_size) {
  check_adaptive_aggregation_inputs(features_in, gates_in, group_size);
  TORCH_CHECK(features_in.is_cuda(), "adaptive_aggregation (CUDA kernel): features must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(features_in.device());
  const AggregationForward call = prepare_aggregation_forward(features_in, gates_in, group_size);
  if (call.done) return {call.groups, call.summed};
  const int64_t total = call.summed.numel();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.features.scalar_type(), "adaptive_aggregation_cuda",
                                  [&] {
    forward_kernel<scalar_t><<<blocks_for((total + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        call.features.const_data_ptr<scalar_t>(), call.gates.const_data_ptr<scalar_t>(),
        group_size > 0 ? call.groups.mutable_data_ptr<scalar_t>() : nullptr, call.summed.mutable_data_ptr<scalar_t>(),
        call.P, call.C, call.HW, total, group_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {call.groups, call.summed};
}

std::tuple<at::Tensor, at::Tensor> adaptive_aggregation_backward_cuda(
    const std::optional<at::Tensor>& grad_groups_in, const std::optional<at::Tensor>& grad_summed_in,
    const at::Tensor& features_in, const at::Tensor& gates_in, int64_t group_size) {
  check_adaptive_aggregation_inputs(features_in, gates_in, group_size);
  check_adaptive_aggregation_grads(grad_groups_in, grad_summed_in, features_in, group_size);
  TORCH_CHECK(features_in.is_cuda(), "adaptive_aggregation_backward (CUDA kernel): features must be a CUDA tensor");
  c10::cuda::CUDAGuard guard(features_in.device());
  const AggregationBackward call = prepare_aggregation_backward(grad_groups_in, grad_summed_in, features_in, gates_in);
  if (call.done) return {call.grad_features, call.grad_gates};
  const int64_t rows = call.gates.numel();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, call.features.scalar_type(), "adaptive_aggregation_backward_cuda", [&] {
        dispatch_aggregation_backward(call, [&](auto with_summed, auto with_groups) {
          backward_kernel<scalar_t, decltype(with_summed)::value, decltype(with_groups)::value>
              <<<blocks_for(rows), kThreads, 0, stream>>>(
                  call.has_summed ? call.grad_summed.const_data_ptr<scalar_t>() : nullptr,
                  call.has_groups ? call.grad_groups.const_data_ptr<scalar_t>() : nullptr,
                  call.features.const_data_ptr<scalar_t>(), call.gates.const_data_ptr<scalar_t>(),
                  call.grad_features.mutable_data_ptr<scalar_t>(), call.grad_gates.mutable_data_ptr<scalar_t>(),
                  call.P, call.C, call.HW, rows, group_size);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return {call.grad_features, call.grad_gates};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CUDA, m) {
  m.impl("adaptive_aggregation", TORCH_FN(adaptive_aggregation_cuda));
  m.impl("adaptive_aggregation_backward", TORCH_FN(adaptive_aggregation_backward_cuda));
}

}  // namespace amanet
