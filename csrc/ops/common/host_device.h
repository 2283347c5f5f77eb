#pragma once
// AMANET_HOST_DEVICE marks the per-element math in csrc/ops/common/*.h: the same inline function
// is compiled into the CPU loops (plain C++) and into the CUDA kernels (nvcc), so both devices run
// one copy of the math.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define AMANET_HOST_DEVICE __host__ __device__
#else
#define AMANET_HOST_DEVICE
#endif

#if defined(__CUDA_ARCH__)
#include <math.h>  // device overloads of floor(float) etc.
#else
#include <cmath>
#endif

namespace amanet {

// floor for float and double on host and device (std::floor is not a __device__ function).
template <typename T>
AMANET_HOST_DEVICE inline T hd_floor(T v) {
#if defined(__CUDA_ARCH__)
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

template <typename T>
AMANET_HOST_DEVICE inline T hd_abs(T v) {
  return v < T(0) ? -v : v;
}

}  // namespace amanet
