// AVX-512 path with VPOPCNTQ: an outer-product register tile of kMaxPx output pixels x 16
// output channels; each step broadcasts one activation word, XORs it with the same word of 16
// channels' weights (two zmm) and accumulates the popcounts.
#include <immintrin.h>

#include "kernels.h"

namespace bnn {
namespace avx512_impl {

constexpr int kMaxPx = 12;

template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* taps, int64_t ntaps, int64_t words,
                const uint64_t* wblk, uint32_t* acc) {
  __m512i a0[PX], a1[PX];
  for (int p = 0; p < PX; ++p) a0[p] = a1[p] = _mm512_setzero_si512();
  for (int64_t t = 0; t < ntaps; ++t) {
    const uint64_t* src = in + taps[t];
    const uint64_t* wt = wblk + t * words * 16;
    for (int64_t k = 0; k < words; ++k) {
      const __m512i w0 = _mm512_load_si512(wt + k * 16);
      const __m512i w1 = _mm512_load_si512(wt + k * 16 + 8);
      for (int p = 0; p < PX; ++p) {
        const __m512i b = _mm512_set1_epi64(static_cast<long long>(src[p * pix_stride + k]));
        a0[p] = _mm512_add_epi64(a0[p], _mm512_popcnt_epi64(_mm512_xor_si512(b, w0)));
        a1[p] = _mm512_add_epi64(a1[p], _mm512_popcnt_epi64(_mm512_xor_si512(b, w1)));
      }
    }
  }
  for (int p = 0; p < PX; ++p) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + p * 16), _mm512_cvtepi64_epi32(a0[p]));
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + p * 16 + 8), _mm512_cvtepi64_epi32(a1[p]));
  }
}

uint64_t sign_mask64(const float* p, int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  uint64_t m = 0;
  for (int i = 0; i < 4 && i * 16 < n; ++i) {
    const int64_t left = n - i * 16;
    const __mmask16 valid = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(valid, p + i * 16);  // masked-off lanes read 0 -> +1
    m |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(valid, v, zero, _CMP_NGE_UQ)) << (i * 16);
  }
  return m;
}

#include "conv_driver.inc"

}  // namespace avx512_impl

const KernelTable& avx512_kernels() {
  static const KernelTable table{Isa::avx512, &avx512_impl::sign_mask64, &avx512_impl::conv_row};
  return table;
}

}  // namespace bnn
