// AVX2 path: no vector popcount, so count bits with a nibble lookup (vpshufb) and sum the
// byte counts into 64-bit lanes with vpsadbw.
#include <immintrin.h>

#include "kernels.h"

namespace bnn {
namespace avx2_impl {

constexpr int kMaxPx = 7;  // pixels per micro_tile call; 7 divides the row lengths 56, 28, 14 and 7

inline __m256i popcount_bytes(__m256i v, __m256i lut, __m256i low) {
  const __m256i lo = _mm256_and_si256(v, low);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// One output pixel x 16 channels (four ymm of 4 u64 lanes), all state in registers.
// Harley-Seal, one level (see kernels_avx512.cpp), without vpternlogq; the weights come in pair
// form (PackedWeights::pair_blocked: w1 and w12 = w1 ^ w2), so per word pair and channel vector
//   x1 = a1 ^ w1,  d = x1 ^ x2 = (a1 ^ a2) ^ w12,  carry = x1 ^ ((ones ^ x1) & d),  ones ^= d
// with a1 ^ a2 shared by the four vectors and w1, w12 as memory operands (plain loads, no
// broadcast). Carries are counted per byte (vpshufb nibble lookup) and summed in byte lanes; a
// chunk of at most 15 pairs keeps every byte <= 120, so at the end 2 * count + popcount(ones)
// still fits a byte and one vpsadbw folds it; longer reductions flush the bytes to 64-bit sums
// on the stack between chunks.
__attribute__((always_inline)) inline void pixel_kernel(const uint64_t* in, const int64_t* offs, int64_t K,
                                                        const uint64_t* wblk, int32_t k_total, int32_t* val) {
  constexpr int V = 4;
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i o[V], c[V];
  auto ld = [](const uint64_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); };
  auto bc = [](const uint64_t* p) { return _mm256_set1_epi64x(static_cast<long long>(*p)); };
  // One carry-save step over the pair (i, i + 1); `first`: set the counts instead of adding.
  auto step = [&](int64_t i, bool first) __attribute__((always_inline)) {
    const uint64_t* wt = wblk + i * 16;
    const __m256i a1 = bc(in + offs[i]);
    const __m256i a12 = _mm256_xor_si256(a1, bc(in + offs[i + 1]));
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const __m256i x1 = _mm256_xor_si256(a1, ld(wt + v * 4));
      const __m256i d = _mm256_xor_si256(a12, ld(wt + 16 + v * 4));
      const __m256i carry = _mm256_xor_si256(x1, _mm256_and_si256(_mm256_xor_si256(o[v], x1), d));
      o[v] = _mm256_xor_si256(o[v], d);
      const __m256i pc = popcount_bytes(carry, lut, low);
      c[v] = first ? pc : _mm256_add_epi8(c[v], pc);
    }
  };
  int64_t i;
  if (K & 1) {
    // An odd word count starts the `ones` plane with the first word; the rest pair up.
    const __m256i a = bc(in + offs[0]);
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) o[v] = _mm256_xor_si256(a, ld(wblk + v * 4)), c[v] = zero;
    if (K > 1) step(1, true);
    i = K == 1 ? 1 : 3;
  } else {
    // The first pair with ones = 0: carry = x1 & x2 = x1 & ~d, ones = d.
    const __m256i a1 = bc(in + offs[0]);
    const __m256i a12 = _mm256_xor_si256(a1, bc(in + offs[1]));
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const __m256i x1 = _mm256_xor_si256(a1, ld(wblk + v * 4));
      const __m256i d = _mm256_xor_si256(a12, ld(wblk + 16 + v * 4));
      o[v] = d;
      c[v] = popcount_bytes(_mm256_andnot_si256(d, x1), lut, low);
    }
    i = 2;
  }
  alignas(32) uint64_t fl[V][4];  // flushed byte sums (64-bit lanes), written on the first flush
  bool flushed = false;
  int64_t chunk_end = std::min<int64_t>(K, i + 28);  // the first chunk has one pair already
  for (;;) {
    for (; i < chunk_end; i += 2) step(i, false);
    if (i >= K) break;
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      __m256i* t = reinterpret_cast<__m256i*>(fl[v]);
      const __m256i sum = _mm256_sad_epu8(c[v], zero);
      _mm256_store_si256(t, flushed ? _mm256_add_epi64(_mm256_load_si256(t), sum) : sum);
      c[v] = zero;
    }
    flushed = true;
    chunk_end = std::min<int64_t>(K, i + 30);
  }
  // popcount = 2 * count + popcount(ones); val = k_total - 2 * popcount. The counts sit in the
  // low dwords of the 64-bit lanes; ymm 2h holds channels 8h + {0,2,4,6} and ymm 2h + 1 channels
  // 8h + {1,3,5,7} (the pair form's order), so one blend interleaves them into 8h .. 8h + 7.
  const __m256i kt = _mm256_set1_epi32(k_total);
  __m256i s[V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const __m256i b = _mm256_add_epi8(_mm256_add_epi8(c[v], c[v]), popcount_bytes(o[v], lut, low));
    s[v] = _mm256_sad_epu8(b, zero);
    if (flushed) {
      const __m256i f = _mm256_load_si256(reinterpret_cast<const __m256i*>(fl[v]));
      s[v] = _mm256_add_epi64(s[v], _mm256_add_epi64(f, f));
    }
  }
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i cnt = _mm256_blend_epi32(s[2 * h], _mm256_slli_epi64(s[2 * h + 1], 32), 0xAA);
    _mm256_store_si256(reinterpret_cast<__m256i*>(val + h * 8), _mm256_sub_epi32(kt, _mm256_add_epi32(cnt, cnt)));
  }
}

