#pragma once
// Fused IUV paste (DensePose chart post-processing): the per-pixel math, shared by the CPU loop
// (cpu/iuv_paste.cpp) and the CUDA kernel (cuda/iuv_paste.cu).
//
// For output pixel (oy, ox) of box n (chart size h x w, RoI outputs S_h x S_w):
//   1. source taps along each axis (ATen upsample_bilinear2d, align_corners=False): `source_tap`;
//   2. the 25 fine-I channels are sampled and arg-maxed (first maximum wins, NaN counts as the
//      maximum, like torch.argmax): `argmax_update`;
//   3. the gate: s1x (mode 0) argmax over the sampled coarse channels > 0; AMANet (mode 1)
//      softmax over the sampled body-mask channels, [1] > threshold: `gate_s1x_values`,
//      `gate_amanet_values` (`gate_pixel` samples and decides);
//   4. U and V are sampled only at the winning channel and coded as uint8(clamp(255 * value)),
//      truncated; all three are 0 where the label is 0: `uv_code`. `iuv_pixel` is steps 1-4 for
//      one pixel (the CUDA kernel); the CPU loop runs the same primitives over column blocks.
//
// Bit-exactness with the reference (amanet/modeling/postprocess.py, which concatenates the RoI
// outputs to one [C, S, S] tensor, C = 3K + Cg, and calls F.interpolate on the CPU). ATen's CPU
// kernel (AVX2 build, GCC with FMA contraction) computes, as measured on torch 2.14 and
// reproduced here with explicit fused multiply-adds:
//   scale = float(S) / float(out);  src = fma(scale, float(o) + 0.5f, -0.5f), clamped below at 0
//   i0 = min(floor(src), S - 1);  i1 = i0 + (i0 < S - 1);  l1 = clamp(src - i0, 0, 1); l0 = 1 - l1
//   (identity taps i0 = i1 = o, l0 = 1, l1 = 0 when out == S);
//   - out_h + out_w > 128 (the generic separable kernel, width first):
//       t0 = fma(x00, l0x, x01 * l1x);  t1 = fma(x10, l0x, x11 * l1x);  v = fma(t0, l0y, t1 * l1y)
//   - out_h + out_w <= 128 (ATen switches to its channels-last kernel), w_ab = ly_a * lx_b:
//       channels in whole vectors:  v = fma(x00, w00, fma(x01, w01, fma(x11, w11, x10 * w10)))
//       the scalar tail channels:   v = fma(x11, w11, fma(x10, w10, fma(x00, w00, x01 * w01)))
//     where the tail is the last C % vec_width channels of the concatenation (vec_width = 8 for
//     ATen's AVX2 build, assumed 16 for AVX512 (not runnable here)); `Layout` records each
//     tensor's position in it. The CUDA kernel runs the same formulas (__fmaf_rn / __fmul_rn, no
//     contraction), so on a GPU it reproduces the CPU reference, not ATen's CUDA interpolate.
// With ATen's default (non-FMA) CPU build, on other architectures, or against the CUDA reference,
// sampled values may differ from the reference by an ulp; labels then differ only at exact near-
// ties of the argmax and codes by at most 1. The AMANet gate uses the reference's softmax
// formula (max-subtracted exp, sum, divide) but ATen's vectorised exp may differ from expf by an
// ulp, so the threshold decision can differ only when softmax[1] is within ~1e-7 of it.
#include <cstdint>

#include "host_device.h"

#if defined(__CUDA_ARCH__)
#define AMANET_IUV_INLINE __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
// Forced so that the math is compiled inside the CPU loop's FMA-targeted clone (cpu/iuv_paste.cpp).
#define AMANET_IUV_INLINE inline __attribute__((always_inline))
#else
#define AMANET_IUV_INLINE inline
#endif

