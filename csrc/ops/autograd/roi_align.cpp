// Autograd kernel of amanet::roi_align: a torch::autograd::Function, so backward works wherever
// the op is called (Python eager, TorchScript, C++). Only the input gets a gradient (rois are
// treated as constants, as in torchvision); the backward op has no derivative of its own.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace amanet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

at::Tensor call_forward(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                        int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                        bool aligned) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t,
                                         int64_t, int64_t, bool)>();
  return op.call(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned);
}

at::Tensor call_backward(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                         int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                         bool aligned) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amanet::roi_align_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t,
                                         int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                         bool)>();
  return op.call(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                 height, width, sampling_ratio, aligned);
}

class ROIAlignFunction : public torch::autograd::Function<ROIAlignFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& input, const Variable& rois,
                               double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                               int64_t sampling_ratio, bool aligned) {
    ctx->saved_data["spatial_scale"] = spatial_scale;
    ctx->saved_data["pooled_height"] = pooled_height;
    ctx->saved_data["pooled_width"] = pooled_width;
    ctx->saved_data["sampling_ratio"] = sampling_ratio;
    ctx->saved_data["aligned"] = aligned;
    ctx->saved_data["input_shape"] = input.sizes();
    ctx->save_for_backward({rois});
    at::AutoDispatchBelowADInplaceOrView guard;
    return {call_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                         aligned)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto rois = ctx->get_saved_variables()[0];
    const auto shape = ctx->saved_data["input_shape"].toIntVector();
    const at::Tensor grad_input = call_backward(
        grad_outputs[0], rois, ctx->saved_data["spatial_scale"].toDouble(),
        ctx->saved_data["pooled_height"].toInt(), ctx->saved_data["pooled_width"].toInt(), shape[0],
        shape[1], shape[2], shape[3], ctx->saved_data["sampling_ratio"].toInt(),
        ctx->saved_data["aligned"].toBool());
    return {grad_input,  Variable(), Variable(), Variable(), Variable(), Variable(), Variable()};
  }
};

class ROIAlignBackwardFunction : public torch::autograd::Function<ROIAlignBackwardFunction> {
 public:
  static variable_list forward(AutogradContext*, const Variable& grad, const Variable& rois,
                               double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                               int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                               int64_t sampling_ratio, bool aligned) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return {call_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                          channels, height, width, sampling_ratio, aligned)};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "amanet::roi_align: double backward is not supported");
  }
};

at::Tensor roi_align_autograd(const at::Tensor& input, const at::Tensor& rois,
                              double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                              int64_t sampling_ratio, bool aligned) {
  return ROIAlignFunction::apply(input, rois, spatial_scale, pooled_height, pooled_width,
                                 sampling_ratio, aligned)[0];
}

at::Tensor roi_align_backward_autograd(const at::Tensor& grad, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height,
                                       int64_t pooled_width, int64_t batch_size, int64_t channels,
                                       int64_t height, int64_t width, int64_t sampling_ratio,
                                       bool aligned) {
  return ROIAlignBackwardFunction::apply(grad, rois, spatial_scale, pooled_height, pooled_width,
                                         batch_size, channels, height, width, sampling_ratio,
                                         aligned)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, Autograd, m) {
  m.impl("roi_align", TORCH_FN(roi_align_autograd));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_autograd));
}

}  // namespace amanet
