// Autograd kernel of amanet::uv_interp_loss: differentiable in u and v (the predicted maps);
// the point data (coordinates, targets, indices) are constants of the loss and must not require
// grad. Backward recomputes the 4-corner weights instead of saving them (K is small) and asks
// only for the gradients of the maps that need one.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <tuple>

namespace amanet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

using LossSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                           double);
using BackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                       int64_t, double, std::array<bool, 2>);

at::Tensor call_forward(const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index, const at::Tensor& x,
                        const at::Tensor& y, const at::Tensor& part, const at::Tensor& target_u,
                        const at::Tensor& target_v, int64_t mode, double beta) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("amanet::uv_interp_loss", "").typed<LossSig>();
  return op.call(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
                                                 const at::Tensor& roi_index, const at::Tensor& x,
                                                 const at::Tensor& y, const at::Tensor& part,
                                                 const at::Tensor& target_u, const at::Tensor& target_v,
                                                 int64_t mode, double beta, std::array<bool, 2> output_mask) {
  static auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("amanet::uv_interp_loss_backward", "").typed<BackwardSig>();
  return op.call(grad, u, v, roi_index, x, y, part, target_u, target_v, mode, beta, output_mask);
}

class UVInterpLossFunction : public torch::autograd::Function<UVInterpLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& u, const Variable& v, const Variable& roi_index,
                               const Variable& x, const Variable& y, const Variable& part, const Variable& target_u,
                               const Variable& target_v, int64_t mode, double beta) {
    for (const auto& [name, t] : {std::pair<const char*, const Variable*>{"x", &x}, {"y", &y},
                                  {"target_u", &target_u}, {"target_v", &target_v}}) {
      TORCH_CHECK(!t->requires_grad(), "uv_interp_loss: ", name,
                  " requires grad, but the loss is differentiable in u and v only; pass ", name, ".detach()");
    }
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor loss = call_forward(u, v, roi_index, x, y, part, target_u, target_v, mode, beta);
    ctx->save_for_backward({u, v, roi_index, x, y, part, target_u, target_v});
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["beta"] = beta;
    return {loss};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    // Only the maps that need a gradient get one (no dense zero map for a constant u or v).
    const std::array<bool, 2> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    auto [grad_u, grad_v] = call_backward(grad_outputs[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
                                          ctx->saved_data["mode"].toInt(), ctx->saved_data["beta"].toDouble(), mask);
    return {grad_u, grad_v, Variable(), Variable(), Variable(), Variable(), Variable(), Variable(),
            Variable(), Variable()};
  }
};

at::Tensor uv_interp_loss_autograd(const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
                                   const at::Tensor& x, const at::Tensor& y, const at::Tensor& part,
                                   const at::Tensor& target_u, const at::Tensor& target_v, int64_t mode,
                                   double beta) {
  return UVInterpLossFunction::apply(u, v, roi_index, x, y, part, target_u, target_v, mode, beta)[0];
}

// The backward op is not differentiable. It is not wrapped in a torch::autograd::Function
// because one of its outputs may be undefined (output_mask); like ATen's ops without a
// derivative, its outputs get an Error node when a graph is being recorded.
std::tuple<at::Tensor, at::Tensor> uv_interp_loss_backward_autograd(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& part, const at::Tensor& target_u,
    const at::Tensor& target_v, int64_t mode, double beta, std::array<bool, 2> output_mask) {
  at::Tensor grad_u, grad_v;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(grad_u, grad_v) =
        call_backward(grad, u, v, roi_index, x, y, part, target_u, target_v, mode, beta, output_mask);
  }
  if (torch::autograd::compute_requires_grad(grad, u, v)) {
    auto node = c10::make_intrusive<torch::autograd::Error>(
        "amanet::uv_interp_loss: double backward is not supported", torch::autograd::collect_next_edges(grad, u, v));
    torch::autograd::set_history(std::vector<at::Tensor>{grad_u, grad_v}, node);
  }
  return {grad_u, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, Autograd, m) {
  m.impl("uv_interp_loss", TORCH_FN(uv_interp_loss_autograd));
  m.impl("uv_interp_loss_backward", TORCH_FN(uv_interp_loss_backward_autograd));
}

}  // namespace amanet