namespace amanet {
namespace iuv {

constexpr int64_t kModeS1x = 0;     // gate = argmax(coarse) > 0
constexpr int64_t kModeAmanet = 1;  // gate = softmax(body mask)[1] > threshold
constexpr int64_t kSmallOutput = 128;  // ATen's channels-last switch: out_h + out_w <= 128

// One rounding for a * b + c, on both devices (hardware FMA in the CPU loop's FMA clone).
AMANET_HOST_DEVICE AMANET_IUV_INLINE float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// A product the compiler must not contract into a neighbouring add (nvcc contracts by default).
AMANET_HOST_DEVICE AMANET_IUV_INLINE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

AMANET_HOST_DEVICE AMANET_IUV_INLINE bool is_nan(float v) { return v != v; }

// Source taps of output index `o` along an axis of `in_size` -> `out_size` samples.
struct Tap {
  int32_t i0, i1;
  float l0, l1;
};

AMANET_HOST_DEVICE AMANET_IUV_INLINE Tap source_tap(int64_t o, int64_t in_size, int64_t out_size) {
  Tap t;
  if (out_size == in_size) {
    t.i0 = t.i1 = static_cast<int32_t>(o);
    t.l0 = 1.f;
    t.l1 = 0.f;
    return t;
  }
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float src = fma_rn(scale, static_cast<float>(o) + 0.5f, -0.5f);
  if (src < 0.f) src = 0.f;
  int64_t i0 = static_cast<int64_t>(hd_floor(src));
  if (i0 > in_size - 1) i0 = in_size - 1;
  float l1 = src - static_cast<float>(i0);
  l1 = l1 < 0.f ? 0.f : (l1 > 1.f ? 1.f : l1);
  t.i0 = static_cast<int32_t>(i0);
  t.i1 = static_cast<int32_t>(i0 < in_size - 1 ? i0 + 1 : i0);
  t.l1 = l1;
  t.l0 = 1.f - l1;
  return t;
}

// The four corners and weights of one output pixel; `small` selects ATen's channels-last formulas.
struct Sample {
  int64_t o00, o01, o10, o11;  // offsets inside one [S_h, S_w] plane
  float ly0, ly1, lx0, lx1;    // separable weights (generic kernel)
  float w00, w01, w10, w11;    // product weights (channels-last kernel)
  bool small;
};

AMANET_HOST_DEVICE AMANET_IUV_INLINE Sample make_sample(const Tap& ty, const Tap& tx, int64_t in_w,
                                                         bool small) {
  Sample s;
  s.o00 = static_cast<int64_t>(ty.i0) * in_w + tx.i0;
  s.o01 = static_cast<int64_t>(ty.i0) * in_w + tx.i1;
  s.o10 = static_cast<int64_t>(ty.i1) * in_w + tx.i0;
  s.o11 = static_cast<int64_t>(ty.i1) * in_w + tx.i1;
  s.ly0 = ty.l0;
  s.ly1 = ty.l1;
  s.lx0 = tx.l0;
  s.lx1 = tx.l1;
  s.w00 = mul_rn(ty.l0, tx.l0);
  s.w01 = mul_rn(ty.l0, tx.l1);
  s.w10 = mul_rn(ty.l1, tx.l0);
  s.w11 = mul_rn(ty.l1, tx.l1);
  s.small = small;
  return s;
}

AMANET_HOST_DEVICE AMANET_IUV_INLINE bool is_small_output(int64_t out_h, int64_t out_w) {
  return out_h + out_w <= kSmallOutput;
}

// The three arithmetic forms of ATen's bilinear value from the four corners (file comment).
AMANET_HOST_DEVICE AMANET_IUV_INLINE float bilinear_generic(float x00, float x01, float x10, float x11, float ly0,
                                                           float ly1, float lx0, float lx1) {
  const float t0 = fma_rn(x00, lx0, mul_rn(x01, lx1));
  const float t1 = fma_rn(x10, lx0, mul_rn(x11, lx1));
  return fma_rn(t0, ly0, mul_rn(t1, ly1));
}

AMANET_HOST_DEVICE AMANET_IUV_INLINE float bilinear_cl_vector(float x00, float x01, float x10, float x11,
                                                             float w00, float w01, float w10, float w11) {
  return fma_rn(x00, w00, fma_rn(x01, w01, fma_rn(x11, w11, mul_rn(x10, w10))));
}

AMANET_HOST_DEVICE AMANET_IUV_INLINE float bilinear_cl_tail(float x00, float x01, float x10, float x11, float w00,
                                                           float w01, float w10, float w11) {
  return fma_rn(x11, w11, fma_rn(x10, w10, fma_rn(x00, w00, mul_rn(x01, w01))));
}

// Bilinear value of one channel plane (any input dtype, computed in float). `tail`: the channel
// is in the scalar tail of ATen's channels-last loop (see the file comment).
template <typename T>
AMANET_HOST_DEVICE AMANET_IUV_INLINE float sample(const T* plane, const Sample& s, bool tail) {
  const float x00 = static_cast<float>(plane[s.o00]);
  const float x01 = static_cast<float>(plane[s.o01]);
  const float x10 = static_cast<float>(plane[s.o10]);
  const float x11 = static_cast<float>(plane[s.o11]);
  if (!s.small) return bilinear_generic(x00, x01, x10, x11, s.ly0, s.ly1, s.lx0, s.lx1);
  return tail ? bilinear_cl_tail(x00, x01, x10, x11, s.w00, s.w01, s.w10, s.w11)
              : bilinear_cl_vector(x00, x01, x10, x11, s.w00, s.w01, s.w10, s.w11);
}

// Where each RoI tensor sits in the reference's channel concatenation (mode 0: [gate, fine, u, v];
// mode 1: [fine, u, v, gate]) and where ATen's channels-last scalar tail starts.
struct Layout {
  int64_t K, Cg;
  int64_t fine_pos, u_pos, v_pos, gate_pos;
  int64_t tail_start;
};

inline Layout make_layout(int64_t mode, int64_t K, int64_t Cg, int64_t vec_width) {
  Layout l;
  l.K = K;
  l.Cg = Cg;
  if (mode == kModeS1x) {
    l.gate_pos = 0;
    l.fine_pos = Cg;
  } else {
    l.fine_pos = 0;
    l.gate_pos = 3 * K;
  }
  l.u_pos = l.fine_pos + K;
  l.v_pos = l.fine_pos + 2 * K;
  const int64_t C = 3 * K + Cg;
  l.tail_start = C - C % vec_width;
  return l;
}

// torch.argmax rule for a running maximum: the first maximum wins, a NaN beats everything.
// Branch-free (selects), so the CPU loop over pixels vectorises.
AMANET_HOST_DEVICE AMANET_IUV_INLINE void argmax_update(float v, int32_t k, float& best, int32_t& best_k) {
  const bool take = (!is_nan(best)) & ((v > best) | is_nan(v));
  best = take ? v : best;
  best_k = take ? k : best_k;
}

// uint8 code of a U/V value: (value * 255).clamp(0, 255) truncated (NaN -> 0).
AMANET_HOST_DEVICE AMANET_IUV_INLINE uint8_t uv_code(float value) {
  const float t = value * 255.f;
  if (!(t > 0.f)) return 0;
  return static_cast<uint8_t>(t < 255.f ? t : 255.f);
}

AMANET_HOST_DEVICE AMANET_IUV_INLINE float exp_f(float v) {
#if defined(__CUDA_ARCH__)
  return ::expf(v);
#else
  return std::exp(v);
#endif
}

// Input pointers of one RoI: planes are [S_h, S_w], channel c of a tensor at base + c * plane.
template <typename T>
struct RoiInputs {
  const T* fine;
  const T* gate;
  const T* u;
  const T* v;
  int64_t plane;
};

// Gate decisions from the sampled gate channels m[0], m[stride], ... (Cg of them).
// s1x: argmax over the coarse channels > 0.
AMANET_HOST_DEVICE AMANET_IUV_INLINE bool gate_s1x_values(const float* m, int64_t stride, int64_t Cg) {
  float best = m[0];
  int32_t best_k = 0;
  for (int64_t c = 1; c < Cg; ++c) argmax_update(m[c * stride], static_cast<int32_t>(c), best, best_k);
  return best_k > 0;
}

// AMANet: softmax over the mask channels, probability of channel 1 > threshold, computed as
// torch.softmax does (max-subtracted exponentials, their sum in channel order, one division).
AMANET_HOST_DEVICE AMANET_IUV_INLINE bool gate_amanet_values(const float* m, int64_t stride, int64_t Cg,
                                                            float threshold) {
  float mx = m[0];
  for (int64_t c = 1; c < Cg; ++c) {
    const float x = m[c * stride];
    mx = (x > mx || is_nan(x)) ? x : mx;
  }
  float sum = 0.f, e1 = 0.f;
  for (int64_t c = 0; c < Cg; ++c) {
    const float e = exp_f(m[c * stride] - mx);
    if (c == 1) e1 = e;
    sum += e;
  }
  return e1 / sum > threshold;
}

constexpr int64_t kMaxGateChannels = 16;

// The gate of one pixel: samples the Cg gate channels, then the mode's decision.
template <typename T>
AMANET_HOST_DEVICE AMANET_IUV_INLINE bool gate_pixel(const RoiInputs<T>& in, const Sample& s, const Layout& l,
                                                     int64_t mode, float threshold) {
  float m[kMaxGateChannels];
  for (int64_t c = 0; c < l.Cg; ++c) m[c] = sample(in.gate + c * in.plane, s, l.gate_pos + c >= l.tail_start);
  return mode == kModeS1x ? gate_s1x_values(m, 1, l.Cg) : gate_amanet_values(m, 1, l.Cg, threshold);
}

// Steps 2-4 for one pixel with its corners `s`: writes (label, U code, V code).
template <typename T>
AMANET_HOST_DEVICE AMANET_IUV_INLINE void iuv_pixel(const RoiInputs<T>& in, const Sample& s, const Layout& l,
                                                    int64_t mode, float threshold, uint8_t& I, uint8_t& U,
                                                    uint8_t& V) {
  float best = sample(in.fine, s, l.fine_pos >= l.tail_start);
  int32_t label = 0;
  for (int64_t k = 1; k < l.K; ++k) {
    argmax_update(sample(in.fine + k * in.plane, s, l.fine_pos + k >= l.tail_start), static_cast<int32_t>(k),
                  best, label);
  }
  if (label > 0) {
    if (!gate_pixel(in, s, l, mode, threshold)) label = 0;
  }
  if (label == 0) {
    I = U = V = 0;
    return;
  }
  I = static_cast<uint8_t>(label);
  U = uv_code(sample(in.u + label * in.plane, s, l.u_pos + label >= l.tail_start));
  V = uv_code(sample(in.v + label * in.plane, s, l.v_pos + label >= l.tail_start));
}

}  // namespace iuv
}  // namespace amanet
