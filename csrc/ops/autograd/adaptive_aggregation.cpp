// Autograd kernel of amanet::adaptive_aggregation: a torch::autograd::Function, so backward
// works wherever the op is called (Python eager, TorchScript, C++), not only through Python.
// The backward op has no derivative of its own (double backward raises).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace amanet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& features, const at::Tensor& gates,
                                                int64_t group_size) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::adaptive_aggregation", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(features, gates, group_size);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const std::optional<at::Tensor>& grad_groups,
                                                 const std::optional<at::Tensor>& grad_summed,
                                                 const at::Tensor& features, const at::Tensor& gates,
                                                 int64_t group_size) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::adaptive_aggregation_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                           const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(grad_groups, grad_summed, features, gates, group_size);
}

std::optional<at::Tensor> maybe(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class AdaptiveAggregationFunction : public torch::autograd::Function<AdaptiveAggregationFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& features, const Variable& gates,
                               int64_t group_size) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [groups, summed] = call_forward(features, gates, group_size);
    ctx->save_for_backward({features, gates});
    ctx->saved_data["group_size"] = group_size;
    // An unused output gets an undefined gradient instead of a materialised zero tensor: the
    // backward kernel then skips that term (no group-sum-sized zeros when only S is used).
    ctx->set_materialize_grads(false);
    if (group_size == 0) ctx->mark_non_differentiable({groups});
    return {groups, summed};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_features, grad_gates] = call_backward(maybe(grad_outputs[0]), maybe(grad_outputs[1]), saved[0],
                                                     saved[1], ctx->saved_data["group_size"].toInt());
    return {grad_features, grad_gates, Variable()};
  }
};

class AdaptiveAggregationBackwardFunction
    : public torch::autograd::Function<AdaptiveAggregationBackwardFunction> {
 public:
  static variable_list forward(AutogradContext*, const std::optional<Variable>& grad_groups,
                               const std::optional<Variable>& grad_summed, const Variable& features,
                               const Variable& gates, int64_t group_size) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_features, grad_gates] = call_backward(grad_groups, grad_summed, features, gates, group_size);
    return {grad_features, grad_gates};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "amanet::adaptive_aggregation: double backward is not supported");
  }
};

std::tuple<at::Tensor, at::Tensor> adaptive_aggregation_autograd(const at::Tensor& features,
                                                                 const at::Tensor& gates, int64_t group_size) {
  auto out = AdaptiveAggregationFunction::apply(features, gates, group_size);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> adaptive_aggregation_backward_autograd(
    const std::optional<at::Tensor>& grad_groups, const std::optional<at::Tensor>& grad_summed,
    const at::Tensor& features, const at::Tensor& gates, int64_t group_size) {
  auto out = AdaptiveAggregationBackwardFunction::apply(grad_groups, grad_summed, features, gates, group_size);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, Autograd, m) {
  m.impl("adaptive_aggregation", TORCH_FN(adaptive_aggregation_autograd));
  m.impl("adaptive_aggregation_backward", TORCH_FN(adaptive_aggregation_backward_autograd));
}

}  // namespace amanet
