// CPU kernel of amanet::iuv_paste, plus the host-side checks and plan shared with the CUDA kernel
// (declared in ../iuv_paste.h). The per-pixel math is common/iuv_paste.h.
//
// Pass 1 (charts): at::parallel_for over chunks of the flat chart-pixel index of all boxes (so the
// threads stay balanced whatever the box sizes); a chunk is cut into row segments of one box and
// those into blocks of up to kBlock columns. A block runs the steps of `iuv::iuv_pixel` (taps,
// 25-channel argmax, gate, U/V at the label) channel by channel over its columns, calling the
// same common/iuv_paste.h primitives, so each step is a loop the compiler vectorises. On x86-64
// the loop runs in a clone compiled for AVX2+FMA when the CPU has it, so the explicit fused
// multiply-adds that reproduce ATen's arithmetic are single instructions (the corner loads stay
// scalar: AVX2 gathers measured 1.5-3x slower here); elsewhere they are std::fma.
//
// Pass 2 (whole image, optional): at::parallel_for over image rows. For its rows a thread visits
// the boxes in rank order (score descending, index ascending) and writes a chart pixel only where
// the chart's label is > 0 and the image pixel is still background, so the best-ranked foreground
// wins; each image row is owned by exactly one thread, so the result is deterministic and race-free.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Version.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

#include "../common/iuv_paste.h"
#include "../iuv_paste.h"

namespace amanet {

namespace {

void check_roi_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "iuv_paste: ", name, " must be a 4-D [N, C, S_h, S_w] tensor, got shape ",
              t.sizes());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "iuv_paste: ", name,
              " must be a floating tensor (float, double, half or bfloat16), got ", t.scalar_type());
}

}  // namespace

int64_t aten_float_vector_width() {
  // "DEFAULT", "AVX2", "AVX512" on x86 (ATEN_CPU_CAPABILITY can lower it); read once.
  static const int64_t width = at::get_cpu_capability() == "AVX512" ? 16 : 8;
  return width;
}

