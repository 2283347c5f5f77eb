#pragma once
// UV-interpolation loss (DensePose U/V smooth-L1 at annotated points): the per-point math,
// shared by the CPU loops (cpu/uv_interp_loss.cpp) and the CUDA kernels (cuda/uv_interp_loss.cu).
//
// A point k has grid coordinates (x_k, y_k) in its RoI's H x W output grid (already scaled:
// g = (px - x0) * W / w), a RoI index and a part (1..24, 0 = ignored). Per axis of size S:
//   lo = clamp(floor(g), 0, S-1),  hi = min(lo + 1, S-1),  w = min(hi, g) - lo
// (no half-pixel shift), and the 4-corner weights
//   w00 = (1-wx)(1-wy) [y_lo, x_lo], w01 = wx(1-wy) [y_lo, x_hi],
//   w10 = (1-wx) wy    [y_hi, x_lo], w11 = wx wy    [y_hi, x_hi].
// mode 0 (AMANet): every point with part > 0 counts; outside the grid the clamped rule applies
//   as is (g < 0 extrapolates with a negative w, g > S-1 reads the last row/column).
// mode 1 (Detectron2 s1x, BilinearInterpolationHelper.from_matches): the same weights, and a
//   point counts only when 0 <= g < S on both axes (Detectron2's j_valid: the point lies in the
//   estimated box, tested there as 0 <= v - x0 < w before scaling).
// loss = sum over counted points of smooth_l1(u_est - u_gt) + smooth_l1(v_est - v_gt),
// smooth_l1(d) = |d| < beta ? 0.5 d^2 / beta : |d| - 0.5 beta  (beta = 0: |d|).
//
// Minimum memory traffic (K points, E = sizeof(scalar)):
//   forward:  read the point arrays (roi_index, part: int64; x, y, u_gt, v_gt) = K*(16 + 4E)
//             and 8 gathered values = 8*K*E (in practice up to 8 cache lines per point: the
//             U/V maps are never streamed); write one scalar.
//   backward: the same point reads and gathers, plus dU and dV = 2*N*C*H*W*E written
//             (zeroed, then 8 scattered adds per point; the CPU kernel zeroes a plane and adds
//             its points while it is in L1): the dense zero fill of the two
//             gradient maps is the floor, and the fused op writes them once, and only for the
//             maps that need a gradient (the unfused autograd materialises one zero map per
//             gather, 8 in all, and sums them). The maps are read in place with their strides
//             (no .contiguous() copy: an expanded zero map costs nothing).
#include "host_device.h"

namespace amanet {
namespace uv_loss {

constexpr int kModeAmanet = 0;
constexpr int kModeDetectron2 = 1;

template <typename T>
struct Axis {
  int64_t lo;
  int64_t hi;
  T w;
  bool inside;
};

template <typename T>
AMANET_HOST_DEVICE inline Axis<T> axis(T g, int64_t size) {
  Axis<T> a;
  const T fl = hd_floor(g);
  const T top = static_cast<T>(size - 1);
  // clamp in floating point (NaN -> 0) before the integer conversion
  const T clamped = !(fl >= T(0)) ? T(0) : (fl > top ? top : fl);
  a.lo = static_cast<int64_t>(clamped);
  a.hi = a.lo + 1 < size ? a.lo + 1 : size - 1;
  const T hi = static_cast<T>(a.hi);
  const T m = (g < hi || g != g) ? g : hi;  // min(hi, g), NaN propagates like torch.min
  a.w = m - static_cast<T>(a.lo);
  a.inside = g >= T(0) && g < static_cast<T>(size);
  return a;
}

template <typename T>
struct Corners {
  int64_t x_lo, x_hi, y_lo, y_hi;
  T w00, w01, w10, w11;  // [y_lo, x_lo], [y_lo, x_hi], [y_hi, x_lo], [y_hi, x_hi]
  bool counted;          // the point contributes to the loss
};

template <typename T>
AMANET_HOST_DEVICE inline Corners<T> corners(T x, T y, int64_t part, int64_t H, int64_t W, int mode) {
  const Axis<T> ax = axis(x, W);
  const Axis<T> ay = axis(y, H);
  Corners<T> c;
  c.x_lo = ax.lo;
  c.x_hi = ax.hi;
  c.y_lo = ay.lo;
  c.y_hi = ay.hi;
  c.w00 = (T(1) - ax.w) * (T(1) - ay.w);
  c.w01 = ax.w * (T(1) - ay.w);
  c.w10 = (T(1) - ax.w) * ay.w;
  c.w11 = ax.w * ay.w;
  c.counted = part > 0 && (mode != kModeDetectron2 || (ax.inside && ay.inside));
  return c;
}

// Bilinear value at the point from the [H, W] plane `z` (strides sh, sw, any layout), the four
// products summed in Detectron2's order (ylo-xlo, ylo-xhi, yhi-xlo, yhi-xhi).
template <typename T, typename S>
AMANET_HOST_DEVICE inline T sample(const S* z, int64_t sh, int64_t sw, const Corners<T>& c) {
  const T z00 = static_cast<T>(z[c.y_lo * sh + c.x_lo * sw]);
  const T z01 = static_cast<T>(z[c.y_lo * sh + c.x_hi * sw]);
  const T z10 = static_cast<T>(z[c.y_hi * sh + c.x_lo * sw]);
  const T z11 = static_cast<T>(z[c.y_hi * sh + c.x_hi * sw]);
  return z00 * c.w00 + z01 * c.w01 + z10 * c.w10 + z11 * c.w11;
}

template <typename T>
AMANET_HOST_DEVICE inline T smooth_l1(T d, T beta) {
  const T z = hd_abs(d);
  if (beta == T(0)) return z;
  return z < beta ? T(0.5) * z * z / beta : z - T(0.5) * beta;
}

// d smooth_l1 / d d (torch's convention: sign(d) for beta = 0, 0 at d = 0).
template <typename T>
AMANET_HOST_DEVICE inline T smooth_l1_grad(T d, T beta) {
  if (beta == T(0)) return d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0));
  return d <= -beta ? T(-1) : (d >= beta ? T(1) : d / beta);
}

}  // namespace uv_loss
}  // namespace amanet
