// Autocast kernel of amanet::nms: IoUs of float32 boxes (policy in autocast.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "autocast.h"

namespace amanet {
namespace {

template <c10::DispatchKey Key, c10::DeviceType Device>
at::Tensor nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::nms", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(autocast::to_float(boxes, Device), autocast::to_float(scores, Device), iou_threshold);
}

}  // namespace

AMANET_AUTOCAST_KERNEL("nms", nms_autocast)

}  // namespace amanet