IuvPastePlan plan_iuv_paste(const at::Tensor& fine, const at::Tensor& gate, const at::Tensor& u,
                            const at::Tensor& v, const at::Tensor& boxes, const at::Tensor& scores,
                            int64_t mode, int64_t image_height, int64_t image_width) {
  check_roi_tensor(fine, "fine");
  check_roi_tensor(gate, "gate");
  check_roi_tensor(u, "u");
  check_roi_tensor(v, "v");
  TORCH_CHECK(mode == iuv::kModeS1x || mode == iuv::kModeAmanet,
              "iuv_paste: mode must be 0 (s1x: argmax(coarse) > 0) or 1 (AMANet: softmax(mask)[1] > "
              "threshold), got ", mode);
  const int64_t N = fine.size(0), K = fine.size(1), Sh = fine.size(2), Sw = fine.size(3);
  TORCH_CHECK(K >= 1 && K <= 255, "iuv_paste: fine must have 1..255 part channels (labels are uint8), got ", K);
  TORCH_CHECK(Sh >= 1 && Sw >= 1, "iuv_paste: RoI outputs must have a non-empty spatial size, got ",
              fine.sizes());
  TORCH_CHECK(u.sizes() == fine.sizes(), "iuv_paste: u ", u.sizes(), " must have the shape of fine ",
              fine.sizes());
  TORCH_CHECK(v.sizes() == fine.sizes(), "iuv_paste: v ", v.sizes(), " must have the shape of fine ",
              fine.sizes());
  TORCH_CHECK(gate.size(0) == N && gate.size(2) == Sh && gate.size(3) == Sw,
              "iuv_paste: gate ", gate.sizes(), " must be [N, Cg, S_h, S_w] = [", N, ", Cg, ", Sh, ", ", Sw,
              "] like fine ", fine.sizes());
  TORCH_CHECK(gate.size(1) >= 2 && gate.size(1) <= iuv::kMaxGateChannels,
              "iuv_paste: gate must have 2..", iuv::kMaxGateChannels,
              " channels (background, foreground, ...), got ", gate.size(1));
  TORCH_CHECK(gate.scalar_type() == fine.scalar_type() && u.scalar_type() == fine.scalar_type() &&
                  v.scalar_type() == fine.scalar_type(),
              "iuv_paste: fine, gate, u and v must have one dtype, got ", fine.scalar_type(), ", ",
              gate.scalar_type(), ", ", u.scalar_type(), ", ", v.scalar_type());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == N && boxes.size(1) == 4,
              "iuv_paste: boxes must be [N, 4] = [", N, ", 4] (integer XYWH), got shape ", boxes.sizes());
  TORCH_CHECK(boxes.scalar_type() == at::kLong,
              "iuv_paste: boxes must be int64 XYWH (see xyxy_to_xywh_int), got ", boxes.scalar_type());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == N, "iuv_paste: scores must be [N] = [", N,
              "], got shape ", scores.sizes());
  TORCH_CHECK(at::isFloatingType(scores.scalar_type()), "iuv_paste: scores must be floating, got ",
              scores.scalar_type());
  for (const at::Tensor* t : {&gate, &u, &v, &boxes, &scores}) {
    TORCH_CHECK(t->device() == fine.device(), "iuv_paste: all inputs must be on one device, fine is on ",
                fine.device(), " but another input is on ", t->device());
  }
  TORCH_CHECK(image_height >= 0 && image_width >= 0, "iuv_paste: image size must be >= 0, got ",
              image_height, " x ", image_width);

  IuvPastePlan plan;
  plan.N = N;
  plan.K = K;
  plan.Cg = gate.size(1);
  plan.Sh = Sh;
  plan.Sw = Sw;
  const at::Tensor b = boxes.to(at::kCPU).contiguous();
  const int64_t* bp = b.data_ptr<int64_t>();
  plan.boxes.assign(bp, bp + 4 * N);
  plan.offsets.resize(N + 1);
  plan.offsets[0] = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t w = plan.boxes[4 * i + 2], h = plan.boxes[4 * i + 3];
    TORCH_CHECK(w >= 1 && h >= 1, "iuv_paste: box ", i, " has size ", w, " x ", h,
                "; integer boxes must have w, h >= 1 (xyxy_to_xywh_int clamps them)");
    TORCH_CHECK(w <= (int64_t(1) << 24) && h <= (int64_t(1) << 24), "iuv_paste: box ", i, " is too large (",
                w, " x ", h, ")");
    plan.offsets[i + 1] = plan.offsets[i] + w * h;
  }
  plan.total_pixels = plan.offsets[N];
  // Rank by score, descending; equal scores keep the lower index first (stable).
  const at::Tensor s = scores.to(at::kCPU, at::kDouble).contiguous();
  const double* sp = s.data_ptr<double>();
  plan.order.resize(N);
  std::iota(plan.order.begin(), plan.order.end(), 0);
  // (A NaN score ranks last, so the order stays a strict weak ordering.)
  auto key = [sp](int32_t i) { return std::isnan(sp[i]) ? -std::numeric_limits<double>::infinity() : sp[i]; };
  std::stable_sort(plan.order.begin(), plan.order.end(), [&key](int32_t a, int32_t c) { return key(a) > key(c); });
  plan.rank.resize(N);
  for (int64_t r = 0; r < N; ++r) plan.rank[plan.order[r]] = static_cast<int32_t>(r);
  return plan;
}

