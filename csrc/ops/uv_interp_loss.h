#pragma once
// Host-side contract of amanet::uv_interp_loss / uv_interp_loss_backward: the input checks every
// device kernel runs first (the math itself is in common/uv_interp_loss.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <array>
#include <tuple>

namespace amanet {

// Every point's roi_index in [0, N) and part in [0, C), checked with tensor ops on the points'
// own device so that the CPU and CUDA kernels raise the same error (on CUDA: one small
// device-to-host copy, where a device-side assert would poison the CUDA context).
inline void check_point_indices(const at::Tensor& roi_index, const at::Tensor& part, int64_t N, int64_t C) {
  if (roi_index.numel() == 0) return;
  const at::Tensor bad_roi = roi_index.lt(0).logical_or(roi_index.ge(N));
  const at::Tensor bad_part = part.lt(0).logical_or(part.ge(C));
  const at::Tensor flags = at::stack({bad_roi.any(), bad_part.any()}).cpu();
  const bool* f = flags.const_data_ptr<bool>();
  if (f[0]) {
    const int64_t k = bad_roi.nonzero().select(1, 0)[0].item<int64_t>();
    TORCH_CHECK(false, "uv_interp_loss: roi_index[", k, "] = ", roi_index[k].item<int64_t>(),
                " is out of range for ", N, " RoIs");
  }
  if (f[1]) {
    const int64_t k = bad_part.nonzero().select(1, 0)[0].item<int64_t>();
    TORCH_CHECK(false, "uv_interp_loss: part[", k, "] = ", part[k].item<int64_t>(), " is out of range [0, ", C,
                ") (0 = ignored point)");
  }
}

inline void check_uv_interp_loss_inputs(const at::Tensor& u, const at::Tensor& v, const at::Tensor& roi_index,
                                        const at::Tensor& x, const at::Tensor& y, const at::Tensor& part,
                                        const at::Tensor& target_u, const at::Tensor& target_v, int64_t mode,
                                        double beta) {
  TORCH_CHECK(u.dim() == 4, "uv_interp_loss: u must be [N, C, H, W], got a tensor of shape ", u.sizes());
  TORCH_CHECK(v.sizes() == u.sizes(), "uv_interp_loss: v ", v.sizes(), " must have the shape of u ", u.sizes());
  TORCH_CHECK(at::isFloatingType(u.scalar_type()), "uv_interp_loss: u must be a floating tensor, got ",
              u.scalar_type());
  TORCH_CHECK(v.scalar_type() == u.scalar_type(), "uv_interp_loss: v dtype ", v.scalar_type(),
              " must match u dtype ", u.scalar_type());
  TORCH_CHECK(u.size(2) > 0 && u.size(3) > 0, "uv_interp_loss: the grid must not be empty, got u ", u.sizes());
  const int64_t K = roi_index.numel();
  const std::pair<const char*, const at::Tensor*> points[] = {{"roi_index", &roi_index}, {"x", &x},
                                                              {"y", &y},                 {"part", &part},
                                                              {"target_u", &target_u},   {"target_v", &target_v}};
  for (const auto& [name, t] : points) {
    TORCH_CHECK(t->dim() == 1, "uv_interp_loss: ", name, " must be a 1-D tensor [K], got shape ", t->sizes());
    TORCH_CHECK(t->size(0) == K, "uv_interp_loss: ", name, " has ", t->size(0), " points but roi_index has ", K);
    TORCH_CHECK(t->device() == u.device(), "uv_interp_loss: ", name, " is on ", t->device(), " but u is on ",
                u.device());
  }
  TORCH_CHECK(v.device() == u.device(), "uv_interp_loss: v is on ", v.device(), " but u is on ", u.device());
  TORCH_CHECK(roi_index.scalar_type() == at::kLong, "uv_interp_loss: roi_index must be int64, got ",
              roi_index.scalar_type());
  TORCH_CHECK(part.scalar_type() == at::kLong, "uv_interp_loss: part must be int64, got ", part.scalar_type());
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"x", &x}, {"y", &y},
                                {"target_u", &target_u}, {"target_v", &target_v}}) {
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), "uv_interp_loss: ", name,
                " must be a floating tensor, got ", t->scalar_type());
  }
  TORCH_CHECK(mode == 0 || mode == 1, "uv_interp_loss: mode must be 0 (AMANet) or 1 (Detectron2), got ", mode);
  TORCH_CHECK(beta >= 0, "uv_interp_loss: beta must be >= 0 (0 = L1), got ", beta);
}

// Coordinates and targets are computed in float64 when u is float64, else in float32 (also for
// half / bfloat16 maps on CUDA: a 64-cell grid coordinate needs more than half's 11 bits).
inline at::ScalarType uv_interp_loss_compute_dtype(const at::Tensor& u) {
  return u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// (dU, dV) for a backward kernel to fill, contiguous; an output whose output_mask entry is False
// is undefined. `empty_uv_grads` leaves them uninitialised (the CPU kernel zeroes plane by plane
// as it scatters); `zeros_for_uv_grads` zero-fills them, in `dtype` (the CUDA kernel
// accumulates the gradients of half / bfloat16 maps in float).
inline std::tuple<at::Tensor, at::Tensor> empty_uv_grads(const at::Tensor& u, std::array<bool, 2> output_mask) {
  const auto opts = u.options().memory_format(at::MemoryFormat::Contiguous);
  return {output_mask[0] ? at::empty(u.sizes(), opts) : at::Tensor(),
          output_mask[1] ? at::empty(u.sizes(), opts) : at::Tensor()};
}

inline std::tuple<at::Tensor, at::Tensor> zeros_for_uv_grads(const at::Tensor& u, std::array<bool, 2> output_mask,
                                                            at::ScalarType dtype) {
  const auto opts = u.options().dtype(dtype).memory_format(at::MemoryFormat::Contiguous);
  return {output_mask[0] ? at::zeros(u.sizes(), opts) : at::Tensor(),
          output_mask[1] ? at::zeros(u.sizes(), opts) : at::Tensor()};
}

}  // namespace amanet
