// Autocast kernel of amanet::iuv_paste: chart post-processing in float32 (policy in autocast.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

#include "autocast.h"

namespace amanet {
namespace {

using PasteResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

template <c10::DispatchKey Key, c10::DeviceType Device>
PasteResult iuv_paste_autocast(const at::Tensor& fine, const at::Tensor& gate, const at::Tensor& u,
                               const at::Tensor& v, const at::Tensor& boxes, const at::Tensor& scores,
                               int64_t mode, double threshold, int64_t image_height,
                               int64_t image_width, bool whole_image) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(Key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::iuv_paste", "")
                       .typed<PasteResult(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          int64_t, double, int64_t, int64_t, bool)>();
  using autocast::to_float;
  return op.call(to_float(fine, Device), to_float(gate, Device), to_float(u, Device),
                 to_float(v, Device), to_float(boxes, Device), to_float(scores, Device), mode,
                 threshold, image_height, image_width, whole_image);
}

}  // namespace

AMANET_AUTOCAST_KERNEL("iuv_paste", iuv_paste_autocast)

}  // namespace amanet
