// CUDA kernels of amanet::roi_align(_backward): one thread per output element, the per-sample
// math of common/roi_align.h (torchvision's operation order). Half and bfloat16 tensors are read
// and written in their own type and computed in float; the backward of those accumulates in a
// float buffer (atomics on float, one rounding at the end). Note that nvcc contracts a * b + c
// into FMAs by default (as for torchvision's kernel), so GPU results are not bit-identical to
// the CPU kernel.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/roi_align.h"
#include "../roi_align.h"

namespace amanet {
namespace {

using namespace amanet::roi_align;

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

// rois are in the compute type T (see rois_for_kernel).
template <typename T>
__device__ inline RoiBins<T> roi_bins_at(const T* rois, int64_t k, T spatial_scale,
                                         int pooled_height, int pooled_width, int sampling_ratio,
                                         bool aligned) {
  const T* r = rois + k * 5;
  return make_roi_bins<T>(static_cast<T>(r[0]), static_cast<T>(r[1]), static_cast<T>(r[2]),
                          static_cast<T>(r[3]), static_cast<T>(r[4]), spatial_scale, pooled_height,
                          pooled_width, sampling_ratio, aligned);
}

template <typename scalar_t>
__global__ void roi_align_forward_kernel(int64_t total, const scalar_t* __restrict__ input,
                                         const compute_t<scalar_t>* __restrict__ rois,
                                         scalar_t* __restrict__ output,
                                         compute_t<scalar_t> spatial_scale, int batch_size,
                                         int channels, int height, int width, int pooled_height,
                                         int pooled_width, int sampling_ratio, bool aligned) {
  using T = compute_t<scalar_t>;
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)blockDim.x * gridDim.x) {
    const int pw = index % pooled_width;
    const int ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;
    const RoiBins<T> r = roi_bins_at(rois, k, spatial_scale, pooled_height, pooled_width,
                                     sampling_ratio, aligned);
    if (r.batch < 0 || r.batch >= batch_size) {  // (the host check raised already) stay in bounds
      output[index] = static_cast<scalar_t>(0);
      continue;
    }
    const scalar_t* plane = input + (r.batch * (int64_t)channels + c) * height * width;
    output[index] = static_cast<scalar_t>(pool_bin(plane, height, width, r, ph, pw));
  }
}

template <typename scalar_t>
__global__ void roi_align_backward_kernel(int64_t total, const scalar_t* __restrict__ grad,
                                          const compute_t<scalar_t>* __restrict__ rois,
                                          compute_t<scalar_t>* __restrict__ grad_input,
                                          compute_t<scalar_t> spatial_scale, int batch_size,
                                          int channels, int height, int width, int pooled_height,
                                          int pooled_width, int sampling_ratio, bool aligned) {
  using T = compute_t<scalar_t>;
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)blockDim.x * gridDim.x) {
    const int pw = index % pooled_width;
    const int ph = (index / pooled_width) % pooled_height;
    const int64_t c = (index / pooled_width / pooled_height) % channels;
    const int64_t k = index / pooled_width / pooled_height / channels;
    const RoiBins<T> r = roi_bins_at(rois, k, spatial_scale, pooled_height, pooled_width,
                                     sampling_ratio, aligned);
    if (r.batch < 0 || r.batch >= batch_size) continue;
    T* plane = grad_input + (r.batch * (int64_t)channels + c) * height * width;
    scatter_bin_grad(static_cast<T>(grad[index]), height, width, r, ph, pw,
                     [plane](int64_t offset, T value) { atomicAdd(plane + offset, value); });
  }
}

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                          bool aligned) {
  check_roi_align_inputs(input, rois, pooled_height, pooled_width);
  TORCH_CHECK(input.is_cuda(), "roi_align (CUDA kernel): input must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  at::Tensor output = at::zeros({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0) return output;
  TORCH_CHECK(height > 0 && width > 0, "roi_align: the input feature map is empty (", input.sizes(),
              ")");
  const at::Tensor input_ = input.contiguous();
  const at::Tensor rois_ = rois_for_kernel(rois, input.scalar_type());
  check_batch_indices("roi_align", rois_, input.size(0));
  const int64_t total = output.numel();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_cuda", [&] {
    using T = compute_t<scalar_t>;
    roi_align_forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, input_.const_data_ptr<scalar_t>(), rois_.const_data_ptr<T>(),
        output.mutable_data_ptr<scalar_t>(), static_cast<T>(spatial_scale),
        static_cast<int>(input.size(0)), static_cast<int>(channels), static_cast<int>(height),
        static_cast<int>(width), static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        static_cast<int>(sampling_ratio), aligned);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_height,
                                   int64_t pooled_width, int64_t batch_size, int64_t channels,
                                   int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned) {
  check_roi_align_backward_inputs(grad, rois, pooled_height, pooled_width, batch_size, channels,
                                  height, width);
  TORCH_CHECK(grad.is_cuda(), "roi_align_backward (CUDA kernel): grad must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad.device());
  const auto st = grad.scalar_type();
  const bool direct = st == at::kFloat || st == at::kDouble;
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width},
                                    grad.options().dtype(direct ? st : at::kFloat));
  if (grad.numel() == 0 || grad_input.numel() == 0) return grad_input.to(st);
  // bins of overlapping RoIs scatter into the same input pixels with atomicAdd: the float sums
  // depend on the order the threads run in
  at::globalContext().alertNotDeterministic("amanet::roi_align_backward (CUDA)");
  const at::Tensor grad_ = grad.contiguous();
  const at::Tensor rois_ = rois_for_kernel(rois, st);
  check_batch_indices("roi_align_backward", rois_, batch_size);
  const int64_t total = grad_.numel();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "roi_align_backward_cuda", [&] {
    using T = compute_t<scalar_t>;
    roi_align_backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, grad_.const_data_ptr<scalar_t>(), rois_.const_data_ptr<T>(),
        grad_input.mutable_data_ptr<T>(), static_cast<T>(spatial_scale),
        static_cast<int>(batch_size), static_cast<int>(channels), static_cast<int>(height),
        static_cast<int>(width), static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        static_cast<int>(sampling_ratio), aligned);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return direct ? grad_input : grad_input.to(st);
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CUDA, m) {
  m.impl("roi_align", TORCH_FN(roi_align_cuda));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_cuda));
}

}  // namespace amanet