template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* offs, int64_t K, const uint64_t* wblk,
                int32_t k_total, int32_t* val) {
  for (int p = 0; p < PX; ++p) pixel_kernel(in + p * pix_stride, offs, K, wblk, k_total, val + p * 16);
}

// 8x8 transpose of int32.
inline void transpose8(__m256i r[8]) {
  __m256i a[8], b[8];
  for (int i = 0; i < 4; ++i) {
    a[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    b[4 * i + 0] = _mm256_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm256_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm256_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm256_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  // b[4i + k], 128-bit lane L = rows 4i..4i+3 of column 4L + k
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2x128_si256(b[k], b[4 + k], 0x20);
    r[4 + k] = _mm256_permute2x128_si256(b[k], b[4 + k], 0x31);
  }
}

// 8 pixels x 16 channels, no tails: branch-free (the common case).
template <bool kScale, bool kBias>
inline void store_full8(const int32_t* val, const float* scale, const float* bias, float* dst, int64_t plane) {
#pragma GCC unroll 2
  for (int h = 0; h < 16; h += 8) {
    __m256i r[8];
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) r[p] = _mm256_load_si256(reinterpret_cast<const __m256i*>(val + p * 16 + h));
    transpose8(r);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      __m256 f = _mm256_cvtepi32_ps(r[j]);
      if (kScale) f = _mm256_mul_ps(f, _mm256_set1_ps(scale[h + j]));
      if (kBias) f = _mm256_add_ps(f, _mm256_set1_ps(bias[h + j]));
      _mm256_storeu_ps(dst + (h + j) * plane, f);
    }
  }
}

