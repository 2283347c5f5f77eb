// CUDA kernel of amanet::nms (same results as torchvision's CUDA nms: same stable sort, float
// threshold, overlap test of common/nms.h).
//   1. sort the scores (descending, stable: ties by increasing index) and gather the boxes;
//   2. overlap_mask: block (row r, column c) of 64 x 64 box pairs writes, for each row box i of
//      block r, a 64-bit word whose bit t says "box i overlaps box 64 * c + t (later in order)";
//   3. greedy_keep: one thread block walks the boxes in order on the device, keeping a box unless
//      a kept box already removed it, OR-ing the kept box's row of words into the removed set
//      (the words are shared by the block's threads). No mask copy to the host.
//   4. the kept positions are mapped back to input indices.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <type_traits>

#include "../common/nms.h"
#include "../nms.h"

namespace amanet {
namespace {

using namespace amanet::nms;

constexpr int kBoxesPerWord = 64;  // bits of one mask word = boxes per block side
constexpr int kKeepThreads = 256;

template <typename T>
using acc_of = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <typename T>
__global__ void overlap_mask(int n, float threshold, const T* __restrict__ boxes,
                             unsigned long long* __restrict__ mask) {
  using Acc = acc_of<T>;
  const int row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) return;  // only later boxes can be removed
  const int words = (n + kBoxesPerWord - 1) / kBoxesPerWord;
  const int rows = min(n - row_block * kBoxesPerWord, kBoxesPerWord);
  const int cols = min(n - col_block * kBoxesPerWord, kBoxesPerWord);

  __shared__ T col_boxes[kBoxesPerWord * 4];
  __shared__ Acc col_area[kBoxesPerWord];
  if (threadIdx.x < cols) {
    const T* b = boxes + (int64_t)(col_block * kBoxesPerWord + threadIdx.x) * 4;
    for (int d = 0; d < 4; d++) col_boxes[threadIdx.x * 4 + d] = b[d];
    col_area[threadIdx.x] = box_area<Acc>(b[0], b[1], b[2], b[3]);
  }
  __syncthreads();
  if (threadIdx.x >= rows) return;

  const int i = row_block * kBoxesPerWord + threadIdx.x;
  const T* a = boxes + (int64_t)i * 4;
  const T ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3];
  const Acc a_area = box_area<Acc>(ax1, ay1, ax2, ay2);
  unsigned long long bits = 0;
  const int start = (row_block == col_block) ? threadIdx.x + 1 : 0;
  for (int t = start; t < cols; t++) {
    const T* b = col_boxes + t * 4;
    if (iou_above<Acc>(ax1, ay1, ax2, ay2, a_area, b[0], b[1], b[2], b[3], col_area[t], threshold)) {
      bits |= 1ULL << t;
    }
  }
  mask[(int64_t)i * words + col_block] = bits;
}

// keep[i] = 1 for the kept positions (in score order). One block; removed words in shared memory.
__global__ void greedy_keep(int n, const unsigned long long* __restrict__ mask,
                            uint8_t* __restrict__ keep) {
  extern __shared__ unsigned long long removed[];
  const int words = (n + kBoxesPerWord - 1) / kBoxesPerWord;
  for (int w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  __syncthreads();
  for (int word = 0; word < words; word++) {
    // every thread reads the same word: all have finished writing it (barrier below / above)
    unsigned long long current = removed[word];
    const int in_word = min(kBoxesPerWord, n - word * kBoxesPerWord);
    for (int t = 0; t < in_word; t++) {
      if (current & (1ULL << t)) continue;  // uniform across the block
      const int i = word * kBoxesPerWord + t;
      if (threadIdx.x == 0) keep[i] = 1;
      const unsigned long long* row = mask + (int64_t)i * words;
      current |= row[word];  // the rest of this word, tracked per thread
      for (int w = word + 1 + threadIdx.x; w < words; w += blockDim.x) removed[w] |= row[w];
    }
    __syncthreads();
  }
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms_inputs(boxes, scores);
  TORCH_CHECK(boxes.is_cuda(), "nms (CUDA kernel): boxes must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t n64 = boxes.size(0);
  if (n64 == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const int words64 = static_cast<int>((n64 + kBoxesPerWord - 1) / kBoxesPerWord);
  TORCH_CHECK(n64 <= INT32_MAX && (int64_t)words64 * sizeof(unsigned long long) <= 48 * 1024,
              "nms (CUDA kernel): too many boxes (", n64, "); at most ", 48 * 1024 / 8 * 64,
              " are supported");
  const int n = static_cast<int>(n64);
  const int words = words64;

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = boxes.index_select(0, order).contiguous();
  at::Tensor mask = at::empty({(int64_t)n * words}, boxes.options().dtype(at::kLong));
  at::Tensor keep = at::zeros({n}, boxes.options().dtype(at::kByte));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  const dim3 grid(words, words);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, boxes.scalar_type(), "nms_cuda", [&] {
    overlap_mask<scalar_t><<<grid, kBoxesPerWord, 0, stream>>>(
        n, static_cast<float>(iou_threshold), sorted.const_data_ptr<scalar_t>(),
        reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  greedy_keep<<<1, kKeepThreads, words * sizeof(unsigned long long), stream>>>(
      n, reinterpret_cast<const unsigned long long*>(mask.const_data_ptr<int64_t>()),
      keep.mutable_data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return order.index_select(0, keep.nonzero().squeeze(1));
}

}  // namespace

TORCH_LIBRARY_IMPL(amanet, CUDA, m) {
  m.impl("nms", TORCH_FN(nms_cuda));
}

}  // namespace amanet
