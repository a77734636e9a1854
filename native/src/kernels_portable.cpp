// Portable path: plain C++, compiles anywhere (aarch64 included). Correct, not fast.
#include "kernels.h"

namespace bnn {
namespace portable_impl {

constexpr int kMaxPx = 4;

inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* taps, int64_t ntaps, int64_t words,
                const uint64_t* wblk, uint32_t* acc) {
  uint32_t a[PX][16] = {};
  for (int64_t t = 0; t < ntaps; ++t) {
    const uint64_t* src = in + taps[t];
    const uint64_t* wt = wblk + t * words * 16;
    for (int64_t k = 0; k < words; ++k)
      for (int p = 0; p < PX; ++p) {
        const uint64_t v = src[p * pix_stride + k];
        for (int j = 0; j < 16; ++j) a[p][j] += popcount64(v ^ wt[k * 16 + j]);
      }
  }
  for (int p = 0; p < PX; ++p)
    for (int j = 0; j < 16; ++j) acc[p * 16 + j] = a[p][j];
}

uint64_t sign_mask64(const float* p, int64_t n) {
  uint64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m |= static_cast<uint64_t>(!(p[i] >= 0.0f)) << i;
  return m;
}

#include "conv_driver.inc"

}  // namespace portable_impl

const KernelTable& portable_kernels() {
  static const KernelTable table{Isa::portable, &portable_impl::sign_mask64, &portable_impl::conv_row};
  return table;
}

}  // namespace bnn
