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
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* taps, int64_t ntaps, int64_t words,
                const uint64_t* wblk, uint32_t* acc) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i a[PX][4];
  for (int p = 0; p < PX; ++p)
    for (int v = 0; v < 4; ++v) a[p][v] = zero;
  for (int64_t t = 0; t < ntaps; ++t) {
    const uint64_t* src = in + taps[t];
    const uint64_t* wt = wblk + t * words * 16;
    for (int64_t k = 0; k < words; ++k) {
      __m256i b[PX];
      for (int p = 0; p < PX; ++p) b[p] = _mm256_set1_epi64x(static_cast<long long>(src[p * pix_stride + k]));
      for (int v = 0; v < 4; ++v) {
        const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(wt + k * 16 + v * 4));
        for (int p = 0; p < PX; ++p) {
          const __m256i c = popcount_bytes(_mm256_xor_si256(b[p], wv), lut, low);
          a[p][v] = _mm256_add_epi64(a[p][v], _mm256_sad_epu8(c, zero));
        }
      }
    }
  }
  for (int p = 0; p < PX; ++p)
    for (int v = 0; v < 4; ++v) {
      alignas(32) uint64_t lanes[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a[p][v]);
      for (int l = 0; l < 4; ++l) acc[p * 16 + v * 4 + l] = static_cast<uint32_t>(lanes[l]);
    }
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

}  // namespace avx2_impl

const KernelTable& avx2_kernels() {
  static const KernelTable table{Isa::avx2, &avx2_impl::sign_mask64, &avx2_impl::conv_row};
  return table;
}

}  // namespace bnn