namespace {

struct ChartJob {
  int64_t N, Sh, Sw, plane, K, Cg, mode;
  float threshold;
  iuv::Layout layout;
  const int64_t* boxes;    // N x (x, y, w, h), host
  const int64_t* offsets;  // N + 1
  uint8_t* charts;
};

// Columns of one chart row handled together: their taps and running argmax live in arrays of
// this length, and every per-pixel step is a loop over them that the compiler vectorises.
constexpr int kBlock = 128;

struct Block {
  int32_t c0[kBlock], c1[kBlock];                  // source columns of the two corners
  float lx0[kBlock], lx1[kBlock];                  // column weights (generic form)
  float w00[kBlock], w01[kBlock], w10[kBlock], w11[kBlock];  // product weights (channels-last)
  float best[kBlock];
  int32_t label[kBlock];
  float gate[iuv::kMaxGateChannels][kBlock];
};

enum Form { kGeneric = 0, kClVector = 1, kClTail = 2 };

template <int kForm>
AMANET_IUV_INLINE float form_value(const Block& b, int j, float x00, float x01, float x10, float x11, float ly0,
                                   float ly1) {
  if constexpr (kForm == kGeneric) {
    return iuv::bilinear_generic(x00, x01, x10, x11, ly0, ly1, b.lx0[j], b.lx1[j]);
  } else if constexpr (kForm == kClVector) {
    return iuv::bilinear_cl_vector(x00, x01, x10, x11, b.w00[j], b.w01[j], b.w10[j], b.w11[j]);
  } else {
    return iuv::bilinear_cl_tail(x00, x01, x10, x11, b.w00[j], b.w01[j], b.w10[j], b.w11[j]);
  }
}

// Sampled values of one channel (rows r0, r1 of its plane) at the block's m columns -> out[].
template <int kForm, typename T>
AMANET_IUV_INLINE void sample_block(const Block& b, int m, const T* __restrict__ r0, const T* __restrict__ r1,
                                    float ly0, float ly1, float* __restrict__ out) {
  for (int j = 0; j < m; ++j) {
    out[j] = form_value<kForm>(b, j, static_cast<float>(r0[b.c0[j]]), static_cast<float>(r0[b.c1[j]]),
                               static_cast<float>(r1[b.c0[j]]), static_cast<float>(r1[b.c1[j]]), ly0, ly1);
  }
}

template <int kForm, typename T>
AMANET_IUV_INLINE void argmax_block(Block& b, int m, const T* __restrict__ r0, const T* __restrict__ r1, float ly0,
                                    float ly1, int32_t k) {
  for (int j = 0; j < m; ++j) {
    const float v = form_value<kForm>(b, j, static_cast<float>(r0[b.c0[j]]), static_cast<float>(r0[b.c1[j]]),
                                      static_cast<float>(r1[b.c0[j]]), static_cast<float>(r1[b.c1[j]]), ly0, ly1);
    iuv::argmax_update(v, k, b.best[j], b.label[j]);
  }
}

AMANET_IUV_INLINE int form_of(bool small, const iuv::Layout& l, int64_t concat_channel) {
  return !small ? kGeneric : (concat_channel >= l.tail_start ? kClTail : kClVector);
}

// Channel `pos` of a tensor at its label (per column), coded: U or V of the block.
template <typename T>
AMANET_IUV_INLINE void code_block(const Block& b, int m, const T* __restrict__ base, int64_t plane,
                                  int64_t off0, int64_t off1, bool small, const iuv::Tap& ty, int64_t pos,
                                  int64_t tail_start, uint8_t* __restrict__ out) {
  for (int j = 0; j < m; ++j) {
    const int32_t k = b.label[j];
    const T* p = base + k * plane;
    const float x00 = static_cast<float>(p[off0 + b.c0[j]]), x01 = static_cast<float>(p[off0 + b.c1[j]]);
    const float x10 = static_cast<float>(p[off1 + b.c0[j]]), x11 = static_cast<float>(p[off1 + b.c1[j]]);
    float value;
    if (!small) {
      value = iuv::bilinear_generic(x00, x01, x10, x11, ty.l0, ty.l1, b.lx0[j], b.lx1[j]);
    } else {
      const float vec = iuv::bilinear_cl_vector(x00, x01, x10, x11, b.w00[j], b.w01[j], b.w10[j], b.w11[j]);
      const float tail = iuv::bilinear_cl_tail(x00, x01, x10, x11, b.w00[j], b.w01[j], b.w10[j], b.w11[j]);
      value = pos + k >= tail_start ? tail : vec;
    }
    out[j] = k > 0 ? iuv::uv_code(value) : uint8_t(0);
  }
}

// Columns [xa, xb) of row oy of box n's chart (the same steps as iuv::iuv_pixel, column-blocked).
template <typename T>
AMANET_IUV_INLINE void chart_segment(const ChartJob& job, const T* fine, const T* gate, const T* u, const T* v,
                                     int64_t n, int64_t oy, int64_t xa, int64_t xb) {
  const iuv::Layout& l = job.layout;
  const int64_t w = job.boxes[4 * n + 2], h = job.boxes[4 * n + 3];
  const int64_t plane = job.plane;
  const bool small = iuv::is_small_output(h, w);
  const iuv::Tap ty = iuv::source_tap(oy, job.Sh, h);
  const int64_t off0 = static_cast<int64_t>(ty.i0) * job.Sw, off1 = static_cast<int64_t>(ty.i1) * job.Sw;
  const T* fine_n = fine + n * job.K * plane;
  const T* gate_n = gate + n * job.Cg * plane;
  uint8_t* I = job.charts + 3 * job.offsets[n] + oy * w;
  uint8_t* U = I + h * w;
  uint8_t* V = U + h * w;
  Block b;
  for (int64_t x0 = xa; x0 < xb; x0 += kBlock) {
    const int m = static_cast<int>(std::min<int64_t>(kBlock, xb - x0));
    for (int j = 0; j < m; ++j) {
      const iuv::Tap tx = iuv::source_tap(x0 + j, job.Sw, w);
      b.c0[j] = tx.i0;
      b.c1[j] = tx.i1;
      b.lx0[j] = tx.l0;
      b.lx1[j] = tx.l1;
      b.w00[j] = iuv::mul_rn(ty.l0, tx.l0);  // as iuv::make_sample
      b.w01[j] = iuv::mul_rn(ty.l0, tx.l1);
      b.w10[j] = iuv::mul_rn(ty.l1, tx.l0);
      b.w11[j] = iuv::mul_rn(ty.l1, tx.l1);
      b.best[j] = 0.f;
      b.label[j] = 0;
    }
    // Part label: running argmax over the K fine channels (channel 0 seeds it).
    for (int64_t k = 0; k < job.K; ++k) {
      const T* r0 = fine_n + k * plane + off0;
      const T* r1 = fine_n + k * plane + off1;
      const int32_t kk = static_cast<int32_t>(k);
      switch (form_of(small, l, l.fine_pos + k)) {
        case kGeneric:
          if (k == 0) sample_block<kGeneric>(b, m, r0, r1, ty.l0, ty.l1, b.best);
          else argmax_block<kGeneric>(b, m, r0, r1, ty.l0, ty.l1, kk);
          break;
        case kClVector:
          if (k == 0) sample_block<kClVector>(b, m, r0, r1, ty.l0, ty.l1, b.best);
          else argmax_block<kClVector>(b, m, r0, r1, ty.l0, ty.l1, kk);
          break;
        default:
          if (k == 0) sample_block<kClTail>(b, m, r0, r1, ty.l0, ty.l1, b.best);
          else argmax_block<kClTail>(b, m, r0, r1, ty.l0, ty.l1, kk);
          break;
      }
    }
    // Gate: sample the Cg channels, then the mode's decision per column.
    for (int64_t c = 0; c < job.Cg; ++c) {
      const T* r0 = gate_n + c * plane + off0;
      const T* r1 = gate_n + c * plane + off1;
      switch (form_of(small, l, l.gate_pos + c)) {
        case kGeneric: sample_block<kGeneric>(b, m, r0, r1, ty.l0, ty.l1, b.gate[c]); break;
        case kClVector: sample_block<kClVector>(b, m, r0, r1, ty.l0, ty.l1, b.gate[c]); break;
        default: sample_block<kClTail>(b, m, r0, r1, ty.l0, ty.l1, b.gate[c]); break;
      }
    }
    if (job.mode == iuv::kModeS1x) {
      for (int j = 0; j < m; ++j) {
        if (!iuv::gate_s1x_values(&b.gate[0][j], kBlock, job.Cg)) b.label[j] = 0;
      }
    } else {
      for (int j = 0; j < m; ++j) {
        if (b.label[j] > 0 && !iuv::gate_amanet_values(&b.gate[0][j], kBlock, job.Cg, job.threshold)) b.label[j] = 0;
      }
    }
    // U, V at the label; I.
    code_block(b, m, u + n * job.K * plane, plane, off0, off1, small, ty, l.u_pos, l.tail_start, U + x0);
    code_block(b, m, v + n * job.K * plane, plane, off0, off1, small, ty, l.v_pos, l.tail_start, V + x0);
    for (int j = 0; j < m; ++j) I[x0 + j] = static_cast<uint8_t>(b.label[j]);
  }
}

// Chart pixels [begin, end) of the flat pixel index over all charts (pixel p of box n with
// offsets[n] <= p < offsets[n + 1], row-major inside the box), as row segments. Chunks of pixels,
// not of boxes or rows, keep the threads balanced whatever the box sizes.
template <typename T>
AMANET_IUV_INLINE void chart_pixels_impl(const ChartJob& job, const T* fine, const T* gate, const T* u,
                                         const T* v, int64_t begin, int64_t end) {
  int64_t n = std::upper_bound(job.offsets, job.offsets + job.N + 1, begin) - job.offsets - 1;
  int64_t p = begin;
  while (p < end) {
    while (p >= job.offsets[n + 1]) ++n;
    const int64_t w = job.boxes[4 * n + 2];
    const int64_t local = p - job.offsets[n];
    const int64_t oy = local / w, xa = local - oy * w;
    const int64_t xb = std::min<int64_t>(w, xa + (end - p));
    chart_segment(job, fine, gate, u, v, n, oy, xa, xb);
    p += xb - xa;
  }
}

template <typename T>
void chart_pixels_generic(const ChartJob& job, const T* fine, const T* gate, const T* u, const T* v,
                          int64_t begin, int64_t end) {
  chart_pixels_impl<T>(job, fine, gate, u, v, begin, end);
}

// -DAMANET_IUV_NO_FMA_CLONE builds without the clone (the portable path only).
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(AMANET_IUV_NO_FMA_CLONE)
#define AMANET_IUV_FMA_CLONE 1
// The same loop compiled for AVX2 + FMA: __builtin_fmaf becomes one vfmadd instruction (the
// generic clone calls libm's fmaf, which is exact but slow). Chosen at run time.
template <typename T>
__attribute__((target("avx2,fma"))) void chart_pixels_fma(const ChartJob& job, const T* fine, const T* gate,
                                                          const T* u, const T* v, int64_t begin, int64_t end) {
  chart_pixels_impl<T>(job, fine, gate, u, v, begin, end);
}

bool cpu_has_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

// Pass 2: see the file comment. Rows of the image are split over threads; boxes in rank order.
void composite_cpu(const IuvPastePlan& plan, const uint8_t* charts, uint8_t* image, int64_t H, int64_t W) {
  const int64_t HW = H * W;
  at::parallel_for(0, H, 16, [&](int64_t y_begin, int64_t y_end) {
    for (int64_t y = y_begin; y < y_end; ++y) {
      uint8_t* oI = image + y * W;
      uint8_t* oU = oI + HW;
      uint8_t* oV = oU + HW;
      for (int64_t r = 0; r < plan.N; ++r) {
        const int64_t n = plan.order[r];
        const int64_t bx = plan.boxes[4 * n], by = plan.boxes[4 * n + 1];
        const int64_t w = plan.boxes[4 * n + 2], h = plan.boxes[4 * n + 3];
        if (y < by || y >= by + h) continue;
        const int64_t xa = std::max<int64_t>(bx, 0), xb = std::min<int64_t>(bx + w, W);
        if (xa >= xb) continue;
        const uint8_t* cI = charts + 3 * plan.offsets[n] + (y - by) * w - bx;
        const uint8_t* cU = cI + h * w;
        const uint8_t* cV = cU + h * w;
        for (int64_t x = xa; x < xb; ++x) {
          if (cI[x] != 0 && oI[x] == 0) {
            oI[x] = cI[x];
            oU[x] = cU[x];
            oV[x] = cV[x];
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> iuv_paste_cpu(
    const at::Tensor& fine, const at::Tensor& gate, const at::Tensor& u, const at::Tensor& v,
    const at::Tensor& boxes, const at::Tensor& scores, int64_t mode, double threshold, int64_t image_height,
    int64_t image_width, bool whole_image) {
  const IuvPastePlan plan =
      plan_iuv_paste(fine, gate, u, v, boxes, scores, mode, image_height, image_width);
  const auto u8 = fine.options().dtype(at::kByte);
  at::Tensor charts = at::empty({3 * plan.total_pixels}, u8);
  at::Tensor offsets = at::empty({plan.N + 1}, fine.options().dtype(at::kLong));
  std::copy(plan.offsets.begin(), plan.offsets.end(), offsets.data_ptr<int64_t>());

  if (plan.total_pixels > 0) {
    const at::Tensor fine_c = fine.contiguous(), gate_c = gate.contiguous(), u_c = u.contiguous(),
                     v_c = v.contiguous();
    ChartJob job;
    job.N = plan.N;
    job.Sh = plan.Sh;
    job.Sw = plan.Sw;
    job.plane = plan.Sh * plan.Sw;
    job.K = plan.K;
    job.Cg = plan.Cg;
    job.mode = mode;
    job.threshold = static_cast<float>(threshold);
    job.layout = iuv::make_layout(mode, plan.K, plan.Cg, aten_float_vector_width());
    job.boxes = plan.boxes.data();
    job.offsets = plan.offsets.data();
    job.charts = charts.data_ptr<uint8_t>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, fine.scalar_type(), "iuv_paste_cpu", [&] {
      const scalar_t* f = fine_c.const_data_ptr<scalar_t>();
      const scalar_t* g = gate_c.const_data_ptr<scalar_t>();
      const scalar_t* pu = u_c.const_data_ptr<scalar_t>();
      const scalar_t* pv = v_c.const_data_ptr<scalar_t>();
      at::parallel_for(0, plan.total_pixels, 2048, [&](int64_t begin, int64_t end) {
#ifdef AMANET_IUV_FMA_CLONE
        if (cpu_has_fma()) {
          chart_pixels_fma<scalar_t>(job, f, g, pu, pv, begin, end);
          return;
        }
#endif
        chart_pixels_generic<scalar_t>(job, f, g, pu, pv, begin, end);
      });
    });
  }

  at::Tensor image;
  if (whole_image) {
    image = at::zeros({3, image_height, image_width}, u8);
    if (plan.N > 0 && image_height > 0 && image_width > 0) {
      composite_cpu(plan, charts.const_data_ptr<uint8_t>(), image.data_ptr<uint8_t>(), image_height,
                    image_width);
    }
  } else {
    image = at::empty({0}, u8);
  }
  return {charts, offsets, image};
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CPU, m) {
  m.impl("iuv_paste", TORCH_FN(iuv_paste_cpu));
}

}  // namespace amanet
