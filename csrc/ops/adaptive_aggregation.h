#pragma once
// Host-side contract of amanet::adaptive_aggregation / adaptive_aggregation_backward: the input
// checks every device kernel runs first, the output shapes, and the preparation both device
// implementations share (contiguous inputs, allocated outputs, the cases with nothing to
// compute); the math itself is in common/adaptive_aggregation.h.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <optional>
#include <type_traits>
#include <vector>

namespace amanet {

inline void check_adaptive_aggregation_inputs(const at::Tensor& features, const at::Tensor& gates,
                                              int64_t group_size) {
  TORCH_CHECK(features.dim() == 5,
              "adaptive_aggregation: features must be [N, P, C, H, W], got a tensor of shape ",
              features.sizes());
  TORCH_CHECK(gates.dim() == 3, "adaptive_aggregation: gates must be [N, P, C], got a tensor of shape ",
              gates.sizes());
  TORCH_CHECK(gates.size(0) == features.size(0) && gates.size(1) == features.size(1) &&
                  gates.size(2) == features.size(2),
              "adaptive_aggregation: gates ", gates.sizes(), " do not match features ", features.sizes(),
              " (expected gates [N, P, C] = [", features.size(0), ", ", features.size(1), ", ",
              features.size(2), "])");
  TORCH_CHECK(at::isFloatingType(features.scalar_type()),
              "adaptive_aggregation: features must be a floating tensor, got ", features.scalar_type());
  TORCH_CHECK(gates.scalar_type() == features.scalar_type(),
              "adaptive_aggregation: gates dtype ", gates.scalar_type(), " must match features dtype ",
              features.scalar_type());
  TORCH_CHECK(gates.device() == features.device(), "adaptive_aggregation: gates are on ", gates.device(),
              " but features are on ", features.device());
  TORCH_CHECK(group_size >= 0 && (group_size == 0 || features.size(1) % group_size == 0),
              "adaptive_aggregation: group_size must be 0 (no group sums) or divide the number of paths P = ",
              features.size(1), ", got ", group_size);
}

// [N, P / group_size, C, H, W]: the shape of the group sums (group_size > 0).
inline std::vector<int64_t> aggregation_groups_shape(const at::Tensor& features, int64_t group_size) {
  return {features.size(0), features.size(1) / group_size, features.size(2), features.size(3),
          features.size(4)};
}

inline void check_adaptive_aggregation_grads(const std::optional<at::Tensor>& grad_groups,
                                             const std::optional<at::Tensor>& grad_summed,
                                             const at::Tensor& features, int64_t group_size) {
  if (grad_groups.has_value() && grad_groups->defined() && grad_groups->numel() > 0) {
    TORCH_CHECK(group_size > 0,
                "adaptive_aggregation_backward: grad_groups given but group_size is 0 (no group sums)");
    const auto expected = aggregation_groups_shape(features, group_size);
    TORCH_CHECK(grad_groups->sizes() == at::IntArrayRef(expected), "adaptive_aggregation_backward: grad_groups ",
                grad_groups->sizes(), " must be [N, P / group_size, C, H, W] = ", at::IntArrayRef(expected));
    TORCH_CHECK(grad_groups->scalar_type() == features.scalar_type() && grad_groups->device() == features.device(),
                "adaptive_aggregation_backward: grad_groups must have the dtype and device of features");
  }
  if (grad_summed.has_value() && grad_summed->defined()) {
    const auto f = features.sizes();
    TORCH_CHECK(grad_summed->dim() == 4 && grad_summed->size(0) == f[0] && grad_summed->size(1) == f[2] &&
                    grad_summed->size(2) == f[3] && grad_summed->size(3) == f[4],
                "adaptive_aggregation_backward: grad_summed ", grad_summed->sizes(),
                " must be [N, C, H, W] = [", f[0], ", ", f[2], ", ", f[3], ", ", f[4], "]");
    TORCH_CHECK(grad_summed->scalar_type() == features.scalar_type() && grad_summed->device() == features.device(),
                "adaptive_aggregation_backward: grad_summed must have the dtype and device of features");
  }
}

// A gradient that is absent, undefined or empty (the [0] placeholder of group_size = 0)
// contributes nothing.
inline bool aggregation_grad_present(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() && t->numel() > 0;
}

// A forward call made ready for a kernel (on the caller's device guard). `done`: the outputs
// are already final (no paths: S = 0; or nothing to write).
struct AggregationForward {
  at::Tensor features, gates, groups, summed;
  int64_t N = 0, P = 0, C = 0, HW = 0;
  bool done = false;
};

inline AggregationForward prepare_aggregation_forward(const at::Tensor& features_in, const at::Tensor& gates_in,
                                                      int64_t group_size) {
  AggregationForward call;
  call.features = features_in.contiguous();
  call.gates = gates_in.contiguous();
  const at::Tensor& f = call.features;
  call.N = f.size(0), call.P = f.size(1), call.C = f.size(2), call.HW = f.size(3) * f.size(4);
  call.summed = at::empty({call.N, call.C, f.size(3), f.size(4)}, f.options());
  call.groups = group_size > 0 ? at::empty(aggregation_groups_shape(f, group_size), f.options())
                               : at::empty({0}, f.options());
  if (call.P == 0) call.summed.zero_();
  call.done = call.P == 0 || call.summed.numel() == 0;
  return call;
}

// A backward call made ready for a kernel. `done`: the gradients are already final (no
// upstream gradient: both zero; or an empty F: dF empty and dg = 0, every dg an empty sum).
struct AggregationBackward {
  at::Tensor features, gates, grad_groups, grad_summed, grad_features, grad_gates;
  bool has_groups = false, has_summed = false;
  int64_t N = 0, P = 0, C = 0, HW = 0;
  bool done = false;
};

inline AggregationBackward prepare_aggregation_backward(const std::optional<at::Tensor>& grad_groups_in,
                                                        const std::optional<at::Tensor>& grad_summed_in,
                                                        const at::Tensor& features_in, const at::Tensor& gates_in) {
  AggregationBackward call;
  call.has_groups = aggregation_grad_present(grad_groups_in);
  call.has_summed = aggregation_grad_present(grad_summed_in);
  if (!call.has_groups && !call.has_summed) {
    call.grad_features = at::zeros_like(features_in, at::MemoryFormat::Contiguous);
    call.grad_gates = at::zeros_like(gates_in, at::MemoryFormat::Contiguous);
    call.done = true;
    return call;
  }
  call.features = features_in.contiguous();
  call.gates = gates_in.contiguous();
  if (call.has_groups) call.grad_groups = grad_groups_in->contiguous();
  if (call.has_summed) call.grad_summed = grad_summed_in->contiguous();
  const at::Tensor& f = call.features;
  call.N = f.size(0), call.P = f.size(1), call.C = f.size(2), call.HW = f.size(3) * f.size(4);
  call.grad_features = at::empty_like(f);
  call.grad_gates = at::empty_like(call.gates);
  if (f.numel() == 0) {
    call.grad_gates.zero_();
    call.done = true;
  }
  return call;
}

// Calls `launch(std::bool_constant<with dS>{}, std::bool_constant<with dR>{})` for the backward
// kernel variant of `call` (at least one of the two upstream gradients is present).
template <typename Launch>
void dispatch_aggregation_backward(const AggregationBackward& call, Launch&& launch) {
  if (call.has_summed && call.has_groups) {
    launch(std::true_type{}, std::true_type{});
  } else if (call.has_summed) {
    launch(std::true_type{}, std::false_type{});
  } else {
    launch(std::false_type{}, std::true_type{});
  }
}

}  // namespace amanet
