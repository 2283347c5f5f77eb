// CPU kernels of amanet::adaptive_aggregation(_backward): one pass over F per call (see the
// byte minimums in common/adaptive_aggregation.h). Work is split over (n, c) rows; for one row
// the P paths are walked in order, so S[n, c, :] and the current group sum R[n, k, c, :] (dS and
// dR in backward) stay in L1/L2 while every element of F and dF is touched exactly once.
// Inner loops are contiguous over H*W.
#include <ATen/AccumulateType.h>
#include <ATen/OpMathType.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../adaptive_aggregation.h"
#include "../common/adaptive_aggregation.h"

namespace amanet {
namespace {

using namespace amanet::aggregation;

// Elements of work per parallel chunk: enough to amortise the thread hand-off.
constexpr int64_t kGrainElements = 32768;

int64_t row_grain(int64_t elements_per_row) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_row));
}

// Where a row is summed: the output row itself when the element math runs in its dtype, else
// the float scratch row.
template <bool kDirect, typename scalar_t, typename op_t>
op_t* accumulator(scalar_t* out, op_t* scratch) {
  if constexpr (kDirect) {
    return out;
  } else {
    return scratch;
  }
}

template <typename op_t, typename scalar_t>
void round_row(const op_t* from, scalar_t* to, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) to[i] = static_cast<scalar_t>(from[i]);
}

// Reduced-precision inputs (bf16 / fp16) are widened to float for the arithmetic (op_t); their
// S and R rows are accumulated in a per-thread float scratch row and rounded once when complete.
// float / double accumulate in the output itself, as before (bit-identical to the reference).
template <typename scalar_t>
void forward_kernel(const scalar_t* features, const scalar_t* gates, scalar_t* groups, scalar_t* summed,
                    int64_t N, int64_t P, int64_t C, int64_t HW, int64_t group_size) {
  using op_t = at::opmath_type<scalar_t>;
  constexpr bool kDirect = std::is_same_v<op_t, scalar_t>;
  const int64_t K = group_size > 0 ? P / group_size : 0;
  at::parallel_for(0, N * C, row_grain(P * HW), [&](int64_t begin, int64_t end) {
    std::vector<op_t> scratch(kDirect ? 0 : 2 * HW);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      scalar_t* const s_out = summed + nc * HW;
      op_t* __restrict__ s = accumulator<kDirect>(s_out, scratch.data());
      for (int64_t p = 0; p < P; ++p) {
        const int64_t row = (n * P + p) * C + c;
        const scalar_t* __restrict__ f = features + row * HW;
        const op_t gv = static_cast<op_t>(gates[row]);
        if (groups != nullptr) {
          scalar_t* const r_out = groups + ((n * K + group_of(p, group_size)) * C + c) * HW;
          op_t* __restrict__ r = accumulator<kDirect>(r_out, scratch.data() + HW);
          if (p == 0) {
#pragma omp simd
            for (int64_t i = 0; i < HW; ++i) {
              const op_t v = gate(static_cast<op_t>(f[i]), gv);
              r[i] = v;
              s[i] = v;
            }
          } else if (starts_group(p, group_size)) {
#pragma omp simd
            for (int64_t i = 0; i < HW; ++i) {
              const op_t v = gate(static_cast<op_t>(f[i]), gv);
              r[i] = v;
              s[i] = accumulate(s[i], v);
            }
          } else {
#pragma omp simd
            for (int64_t i = 0; i < HW; ++i) {
              const op_t v = gate(static_cast<op_t>(f[i]), gv);
              r[i] = accumulate(r[i], v);
              s[i] = accumulate(s[i], v);
            }
          }
          if constexpr (!kDirect) {
            if (starts_group(p + 1, group_size)) round_row(r, r_out, HW);  // group complete
          }
        } else if (p == 0) {
#pragma omp simd
          for (int64_t i = 0; i < HW; ++i) s[i] = gate(static_cast<op_t>(f[i]), gv);
        } else {
#pragma omp simd
          for (int64_t i = 0; i < HW; ++i) s[i] = accumulate(s[i], gate(static_cast<op_t>(f[i]), gv));
        }
      }
      if constexpr (!kDirect) round_row(s, s_out, HW);
    }
  });
}

