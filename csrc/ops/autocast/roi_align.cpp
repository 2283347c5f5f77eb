// Autocast kernels of amanet::roi_align(_backward): rois in float32, the features / gradient in
// their own dtype (the kernels sample and accumulate in float32 for float16 / bfloat16 maps, so
// the whole FPN level is never copied to float32 just to pool a few RoIs; see autocast.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "autocast.h"

namespace amanet {
namespace {

template <c10::DispatchKey Key, c10::DeviceType Device>
at::Tensor roi_align_autocast(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                              bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t,
                                         int64_t, int64_t, bool)>();
  return op.call(input, autocast::to_float(rois, Device), spatial_scale, pooled_height,
                 pooled_width, sampling_ratio, aligned);
}

template <c10::DispatchKey Key, c10::DeviceType Device>
at::Tensor roi_align_backward_autocast(const at::Tensor& grad, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height,
                                       int64_t pooled_width, int64_t batch_size, int64_t channels,
                                       int64_t height, int64_t width, int64_t sampling_ratio,
                                       bool aligned) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::roi_align_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t,
                                         int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                         bool)>();
  return op.call(grad, autocast::to_float(rois, Device), spatial_scale, pooled_height,
                 pooled_width, batch_size, channels, height, width, sampling_ratio, aligned);
}

}  // namespace

AMANET_AUTOCAST_KERNEL("roi_align", roi_align_autocast)
AMANET_AUTOCAST_KERNEL("roi_align_backward", roi_align_backward_autocast)

}  // namespace amanet
