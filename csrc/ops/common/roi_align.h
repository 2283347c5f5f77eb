#pragma once
// ROIAlign (Mask R-CNN, average mode): the per-element math, shared by the CPU loops
// (cpu/roi_align.cpp) and the CUDA kernels (cuda/roi_align.cu).
//
//   input [N, C, H, W], rois [K, 5] rows (batch_index, x1, y1, x2, y2) in image coordinates
//   output[k, c, ph, pw] = mean over a grid_h x grid_w grid of sample points inside bin (ph, pw)
//                          of the bilinear interpolation of input[b_k, c] at that point
//
// Semantics and operation order are those of torchvision.ops.roi_align (the Caffe2/Detectron
// kernel), so float32/float64 results are bit-identical to torchvision's CPU kernel:
//   - aligned=True shifts the scaled box by -0.5 pixel (Detectron2 ROIAlignV2); aligned=False
//     forces the scaled box to at least 1x1 (legacy ROIAlign);
//   - sampling_ratio > 0: that many samples per bin side; <= 0: ceil(roi_size / pooled_size);
//   - a sample further than one pixel outside the map (or at a NaN coordinate) contributes 0,
//     one within [-1, 0] is clamped to the border;
//   - an empty grid (aligned=True, zero-size box) gives 0 (the mean divides by max(count, 1)).
// Every expression keeps torchvision's operand order and types (including the double literals
// `1. - ly` and `y >= -1.0`): float rounding depends on them.
//
// T is the compute type: float for float/half/bfloat16 tensors, double for double tensors.
#include <stdint.h>

#include "host_device.h"