inline void store_block(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                        int64_t plane) {
  int p0 = 0;
  if (nO == 16) {
    const int full = np & ~7;
    if (scale && bias)
      for (; p0 < full; p0 += 8) store_full8<true, true>(val + p0 * 16, scale, bias, dst + p0, plane);
    else if (scale)
      for (; p0 < full; p0 += 8) store_full8<true, false>(val + p0 * 16, scale, bias, dst + p0, plane);
    else if (bias)
      for (; p0 < full; p0 += 8) store_full8<false, true>(val + p0 * 16, scale, bias, dst + p0, plane);
    else
      for (; p0 < full; p0 += 8) store_full8<false, false>(val + p0 * 16, scale, bias, dst + p0, plane);
  }
  for (; p0 < np; p0 += 8) {
    const int n = std::min(8, np - p0);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int h = 0; h < 16 && h < nO; h += 8) {
      __m256i r[8];
      for (int p = 0; p < 8; ++p)
        r[p] = p < n ? _mm256_load_si256(reinterpret_cast<const __m256i*>(val + (p0 + p) * 16 + h))
                     : _mm256_setzero_si256();
      transpose8(r);
      for (int j = 0; j < 8 && h + j < nO; ++j) {
        __m256 f = _mm256_cvtepi32_ps(r[j]);
        if (scale) f = _mm256_mul_ps(f, _mm256_set1_ps(scale[h + j]));
        if (bias) f = _mm256_add_ps(f, _mm256_set1_ps(bias[h + j]));
        float* d = dst + (h + j) * plane + p0;
        if (n == 8) _mm256_storeu_ps(d, f);
        else _mm256_maskstore_ps(d, mask, f);
      }
    }
  }
}

// Channels-last output: a pixel's 16 channel values are contiguous in the tile already.
inline void store_block_nhwc(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                             int64_t pixel_stride) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int h = 0; h < nO; h += 8) {
    const int n = std::min(8, nO - h);
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane);
    const __m256 sc = scale ? _mm256_maskload_ps(scale + h, mask) : _mm256_set1_ps(1.0f);
    const __m256 bi = bias ? _mm256_maskload_ps(bias + h, mask) : _mm256_setzero_ps();
    for (int p = 0; p < np; ++p) {
      __m256 f = _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(val + p * 16 + h)));
      if (scale) f = _mm256_mul_ps(f, sc);
      if (bias) f = _mm256_add_ps(f, bi);
      float* d = dst + p * pixel_stride + h;
      if (n == 8) _mm256_storeu_ps(d, f);
      else _mm256_maskstore_ps(d, mask, f);
    }
  }
}

// Binarised output: the same float value per channel as store_block_nhwc, then a compare (true
// for negative or NaN) and movemask per 8 channels.
inline void store_block_sign(const int32_t* val, int np, int nO, const float* scale, const float* bias,
                             uint16_t* dst, int64_t pixel_stride) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nO), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nO - 8), lane);
  const __m256 sc0 = scale ? _mm256_maskload_ps(scale, m0) : _mm256_set1_ps(1.0f);
  const __m256 sc1 = scale ? _mm256_maskload_ps(scale + 8, m1) : _mm256_set1_ps(1.0f);
  const __m256 bi0 = bias ? _mm256_maskload_ps(bias, m0) : _mm256_setzero_ps();
  const __m256 bi1 = bias ? _mm256_maskload_ps(bias + 8, m1) : _mm256_setzero_ps();
  const unsigned keep = (1u << nO) - 1;
  const __m256 zero = _mm256_setzero_ps();
  for (int p = 0; p < np; ++p) {
    __m256 f0 = _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(val + p * 16)));
    __m256 f1 = _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(val + p * 16 + 8)));
    if (scale) f0 = _mm256_mul_ps(f0, sc0), f1 = _mm256_mul_ps(f1, sc1);
    if (bias) f0 = _mm256_add_ps(f0, bi0), f1 = _mm256_add_ps(f1, bi1);
    const unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(f0, zero, _CMP_NGE_UQ))) |
                          static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(f1, zero, _CMP_NGE_UQ))) << 8;
    dst[p * pixel_stride] = static_cast<uint16_t>(bits & keep);
  }
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
                                 8 * 256, nullptr, nullptr, /*pair_weights=*/true};
  return table;
}

}  // namespace bnn
