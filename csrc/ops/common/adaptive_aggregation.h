#pragma once
// Adaptive aggregation (AMA head, DESIGN.md §3): the per-element math, shared by the CPU loops
// (cpu/adaptive_aggregation.cpp) and the CUDA kernels (cuda/adaptive_aggregation.cu).
//
//   features F [N, P, C, H, W], gates g [N, P, C], group size s (0, or a divisor of P), K = P / s
//   forward:  G[n,p,c,i]  = g[n,p,c] * F[n,p,c,i]                  (never stored)
//             R[n,k,c,i]  = sum_{p in [k*s, (k+1)*s)} G[n,p,c,i]   (written only when s > 0)
//             S[n,c,i]    = sum_p G[n,p,c,i]
//             (both sums run in path order p = 0, 1, ...; s = 1 makes R = G)
//   backward: t           = dS[n,c,i] + dR[n,p/s,c,i]              (either term may be absent)
//             dF[n,p,c,i] = g[n,p,c] * t
//             dg[n,p,c]   = sum_i F[n,p,c,i] * t                    (accumulated in acc_t)
//
// Why group sums: the AMA predictor's intermediate supervision reads only G1+G2 and G3+G4
// (s = 2), so the training forward writes X/2 instead of G's X and the backward reads X/2 of
// dR instead of dG's X, and nobody allocates G.
//
// Minimum memory traffic per call (E = sizeof(scalar), X = N*P*C*H*W, Y = N*C*H*W = X/P,
// R = K*Y, the group-sum size):
//   forward:                    read F + g, write R and S     = E*(X + N*P*C + R + Y)
//   backward (dS and dR):       read F, g, dS, dR; write dF, dg = E*(2X + Y + R + 2*N*P*C)
//   backward (dS only):         read F, g, dS; write dF, dg     = E*(2X + Y + 2*N*P*C)
// Both device implementations make exactly one pass over F per call: an (n, c) row of S / dS
// and of the current group's R / dR (H*W elements each) is reused across the paths from L1/L2
// on the CPU and from registers / L2 on the GPU, so the traffic stays at these minimums (plus
// the read-for-ownership of the written lines, which the hardware adds to every store).
#include <cstdint>

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

// Index of path p's group in R (group_size > 0).
AMANET_HOST_DEVICE inline int64_t group_of(int64_t p, int64_t group_size) {
  return p / group_size;
}

// True when path p starts a new group sum (its R value is G, not R + G).
AMANET_HOST_DEVICE inline bool starts_group(int64_t p, int64_t group_size) {
  return p % group_size == 0;
}

// Upstream gradient reaching G[n,p,c,i]: the broadcast gradients of S and of p's group sum.
template <typename T>
AMANET_HOST_DEVICE inline T upstream(T grad_summed, T grad_group) {
  return grad_summed + grad_group;
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