namespace amanet {
namespace roi_align {

// Compute type for a storage type: double for double, float for float, half and bfloat16.
template <typename scalar_t>
struct ComputeType {
  using type = float;
};
template <>
struct ComputeType<double> {
  using type = double;
};
template <typename scalar_t>
using compute_t = typename ComputeType<scalar_t>::type;

template <typename T>
AMANET_HOST_DEVICE inline T hd_ceil(T v) {
#if defined(__CUDA_ARCH__)
  return ::ceil(v);
#else
  return std::ceil(v);
#endif
}

// std::max semantics ((a < b) ? b : a) on host and device.
template <typename T>
AMANET_HOST_DEVICE inline T hd_max(T a, T b) {
  return (a < b) ? b : a;
}

// One RoI mapped onto the feature map: bin sizes and the sampling grid per bin.
template <typename T>
struct RoiBins {
  int batch;     // rois[k, 0] truncated to int (as torchvision)
  T start_h;     // top-left corner of the RoI on the feature map
  T start_w;
  T bin_h;       // size of one output bin on the feature map
  T bin_w;
  int grid_h;    // sample points per bin (rows, columns)
  int grid_w;
  T count;       // max(grid_h * grid_w, 1): the divisor of the mean
};

template <typename T>
AMANET_HOST_DEVICE inline RoiBins<T> make_roi_bins(T batch, T x1, T y1, T x2, T y2, T spatial_scale,
                                                  int pooled_height, int pooled_width,
                                                  int sampling_ratio, bool aligned) {
  RoiBins<T> r;
  r.batch = static_cast<int>(batch);
  // No rounding anywhere: this detail is what makes the op "align".
  const T offset = aligned ? (T)0.5 : (T)0.0;
  r.start_w = x1 * spatial_scale - offset;
  r.start_h = y1 * spatial_scale - offset;
  const T end_w = x2 * spatial_scale - offset;
  const T end_h = y2 * spatial_scale - offset;
  T roi_width = end_w - r.start_w;
  T roi_height = end_h - r.start_h;
  if (!aligned) {
    // legacy behaviour: malformed RoIs are forced to 1x1
    roi_width = hd_max(roi_width, (T)1.);
    roi_height = hd_max(roi_height, (T)1.);
  }
  r.bin_h = static_cast<T>(roi_height) / static_cast<T>(pooled_height);
  r.bin_w = static_cast<T>(roi_width) / static_cast<T>(pooled_width);
  // (the conditional has type T before the conversion to int, as in torchvision)
  r.grid_h = (sampling_ratio > 0) ? sampling_ratio : hd_ceil(roi_height / pooled_height);
  r.grid_w = (sampling_ratio > 0) ? sampling_ratio : hd_ceil(roi_width / pooled_width);
  const int n = r.grid_h * r.grid_w;
  r.count = static_cast<T>(n > 1 ? n : 1);
  return r;
}

// Coordinate of sample `i` (of `grid`) inside bin `p` along one axis.
template <typename T>
AMANET_HOST_DEVICE inline T sample_coord(T start, int p, T bin_size, int i, int grid) {
  return start + p * bin_size + static_cast<T>(i + .5f) * bin_size / static_cast<T>(grid);
}

// Bilinear interpolation footprint of one sample point: 4 offsets into an H*W plane + weights.
template <typename T>
struct Bilinear {
  int64_t o1, o2, o3, o4;  // (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)
  T w1, w2, w3, w4;
};

// False when the sample contributes nothing (more than one pixel outside the map, or NaN).
template <typename T>
AMANET_HOST_DEVICE inline bool bilinear(int height, int width, T y, T x, Bilinear<T>& b) {
  // written as !(in range) so that NaN coordinates take this branch, not the int casts below
  if (!(y >= -1.0 && y <= height && x >= -1.0 && x <= width)) {
    return false;
  }
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int y_low = (int)y;
  int x_low = (int)x;
  int y_high;
  int x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = (T)y_low;
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = (T)x_low;
  } else {
    x_high = x_low + 1;
  }
  const T ly = y - y_low;
  const T lx = x - x_low;
  const T hy = 1. - ly, hx = 1. - lx;
  b.w1 = hy * hx;
  b.w2 = hy * lx;
  b.w3 = ly * hx;
  b.w4 = ly * lx;
  b.o1 = (int64_t)y_low * width + x_low;
  b.o2 = (int64_t)y_low * width + x_high;
  b.o3 = (int64_t)y_high * width + x_low;
  b.o4 = (int64_t)y_high * width + x_high;
  return true;
}

// The interpolated value of one sample on one channel plane (scalar_t storage, T arithmetic).
template <typename T, typename scalar_t>
AMANET_HOST_DEVICE inline T interpolate(const scalar_t* plane, const Bilinear<T>& b) {
  return b.w1 * static_cast<T>(plane[b.o1]) + b.w2 * static_cast<T>(plane[b.o2]) +
         b.w3 * static_cast<T>(plane[b.o3]) + b.w4 * static_cast<T>(plane[b.o4]);
}

// output[k, c, ph, pw] for one channel plane: the mean of the bin's samples.
template <typename T, typename scalar_t>
AMANET_HOST_DEVICE inline T pool_bin(const scalar_t* plane, int height, int width,
                                     const RoiBins<T>& r, int ph, int pw) {
  T sum = 0.;
  for (int iy = 0; iy < r.grid_h; iy++) {
    const T y = sample_coord(r.start_h, ph, r.bin_h, iy, r.grid_h);
    for (int ix = 0; ix < r.grid_w; ix++) {
      const T x = sample_coord(r.start_w, pw, r.bin_w, ix, r.grid_w);
      Bilinear<T> b;
      if (bilinear(height, width, y, x, b)) {
        sum += interpolate(plane, b);  // skipping a dead sample == adding torchvision's 0
      }
    }
  }
  return sum / r.count;
}

// Backward of one output element: calls add(offset, value) for the 4 taps of every sample, in
// torchvision's order (iy, ix, then taps 1..4); value = grad * w / count.
template <typename T, typename AddFn>
AMANET_HOST_DEVICE inline void scatter_bin_grad(T grad, int height, int width, const RoiBins<T>& r,
                                                int ph, int pw, AddFn&& add) {
  for (int iy = 0; iy < r.grid_h; iy++) {
    const T y = sample_coord(r.start_h, ph, r.bin_h, iy, r.grid_h);
    for (int ix = 0; ix < r.grid_w; ix++) {
      const T x = sample_coord(r.start_w, pw, r.bin_w, ix, r.grid_w);
      Bilinear<T> b;
      if (bilinear(height, width, y, x, b)) {
        add(b.o1, grad * b.w1 / r.count);
        add(b.o2, grad * b.w2 / r.count);
        add(b.o3, grad * b.w3 / r.count);
        add(b.o4, grad * b.w4 / r.count);
      }
    }
  }
}

}  // namespace roi_align
}  // namespace amanet
