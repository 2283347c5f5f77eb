// Autocast kernels of amanet::uv_interp_loss(_backward): the loss and its gradients in float32
// (policy in autocast.h). Autograd sees the casts, so a reduced-precision U/V gets its gradient
// back in its own dtype.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "autocast.h"

namespace amanet {
namespace {

using autocast::to_float;

template <c10::DispatchKey Key, c10::DeviceType Device>
at::Tensor uv_interp_loss_autocast(const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
                                   const at::Tensor& x, const at::Tensor& y, const at::Tensor& part,
                                   const at::Tensor& target_u, const at::Tensor& target_v, int64_t mode,
                                   double beta) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::uv_interp_loss", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, int64_t, double)>();
  return op.call(to_float(u, Device), to_float(v, Device), roi_index, to_float(x, Device),
                 to_float(y, Device), part, to_float(target_u, Device), to_float(target_v, Device),
                 mode, beta);
}

template <c10::DispatchKey Key, c10::DeviceType Device>
std::tuple<at::Tensor, at::Tensor> uv_interp_loss_backward_autocast(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& part, const at::Tensor& target_u,
    const at::Tensor& target_v, int64_t mode, double beta, std::array<bool, 2> output_mask) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::uv_interp_loss_backward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, int64_t, double, std::array<bool, 2>)>();
  return op.call(to_float(grad, Device), to_float(u, Device), to_float(v, Device), roi_index,
                 to_float(x, Device), to_float(y, Device), part, to_float(target_u, Device),
                 to_float(target_v, Device), mode, beta, output_mask);
}

}  // namespace

AMANET_AUTOCAST_KERNEL("uv_interp_loss", uv_interp_loss_autocast)
AMANET_AUTOCAST_KERNEL("uv_interp_loss_backward", uv_interp_loss_backward_autocast)

}  // namespace amanet
