// CPU kernels of amanet::roi_align(_backward). Float and double results are bit-identical to
// torchvision's CPU kernels: the per-sample math is common/roi_align.h (torchvision's operation
// order) and every output / grad_input element sees its terms in torchvision's order.
//
// Work split: the bilinear footprints of one RoI are shared by all channels, so they are built
// once per (RoI, channel chunk) task and replayed over the chunk's channels. The forward splits
// over (RoI, channel chunk); the backward splits over channel chunks only (each task owns whole
// grad_input channel planes and walks the RoIs in order, so no atomics and torchvision's
// accumulation order per element).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common/roi_align.h"
#include "../roi_align.h"

namespace amanet {
namespace {

using namespace amanet::roi_align;

constexpr int64_t kChannelChunk = 64;
// Minimum work (sample x channel interpolations, ~1 ms) before a parallel task split is worth
// waking the thread pool.
constexpr int64_t kGrainSamples = int64_t(1) << 18;
constexpr int kLanes = 4;  // channels interleaved in the inner loops

// torchvision's backward order for one sample: taps 1..4, value grad * w / count.
template <typename T>
inline void add_sample_grad(T* plane, const Bilinear<T>& b, T grad, T count) {
  plane[b.o1] += grad * b.w1 / count;
  plane[b.o2] += grad * b.w2 / count;
  plane[b.o3] += grad * b.w3 / count;
  plane[b.o4] += grad * b.w4 / count;
}

// Samples per bin, for sizing the parallel split (adaptive grids: a typical 2x2).
int64_t samples_estimate(int64_t sampling_ratio) {
  return sampling_ratio > 0 ? sampling_ratio * sampling_ratio : 4;
}

int64_t grain_for(int64_t task_work) {
  return std::max<int64_t>(1, kGrainSamples / std::max<int64_t>(1, task_work));
}

// Valid samples of every bin of one RoI, bin after bin in (ph, pw) order; bin_end[b] is one past
// the last sample of bin b. A dead sample (outside the map) is dropped: it adds 0.
template <typename T>
struct RoiSamples {
  std::vector<Bilinear<T>> samples;
  std::vector<int64_t> bin_end;

