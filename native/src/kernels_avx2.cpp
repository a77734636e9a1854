// AVX2 path: no vector popcount, so count bits with a nibble lookup (vpshufb) and sum the
// byte counts into 64-bit lanes with vpsadbw.
#include <immintrin.h>

#include "kernels.h"

namespace bnn {
namespace avx2_impl {

constexpr int kMaxPx = 2;

inline __m256i popcount_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* offs, int64_t K, const uint64_t* wblk,
                int32_t k_total, int32_t* val) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i a[PX][4];
  for (int p = 0; p < PX; ++p)
    for (int v = 0; v < 4; ++v) a[p][v] = zero;
  for (int64_t i = 0; i < K; ++i) {
    const uint64_t* wt = wblk + i * 16;
    __m256i b[PX];
    for (int p = 0; p < PX; ++p) b[p] = _mm256_set1_epi64x(static_cast<long long>(in[p * pix_stride + offs[i]]));
    for (int v = 0; v < 4; ++v) {
      const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(wt + v * 4));
      for (int p = 0; p < PX; ++p) {
        const __m256i c = popcount_bytes(_mm256_xor_si256(b[p], wv), lut, low);
        a[p][v] = _mm256_add_epi64(a[p][v], _mm256_sad_epu8(c, zero));
      }
    }
  }
  for (int p = 0; p < PX; ++p)
    for (int v = 0; v < 4; ++v) {
      alignas(32) uint64_t lanes[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a[p][v]);
      for (int l = 0; l < 4; ++l) val[p * 16 + v * 4 + l] = k_total - 2 * static_cast<int32_t>(lanes[l]);
    }
}

inline void store_block_scalar(const int32_t*, int, int, const float*, const float*, float*, int64_t);
inline void store_block(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                        int64_t plane) {
  store_block_scalar(val, np, nO, scale, bias, dst, plane);
}

inline void add16(int32_t* v, const int32_t* c) {
  __m256i* d = reinterpret_cast<__m256i*>(v);
  const __m256i* s = reinterpret_cast<const __m256i*>(c);
  _mm256_store_si256(d, _mm256_add_epi32(_mm256_load_si256(d), _mm256_loadu_si256(s)));
  _mm256_store_si256(d + 1, _mm256_add_epi32(_mm256_load_si256(d + 1), _mm256_loadu_si256(s + 1)));
}

uint64_t sign_mask64(const float* p, int64_t n) {
  const __m256 zero = _mm256_setzero_ps();
  uint64_t m = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(p + i);
    m |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_NGE_UQ))) << i;
  }
  for (; i < n; ++i) m |= static_cast<uint64_t>(!(p[i] >= 0.0f)) << i;
  return m;
}

#include "conv_driver.inc"

uint64_t peak_loop(int64_t iters) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  __m256i w0 = _mm256_set1_epi64x(0x0123456789abcdefLL), w1 = _mm256_set1_epi64x(0x7edcba9876543210LL);
  __m256i a[8], b[4];
  for (int i = 0; i < 8; ++i) a[i] = zero;
  for (int i = 0; i < 4; ++i) b[i] = _mm256_set1_epi64x(static_cast<long long>(0x5555aaaa3333cccdULL * (i + 1)));
  for (int64_t it = 0; it < iters; ++it) {
    for (int p = 0; p < 4; ++p) {
      a[2 * p] = _mm256_add_epi64(a[2 * p], _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(b[p], w0), lut, low), zero));
      a[2 * p + 1] = _mm256_add_epi64(a[2 * p + 1], _mm256_sad_epu8(popcount_bytes(_mm256_xor_si256(b[p], w1), lut, low), zero));
    }
    __asm__ volatile("" : "+x"(w0), "+x"(w1));
  }
  __m256i s = a[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi64(s, a[i]);
  alignas(32) uint64_t l[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), s);
  return l[0] + l[1] + l[2] + l[3];
}

}  // namespace avx2_impl

const KernelTable& avx2_kernels() {
  static const KernelTable table{Isa::avx2, &avx2_impl::sign_mask64, &avx2_impl::conv_row, &avx2_impl::peak_loop,
                                 8 * 256, nullptr};
  return table;
}

}  // namespace bnn
