#pragma once
// Adaptive aggregation (AMA head, DESIGN.md §3): the per-element math, shared by the CPU loops
// (cpu/adaptive_aggregation.cpp) and the CUDA kernels (cuda/adaptive_aggregation.cu).
//
//   features F [N, P, C, H, W], gates g [N, P, C]
//   forward:  G[n,p,c,i] = g[n,p,c] * F[n,p,c,i]         (written only when need_gated)
//             S[n,c,i]   = sum_p G[n,p,c,i]              (summed in path order p = 0, 1, ...)
//   backward: t          = dS[n,c,i] + dG[n,p,c,i]       (either term may be absent)
//             dF[n,p,c,i] = g[n,p,c] * t
//             dg[n,p,c]   = sum_i F[n,p,c,i] * t         (accumulated in acc_t)
//
// Minimum memory traffic per call (E = sizeof(scalar), X = N*P*C*H*W, Y = N*C*H*W = X/P):
//   forward, need_gated=false: read F + g, write S            = E*(X + N*P*C + Y)
//   forward, need_gated=true:  read F + g, write G and S      = E*(2X + N*P*C + Y)
//   backward (dS and dG):      read F, g, dS, dG; write dF, dg = E*(3X + Y + 2*N*P*C)
//   backward (dS only):        read F, g, dS; write dF, dg     = E*(2X + Y + 2*N*P*C)
// Both device implementations make exactly one pass over F (and dG) per call: an (n, c) row of
// S / dS (H*W elements) is reused across the P paths from L1/L2 on the CPU and from registers
// / L2 on the GPU, so the traffic stays at these minimums (plus the read-for-ownership of the
// written lines, which the hardware adds to every store).
#include "host_device.h"

namespace amanet {
namespace aggregation {

template <typename T>
AMANET_HOST_DEVICE inline T gate(T feature, T g) {
  return feature * g;  // same operand order as the reference `features * gates[..., None, None]`
}

template <typename T>
AMANET_HOST_DEVICE inline T accumulate(T sum, T gated) {
  return sum + gated;
}

// Upstream gradient reaching G[n,p,c,i]: its own gradient plus the broadcast gradient of S.
template <typename T>
AMANET_HOST_DEVICE inline T upstream(T grad_summed, T grad_gated) {
  return grad_summed + grad_gated;
}

template <typename T>
AMANET_HOST_DEVICE inline T grad_feature(T g, T upstream_grad) {
  return upstream_grad * g;
}

template <typename T, typename Acc>
AMANET_HOST_DEVICE inline Acc grad_gate_term(T feature, T upstream_grad) {
  return static_cast<Acc>(feature) * static_cast<Acc>(upstream_grad);
}

}  // namespace aggregation
}  // namespace amanet
