#pragma once
// Host-side contract of amanet::adaptive_aggregation / adaptive_aggregation_backward: the input
// checks every device kernel runs first (the math itself is in common/adaptive_aggregation.h).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace amanet {

inline void check_adaptive_aggregation_inputs(const at::Tensor& features, const at::Tensor& gates) {
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
}

inline void check_adaptive_aggregation_grads(const std::optional<at::Tensor>& grad_gated,
                                             const std::optional<at::Tensor>& grad_summed,
                                             const at::Tensor& features) {
  if (grad_gated.has_value() && grad_gated->defined()) {
    TORCH_CHECK(grad_gated->sizes() == features.sizes(), "adaptive_aggregation_backward: grad_gated ",
                grad_gated->sizes(), " must match features ", features.sizes());
    TORCH_CHECK(grad_gated->scalar_type() == features.scalar_type() && grad_gated->device() == features.device(),
                "adaptive_aggregation_backward: grad_gated must have the dtype and device of features");
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

// A gradient that is absent, undefined or empty (the [0] placeholder G of need_gated=false)
// contributes nothing.
inline bool aggregation_grad_present(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() && t->numel() > 0;
}

}  // namespace amanet