  void build(const RoiBins<T>& r, int height, int width, int pooled_height, int pooled_width) {
    samples.clear();
    bin_end.resize(static_cast<size_t>(pooled_height) * pooled_width);
    int64_t bin = 0;
    for (int ph = 0; ph < pooled_height; ph++) {
      for (int pw = 0; pw < pooled_width; pw++) {
        for (int iy = 0; iy < r.grid_h; iy++) {
          const T y = sample_coord(r.start_h, ph, r.bin_h, iy, r.grid_h);
          for (int ix = 0; ix < r.grid_w; ix++) {
            const T x = sample_coord(r.start_w, pw, r.bin_w, ix, r.grid_w);
            Bilinear<T> b;
            if (bilinear(height, width, y, x, b)) samples.push_back(b);
          }
        }
        bin_end[bin++] = static_cast<int64_t>(samples.size());
      }
    }
  }
};

// rois are in the compute type T (see rois_for_kernel).
template <typename T>
RoiBins<T> roi_bins_at(const T* rois, int64_t k, double spatial_scale, int64_t pooled_height,
                       int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const T* r = rois + k * 5;
  return make_roi_bins<T>(static_cast<T>(r[0]), static_cast<T>(r[1]), static_cast<T>(r[2]),
                          static_cast<T>(r[3]), static_cast<T>(r[4]), static_cast<T>(spatial_scale),
                          static_cast<int>(pooled_height), static_cast<int>(pooled_width),
                          static_cast<int>(sampling_ratio), aligned);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* input, const compute_t<scalar_t>* rois, scalar_t* output, int64_t num_rois,
                    int64_t channels, int64_t height, int64_t width, int64_t pooled_height,
                    int64_t pooled_width, double spatial_scale, int64_t sampling_ratio,
                    bool aligned) {
  using T = compute_t<scalar_t>;
  const int64_t chunks = (channels + kChannelChunk - 1) / kChannelChunk;
  const int64_t plane = height * width;
  const int64_t bins = pooled_height * pooled_width;
  const int64_t task_work = std::min(channels, kChannelChunk) * bins * samples_estimate(sampling_ratio);
  at::parallel_for(0, num_rois * chunks, grain_for(task_work), [&](int64_t begin, int64_t end) {
    RoiSamples<T> table;
    int64_t built_for = -1;
    for (int64_t task = begin; task < end; task++) {
      const int64_t k = task / chunks;
      const int64_t c0 = (task % chunks) * kChannelChunk;
      const int64_t c1 = std::min(channels, c0 + kChannelChunk);
      const RoiBins<T> r = roi_bins_at(rois, k, spatial_scale, pooled_height, pooled_width,
                                       sampling_ratio, aligned);
      if (built_for != k) {
        table.build(r, static_cast<int>(height), static_cast<int>(width),
                    static_cast<int>(pooled_height), static_cast<int>(pooled_width));
        built_for = k;
      }
      // kLanes channels at a time: independent sums, same per-element order (ILP only)
      int64_t c = c0;
      for (; c + kLanes <= c1; c += kLanes) {
        const scalar_t* in_plane[kLanes];
        scalar_t* out[kLanes];
        for (int l = 0; l < kLanes; l++) {
          in_plane[l] = input + (r.batch * channels + c + l) * plane;
          out[l] = output + (k * channels + c + l) * bins;
        }
        int64_t s = 0;
        for (int64_t bin = 0; bin < bins; bin++) {
          T sum[kLanes];
          for (int l = 0; l < kLanes; l++) sum[l] = 0.;
          for (const int64_t s_end = table.bin_end[bin]; s < s_end; s++) {
            const Bilinear<T>& b = table.samples[s];
            for (int l = 0; l < kLanes; l++) sum[l] += interpolate(in_plane[l], b);
          }
          for (int l = 0; l < kLanes; l++) out[l][bin] = static_cast<scalar_t>(sum[l] / r.count);
        }
      }
      for (; c < c1; c++) {
        const scalar_t* in_plane = input + (r.batch * channels + c) * plane;
        scalar_t* out = output + (k * channels + c) * bins;
        int64_t s = 0;
        for (int64_t bin = 0; bin < bins; bin++) {
          T sum = 0.;
          for (const int64_t s_end = table.bin_end[bin]; s < s_end; s++) {
            sum += interpolate(in_plane, table.samples[s]);
          }
          out[bin] = static_cast<scalar_t>(sum / r.count);
        }
      }
    }
  });
}

// grad_input is compute_t<scalar_t> (the output itself for float / double).
template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const compute_t<scalar_t>* rois, compute_t<scalar_t>* grad_input,
                     int64_t num_rois, int64_t channels, int64_t height, int64_t width,
                     int64_t pooled_height, int64_t pooled_width, double spatial_scale,
                     int64_t sampling_ratio, bool aligned) {
  using T = compute_t<scalar_t>;
  const int64_t plane = height * width;
  const int64_t bins = pooled_height * pooled_width;
  const int64_t chunks = (channels + kChannelChunk - 1) / kChannelChunk;
  const int64_t task_work =
      num_rois * std::min(channels, kChannelChunk) * bins * samples_estimate(sampling_ratio);
  at::parallel_for(0, chunks, grain_for(task_work), [&](int64_t begin, int64_t end) {
    RoiSamples<T> table;
    for (int64_t c0 = begin * kChannelChunk; c0 < std::min(channels, end * kChannelChunk);
         c0 += kChannelChunk) {
      const int64_t c1 = std::min(channels, c0 + kChannelChunk);
      for (int64_t k = 0; k < num_rois; k++) {
        const RoiBins<T> r = roi_bins_at(rois, k, spatial_scale, pooled_height, pooled_width,
                                         sampling_ratio, aligned);
        table.build(r, static_cast<int>(height), static_cast<int>(width),
                    static_cast<int>(pooled_height), static_cast<int>(pooled_width));
        // kLanes channels at a time (disjoint planes): same per-element order, more ILP
        int64_t c = c0;
        for (; c + kLanes <= c1; c += kLanes) {
          T* gi[kLanes];
          const scalar_t* g[kLanes];
          for (int l = 0; l < kLanes; l++) {
            gi[l] = grad_input + (r.batch * channels + c + l) * plane;
            g[l] = grad + (k * channels + c + l) * bins;
          }
          int64_t s = 0;
          for (int64_t bin = 0; bin < bins; bin++) {
            T gb[kLanes];
            for (int l = 0; l < kLanes; l++) gb[l] = static_cast<T>(g[l][bin]);
            for (const int64_t s_end = table.bin_end[bin]; s < s_end; s++) {
              const Bilinear<T>& b = table.samples[s];
              for (int l = 0; l < kLanes; l++) add_sample_grad(gi[l], b, gb[l], r.count);
            }
          }
        }
        for (; c < c1; c++) {
          T* gi = grad_input + (r.batch * channels + c) * plane;
          const scalar_t* g = grad + (k * channels + c) * bins;
          int64_t s = 0;
          for (int64_t bin = 0; bin < bins; bin++) {
            const T gb = static_cast<T>(g[bin]);
            for (const int64_t s_end = table.bin_end[bin]; s < s_end; s++) {
              add_sample_grad(gi, table.samples[s], gb, r.count);
            }
          }
        }
      }
    }
  });
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                         bool aligned) {
  check_roi_align_inputs(input, rois, pooled_height, pooled_width);
  TORCH_CHECK(input.device().is_cpu(), "roi_align (CPU kernel): input must be a CPU tensor");
  const int64_t num_rois = rois.size(0), channels = input.size(1);
  const int64_t height = input.size(2), width = input.size(3);
  // every element is written below (no zero fill)
  at::Tensor output = at::empty({num_rois, channels, pooled_height, pooled_width}, input.options());
  if (output.numel() == 0) return output;
  TORCH_CHECK(height > 0 && width > 0, "roi_align: the input feature map is empty (", input.sizes(),
              ")");
  const at::Tensor input_ = input.contiguous();
  const at::Tensor rois_ = rois_for_kernel(rois, input.scalar_type());
  check_batch_indices("roi_align", rois_, input.size(0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_cpu", [&] {
    using T = compute_t<scalar_t>;
    forward_kernel<scalar_t>(input_.const_data_ptr<scalar_t>(), rois_.const_data_ptr<T>(),
                             output.mutable_data_ptr<scalar_t>(), num_rois, channels, height, width,
                             pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
  });
  return output;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                  int64_t batch_size, int64_t channels, int64_t height,
                                  int64_t width, int64_t sampling_ratio, bool aligned) {
  check_roi_align_backward_inputs(grad, rois, pooled_height, pooled_width, batch_size, channels,
                                  height, width);
  TORCH_CHECK(grad.device().is_cpu(), "roi_align_backward (CPU kernel): grad must be a CPU tensor");
  const auto st = grad.scalar_type();
  const bool direct = st == at::kFloat || st == at::kDouble;
  // half / bfloat16 accumulate in a float buffer
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width},
                                    grad.options().dtype(direct ? st : at::kFloat));
  const int64_t num_rois = rois.size(0);
  if (grad.numel() == 0 || grad_input.numel() == 0) return grad_input.to(st);
  const at::Tensor grad_ = grad.contiguous();
  const at::Tensor rois_ = rois_for_kernel(rois, st);
  check_batch_indices("roi_align_backward", rois_, batch_size);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "roi_align_backward_cpu", [&] {
    using T = compute_t<scalar_t>;
    backward_kernel<scalar_t>(grad_.const_data_ptr<scalar_t>(), rois_.const_data_ptr<T>(),
                              grad_input.mutable_data_ptr<T>(), num_rois, channels, height, width,
                              pooled_height, pooled_width, spatial_scale, sampling_ratio, aligned);
  });
  return direct ? grad_input : grad_input.to(st);
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CPU, m) {
  m.impl("roi_align", TORCH_FN(roi_align_cpu));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_cpu));
}

}  // namespace amanet
