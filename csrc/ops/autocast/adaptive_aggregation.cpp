// Autocast kernels of amanet::adaptive_aggregation(_backward): run in the autocast dtype (bf16
// on the CPU, fp16 / bf16 on CUDA) with float32 accumulation inside the kernels; the op is
// bandwidth-bound, so half the bytes is the speed-up (policy in autocast.h). Gates usually
// arrive in float32 from a softmax and features in the reduced dtype from a conv: both are cast
// to the autocast dtype, so the two always match.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autocast.h"

namespace amanet {
namespace {

using Pair = std::tuple<at::Tensor, at::Tensor>;
using autocast::to_lower;

template <c10::DispatchKey Key, c10::DeviceType Device>
Pair adaptive_aggregation_autocast(const at::Tensor& features, const at::Tensor& gates, int64_t group_size) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::adaptive_aggregation", "")
                       .typed<Pair(const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(to_lower(features, Device), to_lower(gates, Device), group_size);
}

template <c10::DispatchKey Key, c10::DeviceType Device>
Pair adaptive_aggregation_backward_autocast(const std::optional<at::Tensor>& grad_groups,
                                            const std::optional<at::Tensor>& grad_summed,
                                            const at::Tensor& features, const at::Tensor& gates,
                                            int64_t group_size) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::adaptive_aggregation_backward", "")
                       .typed<Pair(const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                   const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(to_lower(grad_groups, Device), to_lower(grad_summed, Device), to_lower(features, Device),
                 to_lower(gates, Device), group_size);
}

}  // namespace

AMANET_AUTOCAST_KERNEL("adaptive_aggregation", adaptive_aggregation_autocast)
AMANET_AUTOCAST_KERNEL("adaptive_aggregation_backward", adaptive_aggregation_backward_autocast)

}  // namespace amanet
