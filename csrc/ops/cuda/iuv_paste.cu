// CUDA kernels of amanet::iuv_paste. The per-pixel math is common/iuv_paste.h (the same functions
// the CPU loop calls, with explicit __fmaf_rn / __fmul_rn so nvcc's contraction cannot change the
// arithmetic: the kernel reproduces the CPU reference's values bit for bit). Inputs are read in
// their dtype (float, double, half, bfloat16) and computed in float.
//
// 1. charts_kernel: one thread per chart pixel over all boxes (grid-stride over the flat pixel
//    index; the box is found by binary search in the offsets).
// 2. Whole image, deterministic and race-free without ordering assumptions between threads:
//    a. claim_kernel: for every foreground chart pixel inside the image, atomicMax(key[pixel],
//       N - rank[box]) where rank is the box's position in (score descending, index ascending)
//       order, computed on the host. Ranks are unique, so the maximum key names exactly one box:
//       the best-scored foreground, lower index on equal scores.
//    b. write_kernel: the chart pixel whose key equals the pixel's maximum writes (I, U, V); every
//       other box leaves the pixel alone, so each image pixel is written by at most one thread.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../common/iuv_paste.h"
#include "../iuv_paste.h"

namespace amanet {
namespace {

constexpr int kThreads = 256;

struct DevBoxes {
  const int64_t* boxes;    // N x (x, y, w, h)
  const int64_t* offsets;  // N + 1
  int64_t N;
};

// Box n with offsets[n] <= p < offsets[n + 1] (every box has >= 1 pixel).
__device__ __forceinline__ int64_t find_box(const DevBoxes& b, int64_t p) {
  int64_t lo = 0, hi = b.N;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) >> 1;
    if (b.offsets[mid] <= p) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

int64_t blocks_for(int64_t work) {
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 65535 * 8));
}

template <typename T>
__global__ void charts_kernel(const T* __restrict__ fine, const T* __restrict__ gate, const T* __restrict__ u,
                              const T* __restrict__ v, DevBoxes b, int64_t total, int64_t Sh, int64_t Sw,
                              int64_t mode, float threshold, iuv::Layout layout, uint8_t* __restrict__ charts) {
  const int64_t plane = Sh * Sw;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = find_box(b, p);
    const int64_t w = b.boxes[4 * n + 2], h = b.boxes[4 * n + 3];
    const int64_t off = b.offsets[n];
    const int64_t local = p - off;
    const int64_t oy = local / w, ox = local - oy * w;
    const iuv::Sample s = iuv::make_sample(iuv::source_tap(oy, Sh, h), iuv::source_tap(ox, Sw, w), Sw,
                                           iuv::is_small_output(h, w));
    const iuv::RoiInputs<T> in{fine + n * layout.K * plane, gate + n * layout.Cg * plane,
                               u + n * layout.K * plane, v + n * layout.K * plane, plane};
    uint8_t* I = charts + 3 * off;
    iuv::iuv_pixel(in, s, layout, mode, threshold, I[local], I[h * w + local], I[2 * h * w + local]);
  }
}

// Image pixel of chart pixel p of box n, or -1 when it falls outside the image.
__device__ __forceinline__ int64_t image_pixel(const DevBoxes& b, int64_t n, int64_t local, int64_t H,
                                               int64_t W) {
  const int64_t w = b.boxes[4 * n + 2];
  const int64_t iy = b.boxes[4 * n + 1] + local / w, ix = b.boxes[4 * n] + local % w;
  return (iy >= 0 && iy < H && ix >= 0 && ix < W) ? iy * W + ix : -1;
}

__global__ void claim_kernel(const uint8_t* __restrict__ charts, DevBoxes b, const int32_t* __restrict__ rank,
                             int64_t total, int64_t H, int64_t W, int32_t* __restrict__ keys) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = find_box(b, p);
    const int64_t local = p - b.offsets[n];
    if (charts[3 * b.offsets[n] + local] == 0) continue;
    const int64_t pix = image_pixel(b, n, local, H, W);
    if (pix >= 0) atomicMax(keys + pix, static_cast<int32_t>(b.N - rank[n]));
  }
}