template <typename scalar_t, bool kSummed, bool kGroups>
void backward_kernel(const scalar_t* grad_summed, const scalar_t* grad_groups, const scalar_t* features,
                     const scalar_t* gates, scalar_t* grad_features, scalar_t* grad_gates, int64_t N,
                     int64_t P, int64_t C, int64_t HW, int64_t group_size) {
  using op_t = at::opmath_type<scalar_t>;                      // element math (float for bf16/fp16)
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/false>;  // double for float: dg sums H*W terms
  const int64_t K = group_size > 0 ? P / group_size : 0;
  at::parallel_for(0, N * C, row_grain(P * HW), [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const scalar_t* __restrict__ ds = kSummed ? grad_summed + nc * HW : nullptr;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t row = (n * P + p) * C + c;
        const scalar_t* __restrict__ f = features + row * HW;
        const scalar_t* __restrict__ dr =
            kGroups ? grad_groups + ((n * K + group_of(p, group_size)) * C + c) * HW : nullptr;
        scalar_t* __restrict__ df = grad_features + row * HW;
        const op_t gv = static_cast<op_t>(gates[row]);
        acc_t acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < HW; ++i) {
          op_t t;
          if constexpr (kSummed && kGroups) {
            t = upstream(static_cast<op_t>(ds[i]), static_cast<op_t>(dr[i]));
          } else if constexpr (kSummed) {
            t = static_cast<op_t>(ds[i]);
          } else {
            t = static_cast<op_t>(dr[i]);
          }
          df[i] = static_cast<scalar_t>(grad_feature(gv, t));
          acc += grad_gate_term<op_t, acc_t>(static_cast<op_t>(f[i]), t);
        }
        grad_gates[row] = static_cast<scalar_t>(acc);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> adaptive_aggregation_cpu(const at::Tensor& features_in,
                                                            const at::Tensor& gates_in, int64_t group_size) {
  check_adaptive_aggregation_inputs(features_in, gates_in, group_size);
  TORCH_CHECK(features_in.is_cpu(), "adaptive_aggregation (CPU kernel): features must be a CPU tensor");
  const AggregationForward call = prepare_aggregation_forward(features_in, gates_in, group_size);
  if (call.done) return {call.groups, call.summed};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.features.scalar_type(), "adaptive_aggregation_cpu", [&] {
    forward_kernel<scalar_t>(call.features.const_data_ptr<scalar_t>(), call.gates.const_data_ptr<scalar_t>(),
                             group_size > 0 ? call.groups.mutable_data_ptr<scalar_t>() : nullptr,
                             call.summed.mutable_data_ptr<scalar_t>(), call.N, call.P, call.C, call.HW, group_size);
  });
  return {call.groups, call.summed};
}

std::tuple<at::Tensor, at::Tensor> adaptive_aggregation_backward_cpu(
    const std::optional<at::Tensor>& grad_groups_in, const std::optional<at::Tensor>& grad_summed_in,
    const at::Tensor& features_in, const at::Tensor& gates_in, int64_t group_size) {
  check_adaptive_aggregation_inputs(features_in, gates_in, group_size);
  check_adaptive_aggregation_grads(grad_groups_in, grad_summed_in, features_in, group_size);
  TORCH_CHECK(features_in.is_cpu(), "adaptive_aggregation_backward (CPU kernel): features must be a CPU tensor");
  const AggregationBackward call = prepare_aggregation_backward(grad_groups_in, grad_summed_in, features_in, gates_in);
  if (call.done) return {call.grad_features, call.grad_gates};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, call.features.scalar_type(), "adaptive_aggregation_backward_cpu", [&] {
    dispatch_aggregation_backward(call, [&](auto with_summed, auto with_groups) {
      backward_kernel<scalar_t, decltype(with_summed)::value, decltype(with_groups)::value>(
          call.has_summed ? call.grad_summed.const_data_ptr<scalar_t>() : nullptr,
          call.has_groups ? call.grad_groups.const_data_ptr<scalar_t>() : nullptr,
          call.features.const_data_ptr<scalar_t>(), call.gates.const_data_ptr<scalar_t>(),
          call.grad_features.mutable_data_ptr<scalar_t>(), call.grad_gates.mutable_data_ptr<scalar_t>(), call.N,
          call.P, call.C, call.HW, group_size);
    });
  });
  return {call.grad_features, call.grad_gates};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CPU, m) {
  m.impl("adaptive_aggregation", TORCH_FN(adaptive_aggregation_cpu));
  m.impl("adaptive_aggregation_backward", TORCH_FN(adaptive_aggregation_backward_cpu));
}

}  // namespace amanet
