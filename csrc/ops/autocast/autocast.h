#pragma once
// Autocast kernels of the amanet ops (torch.autocast on the CPU and on CUDA), torchvision's
// pattern: the kernel runs with its own autocast key excluded, casts the floating inputs to the
// dtype the op computes in and redispatches. `at::autocast::cached_cast` leaves float64,
// integer and other-device tensors alone, so a float64 call is never narrowed.
//
// Policy (why each op computes where it does):
//   nms, iuv_paste, uv_interp_loss(_backward): float32. Box coordinates of 800x1216 images need
//     float32 (bf16 has 8 mantissa bits: 4-8 px steps at those sizes); losses and
//     post-processing are summed / thresholded.
//   roi_align(_backward): rois in float32, features in their own dtype (the kernels read
//     float16 / bfloat16 maps and compute in float32), output in the features' dtype, so a
//     reduced-precision head stays reduced and no feature map is widened to be pooled.
//   adaptive_aggregation(_backward): the autocast dtype (bf16 on the CPU, fp16/bf16 on CUDA):
//     the op is bandwidth-bound, so halving its bytes is the speed-up; the kernels accumulate
//     in float32.
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace amanet {
namespace autocast {

// The dtype reduced-precision ops run in under autocast on `device`.
inline at::ScalarType lower_precision(c10::DeviceType device) {
  return at::autocast::get_autocast_dtype(device);
}

template <typename T>
inline auto to_float(const T& arg, c10::DeviceType device) {
  return at::autocast::cached_cast(at::kFloat, arg, device);
}

template <typename T>
inline auto to_lower(const T& arg, c10::DeviceType device) {
  return at::autocast::cached_cast(lower_precision(device), arg, device);
}

}  // namespace autocast
}  // namespace amanet

// Registers `kernel<Key, Device>` for op `name` under AutocastCPU and AutocastCUDA (a CPU-only
// torch has both keys too); the kernel template takes the dispatch key to exclude and the device
// type to cast for.
#define AMANET_AUTOCAST_KERNEL(name, kernel)                                                   \
  TORCH_LIBRARY_IMPL(amanet, AutocastCPU, m) {                                                \
    m.impl(name, TORCH_FN((kernel<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>)));    \
  }                                                                                           \
  TORCH_LIBRARY_IMPL(amanet, AutocastCUDA, m) {                                               \
    m.impl(name, TORCH_FN((kernel<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>)));  \
  }