__global__ void write_kernel(const uint8_t* __restrict__ charts, DevBoxes b, const int32_t* __restrict__ rank,
                             int64_t total, int64_t H, int64_t W, const int32_t* __restrict__ keys,
                             uint8_t* __restrict__ image) {
  const int64_t HW = H * W;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = find_box(b, p);
    const int64_t off = b.offsets[n], local = p - off;
    const int64_t hw = b.boxes[4 * n + 2] * b.boxes[4 * n + 3];
    const uint8_t* c = charts + 3 * off + local;
    if (c[0] == 0) continue;
    const int64_t pix = image_pixel(b, n, local, H, W);
    if (pix < 0 || keys[pix] != static_cast<int32_t>(b.N - rank[n])) continue;
    image[pix] = c[0];
    image[HW + pix] = c[hw];
    image[2 * HW + pix] = c[2 * hw];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> iuv_paste_cuda(
    const at::Tensor& fine, const at::Tensor& gate, const at::Tensor& u, const at::Tensor& v,
    const at::Tensor& boxes, const at::Tensor& scores, int64_t mode, double threshold, int64_t image_height,
    int64_t image_width, bool whole_image) {
  const IuvPastePlan plan =
      plan_iuv_paste(fine, gate, u, v, boxes, scores, mode, image_height, image_width);
  TORCH_CHECK(plan.N < (int64_t(1) << 30), "iuv_paste: too many boxes (", plan.N, ")");
  c10::cuda::CUDAGuard guard(fine.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const auto u8 = fine.options().dtype(at::kByte);

  at::Tensor offsets_cpu = at::empty({plan.N + 1}, at::TensorOptions().dtype(at::kLong));
  std::copy(plan.offsets.begin(), plan.offsets.end(), offsets_cpu.data_ptr<int64_t>());
  at::Tensor rank_cpu = at::empty({std::max<int64_t>(plan.N, 1)}, at::TensorOptions().dtype(at::kInt));
  std::copy(plan.rank.begin(), plan.rank.end(), rank_cpu.data_ptr<int32_t>());
  const at::Tensor offsets = offsets_cpu.to(fine.device());
  const at::Tensor rank = rank_cpu.to(fine.device());
  const at::Tensor boxes_c = boxes.contiguous();
  const DevBoxes b{boxes_c.const_data_ptr<int64_t>(), offsets.const_data_ptr<int64_t>(), plan.N};

  at::Tensor charts = at::empty({3 * plan.total_pixels}, u8);
  if (plan.total_pixels > 0) {
    const at::Tensor fine_c = fine.contiguous(), gate_c = gate.contiguous(), u_c = u.contiguous(),
                     v_c = v.contiguous();
    const iuv::Layout layout = iuv::make_layout(mode, plan.K, plan.Cg, aten_float_vector_width());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fine.scalar_type(), "iuv_paste_cuda", [&] {
      charts_kernel<scalar_t><<<blocks_for(plan.total_pixels), kThreads, 0, stream>>>(
          fine_c.const_data_ptr<scalar_t>(), gate_c.const_data_ptr<scalar_t>(), u_c.const_data_ptr<scalar_t>(),
          v_c.const_data_ptr<scalar_t>(), b, plan.total_pixels, plan.Sh, plan.Sw, mode,
          static_cast<float>(threshold), layout, charts.data_ptr<uint8_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  at::Tensor image;
  if (whole_image) {
    image = at::zeros({3, image_height, image_width}, u8);
    if (plan.total_pixels > 0 && image_height > 0 && image_width > 0) {
      at::Tensor keys = at::zeros({image_height * image_width}, fine.options().dtype(at::kInt));
      claim_kernel<<<blocks_for(plan.total_pixels), kThreads, 0, stream>>>(
          charts.const_data_ptr<uint8_t>(), b, rank.const_data_ptr<int32_t>(), plan.total_pixels, image_height,
          image_width, keys.data_ptr<int32_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      write_kernel<<<blocks_for(plan.total_pixels), kThreads, 0, stream>>>(
          charts.const_data_ptr<uint8_t>(), b, rank.const_data_ptr<int32_t>(), plan.total_pixels, image_height,
          image_width, keys.const_data_ptr<int32_t>(), image.data_ptr<uint8_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  } else {
    image = at::empty({0}, u8);
  }
  return {charts, offsets, image};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CUDA, m) {
  m.impl("iuv_paste", TORCH_FN(iuv_paste_cuda));
}

}  // namespace amanet
