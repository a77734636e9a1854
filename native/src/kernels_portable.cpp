// Portable path: plain C++, compiles anywhere (aarch64 included). Correct, not fast.
#include "kernels.h"

namespace bnn {
namespace portable_impl {

constexpr int kMaxPx = 4;

inline int popcount64(uint64_t v) { return __builtin_popcountll(v); }

template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* offs, int64_t K, const uint64_t* wblk,
                int32_t k_total, int32_t* val) {
  uint32_t a[PX][16] = {};
  for (int64_t i = 0; i < K; ++i) {
    const uint64_t* wt = wblk + i * 16;
    for (int p = 0; p < PX; ++p) {
      const uint64_t v = in[p * pix_stride + offs[i]];
      for (int j = 0; j < 16; ++j) a[p][j] += popcount64(v ^ wt[j]);
    }
  }
  for (int p = 0; p < PX; ++p)
    for (int j = 0; j < 16; ++j) val[p * 16 + j] = k_total - 2 * static_cast<int32_t>(a[p][j]);
}

inline void store_block_scalar(const int32_t*, int, int, const float*, const float*, float*, int64_t);
inline void store_block(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                        int64_t plane) {
  store_block_scalar(val, np, nO, scale, bias, dst, plane);
}

inline void store_block_nhwc_scalar(const int32_t*, int, int, const float*, const float*, float*, int64_t);
inline void store_block_nhwc(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                             int64_t pixel_stride) {
  store_block_nhwc_scalar(val, np, nO, scale, bias, dst, pixel_stride);
}

inline void store_block_sign_scalar(const int32_t*, int, int, const float*, const float*, uint16_t*, int64_t);
inline void store_block_sign(const int32_t* val, int np, int nO, const float* scale, const float* bias, uint16_t* dst,
                             int64_t pixel_stride) {
  store_block_sign_scalar(val, np, nO, scale, bias, dst, pixel_stride);
}

inline void add16(int32_t* v, const int32_t* c) {
  for (int j = 0; j < 16; ++j) v[j] += c[j];
}

uint64_t sign_mask64(const float* p, int64_t n) {
  uint64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m |= static_cast<uint64_t>(!(p[i] >= 0.0f)) << i;
  return m;
}

#include "conv_driver.inc"

uint64_t peak_loop(int64_t iters) {
  uint64_t w0 = 0x0123456789abcdefULL, w1 = 0x7edcba9876543210ULL, a[8] = {};
  for (int64_t it = 0; it < iters; ++it) {
    for (int p = 0; p < 4; ++p) {
      const uint64_t b = 0x5555aaaa3333cccdULL * (p + 1);
      a[2 * p] += popcount64(b ^ w0);
      a[2 * p + 1] += popcount64(b ^ w1);
    }
    __asm__ volatile("" : "+r"(w0), "+r"(w1));
  }
  uint64_t s = 0;
  for (uint64_t v : a) s += v;
  return s;
}

}  // namespace portable_impl

const KernelTable& portable_kernels() {
  static const KernelTable table{Isa::portable, &portable_impl::sign_mask64, &portable_impl::conv_row,
                                 &portable_impl::peak_loop, 8 * 64, nullptr};
  return table;
}

}  // namespace bnn
