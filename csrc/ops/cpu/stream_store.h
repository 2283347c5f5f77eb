#pragma once
// Writing large CPU outputs without reading them first.
//
// An ordinary store to a line that is not in cache makes the core fetch the line before
// overwriting it (read-for-ownership), so zero-filling B bytes costs 2B of memory traffic.
// Non-temporal ("streaming") stores write whole lines straight to memory: B bytes of traffic.
// Worth it only for buffers far larger than the caches, whose contents will not be read back
// soon; for small ones ordinary stores keep the data cached for whoever reads it next.
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace amanet {
namespace cpu {

// Total output size above which a kernel should stream its writes (a quarter of a typical
// server L3, many times any L2).
constexpr int64_t kStreamMinBytes = int64_t(8) << 20;

// Write `count` elements of type T to `dst` with streaming stores where the ISA has them (SSE2:
// every x86-64 CPU), ordinary stores elsewhere and for the unaligned head and tail: a copy of
// `src`, or zeros when `src` is null. Call stream_fence() before this thread touches `dst` again.
template <typename T>
inline void stream_store(T* dst, const T* src, int64_t count) {
  char* out = reinterpret_cast<char*>(dst);
  const char* in = reinterpret_cast<const char*>(src);
  std::size_t left = static_cast<std::size_t>(count) * sizeof(T);
  auto plain = [&](std::size_t n) {
    if (in != nullptr) {
      std::memcpy(out, in, n);
      in += n;
    } else {
      std::memset(out, 0, n);
    }
    out += n;
    left -= n;
  };
#if defined(__SSE2__)
  const std::size_t misaligned = reinterpret_cast<std::uintptr_t>(out) & 15u;
  if (misaligned != 0) plain(left < 16 - misaligned ? left : 16 - misaligned);
  const std::size_t vectors = left / 16;
  __m128i* out16 = reinterpret_cast<__m128i*>(out);
  if (in != nullptr) {
    const __m128i* in16 = reinterpret_cast<const __m128i*>(in);
    for (std::size_t i = 0; i < vectors; ++i) _mm_stream_si128(out16 + i, _mm_loadu_si128(in16 + i));
    in += vectors * 16;
  } else {
    const __m128i zero = _mm_setzero_si128();
    for (std::size_t i = 0; i < vectors; ++i) _mm_stream_si128(out16 + i, zero);
  }
  out += vectors * 16;
  left -= vectors * 16;
#endif
  plain(left);
}

// Orders this thread's streaming stores before its later loads and stores.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace cpu
}  // namespace amanet
