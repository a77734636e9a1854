// AVX-512 path with VPOPCNTQ: an outer-product register tile of up to kMaxPx output pixels x
// 16 output channels (two zmm of u64 lanes). VPOPCNTQ is the bottleneck, so reduction words
// are taken in pairs through a carry-save adder (Harley-Seal, one level): per pixel and
// channel vector the kernel keeps `ones` (a running bit plane of weight 1) and `twos` (the
// popcount sum of the carries, weight 2), i.e. one VPOPCNTQ per two words instead of two:
//   x1 = a1 ^ w1, x2 = a2 ^ w2 = x1 ^ d with d = (a1 ^ a2) ^ (w1 ^ w2)
//   ones' = ones ^ x1 ^ x2 = ones ^ (a1 ^ a2) ^ (w1 ^ w2)          (one vpternlogq)
//   carry = maj(ones, x1, x2) = (ones ^ ones') ? ones : x1           (one vpternlogq)
//   twos += popcount(carry)
// and at the end popcount = 2 * twos + popcount(ones). The weights come in pair form
// (PackedWeights::pair_blocked: w1 and w12 = w1 ^ w2 precomputed, channels in the AVX2 order
// 0,2,4,6,1,3,5,7,.. which the final permute undoes), and 64-bit xors let the compiler fold a2's
// broadcast into the a1 ^ a2 xor.
#include <immintrin.h>

#include "kernels.h"

namespace bnn {
namespace avx512_impl {

constexpr int kMaxPx = 6;

template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* offs, int64_t K, const uint64_t* wblk,
                int32_t k_total, int32_t* val) {
  __m512i o0[PX], o1[PX], t0[PX], t1[PX];
  // One carry-save step over the word pair (i, i + 1). The first pair of the tile is peeled:
  // it sets `twos` instead of adding to zero, and with no odd first word (`ones` = 0) its
  // carry is x1 & x2 and its new `ones` is x1 ^ x2.
  auto step = [&](int64_t i, bool first, bool ones_zero) __attribute__((always_inline)) {
    const uint64_t* wt = wblk + i * 16;
    const uint64_t* s1 = in + offs[i];
    const uint64_t* s2 = in + offs[i + 1];
    const __m512i w10 = _mm512_load_si512(wt);
    const __m512i w11 = _mm512_load_si512(wt + 8);
    const __m512i d0 = _mm512_load_si512(wt + 16);  // pair form: w1 ^ w2
    const __m512i d1 = _mm512_load_si512(wt + 24);
#pragma GCC unroll 16
    for (int p = 0; p < PX; ++p) {
      const __m512i a1 = _mm512_set1_epi64(static_cast<long long>(s1[p * pix_stride]));
      const __m512i a12 = _mm512_xor_epi64(a1, _mm512_set1_epi64(static_cast<long long>(s2[p * pix_stride])));
      __m512i c0, c1;
      if (ones_zero) {
        c0 = _mm512_ternarylogic_epi64(_mm512_xor_epi64(a1, w10), a12, d0, 0x90);  // x1 & ~(a12 ^ d)
        c1 = _mm512_ternarylogic_epi64(_mm512_xor_epi64(a1, w11), a12, d1, 0x90);
        o0[p] = _mm512_xor_epi64(a12, d0);
        o1[p] = _mm512_xor_epi64(a12, d1);
      } else {
        const __m512i n0 = _mm512_ternarylogic_epi64(o0[p], a12, d0, 0x96);
        c0 = _mm512_ternarylogic_epi64(o0[p], n0, _mm512_xor_epi64(a1, w10), 0xB2);
        o0[p] = n0;
        const __m512i n1 = _mm512_ternarylogic_epi64(o1[p], a12, d1, 0x96);
        c1 = _mm512_ternarylogic_epi64(o1[p], n1, _mm512_xor_epi64(a1, w11), 0xB2);
        o1[p] = n1;
      }
      if (first) {
        t0[p] = _mm512_popcnt_epi64(c0);
        t1[p] = _mm512_popcnt_epi64(c1);
      } else {
        t0[p] = _mm512_add_epi64(t0[p], _mm512_popcnt_epi64(c0));
        t1[p] = _mm512_add_epi64(t1[p], _mm512_popcnt_epi64(c1));
      }
    }
  };
  int64_t i = 0;
  if (K & 1) {
    // An odd word count starts the `ones` plane with the first word; the rest pair up.
    const __m512i w10 = _mm512_load_si512(wblk), w11 = _mm512_load_si512(wblk + 8);
    const uint64_t* s1 = in + offs[0];
#pragma GCC unroll 16
    for (int p = 0; p < PX; ++p) {
      const __m512i a1 = _mm512_set1_epi64(static_cast<long long>(s1[p * pix_stride]));
      o0[p] = _mm512_xor_epi64(a1, w10);
      o1[p] = _mm512_xor_epi64(a1, w11);
    }
    if (K == 1) {
#pragma GCC unroll 16
      for (int p = 0; p < PX; ++p) t0[p] = t1[p] = _mm512_setzero_si512();
      i = 1;
    } else {
      step(1, true, false);
      i = 3;
    }
  } else {
    step(0, true, true);
    i = 2;
  }
  for (; i < K; i += 2) step(i, false, false);
  // val = k_total - 2 * (2 * twos + popcount(ones))
  const __m512i kt = _mm512_set1_epi32(k_total);
  // low dword of the lane (slot) that holds channel j in the pair form's order
  const __m512i even = _mm512_setr_epi32(0, 8, 2, 10, 4, 12, 6, 14, 16, 24, 18, 26, 20, 28, 22, 30);
#pragma GCC unroll 16
  for (int p = 0; p < PX; ++p) {
    const __m512i s0 = _mm512_add_epi64(_mm512_slli_epi64(t0[p], 1), _mm512_popcnt_epi64(o0[p]));
    const __m512i s1 = _mm512_add_epi64(_mm512_slli_epi64(t1[p], 1), _mm512_popcnt_epi64(o1[p]));
    const __m512i cnt = _mm512_permutex2var_epi32(s0, even, s1);  // low dwords of the 16 lanes
    _mm512_store_si512(val + p * 16, _mm512_sub_epi32(kt, _mm512_add_epi32(cnt, cnt)));
  }
}

// The first two stages of an int32 transpose of R rows (R = 8 or 16): 4x4 blocks within each
// 128-bit lane, so that afterwards b[4i + k], 128-bit lane L = rows 4i..4i+3 of column 4L + k.
template <int R>
inline void transpose_4x4_blocks(const __m512i r[R], __m512i b[R]) {
  __m512i a[R];
  for (int i = 0; i < R / 2; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < R / 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
}

// 16x16 transpose of int32: r[i] lane j -> r[j] lane i.
inline void transpose16(__m512i r[16]) {
  __m512i b[16];
  transpose_4x4_blocks<16>(r, b);
  for (int k = 0; k < 4; ++k) {
    const __m512i u = _mm512_shuffle_i32x4(b[k], b[4 + k], 0x88);
    const __m512i v = _mm512_shuffle_i32x4(b[k], b[4 + k], 0xDD);
    const __m512i u2 = _mm512_shuffle_i32x4(b[8 + k], b[12 + k], 0x88);
    const __m512i v2 = _mm512_shuffle_i32x4(b[8 + k], b[12 + k], 0xDD);
    r[k] = _mm512_shuffle_i32x4(u, u2, 0x88);
    r[8 + k] = _mm512_shuffle_i32x4(u, u2, 0xDD);
    r[4 + k] = _mm512_shuffle_i32x4(v, v2, 0x88);
    r[12 + k] = _mm512_shuffle_i32x4(v, v2, 0xDD);
  }
}

// A group of at most 8 pixels: an 8 x 16 transpose (24 shuffles instead of the 16 x 16's 64);
// each result holds 8 pixels of two channels (c and c + 4, or c + 8 and c + 12).
inline void store_group8(const int32_t* val, int n, int nO, const float* scale, const float* bias, float* dst,
                         int64_t plane) {
  const __mmask8 m = static_cast<__mmask8>((1u << n) - 1);
  __m512i r[8], b[8];
  for (int p = 0; p < 8; ++p) r[p] = p < n ? _mm512_load_si512(val + p * 16) : _mm512_setzero_si512();
  transpose_4x4_blocks<8>(r, b);
  // b[4i + k], 128-bit lane L = pixels 4i..4i+3 of channel 4L + k
  const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);   // channels k, 4 + k
  const __m512i hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);  // channels 8 + k, 12 + k
  for (int k = 0; k < 4; ++k)
    for (int half = 0; half < 2; ++half) {
      const int c0 = 8 * half + k, c1 = c0 + 4;
      if (c0 >= nO) continue;
      __m512 f = _mm512_cvtepi32_ps(_mm512_permutex2var_epi64(b[k], half ? hi : lo, b[4 + k]));
      if (scale)
        f = _mm512_mul_ps(f, _mm512_insertf32x8(_mm512_set1_ps(scale[c0]), _mm256_set1_ps(c1 < nO ? scale[c1] : 0.0f), 1));
      if (bias)
        f = _mm512_add_ps(f, _mm512_insertf32x8(_mm512_set1_ps(bias[c0]), _mm256_set1_ps(c1 < nO ? bias[c1] : 0.0f), 1));
      _mm256_mask_storeu_ps(dst + c0 * plane, m, _mm512_castps512_ps256(f));
      if (c1 < nO) _mm256_mask_storeu_ps(dst + c1 * plane, m, _mm512_extractf32x8_ps(f, 1));
    }
}

inline void store_block(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                        int64_t plane) {
  // Start with a short group when that puts the other groups' stores on 64-byte boundaries
  // (a misaligned 16-float store splits a cache line) without adding a group.
  int first = 16;
  const int mis = static_cast<int>((reinterpret_cast<uintptr_t>(dst) / sizeof(float)) % 16);
  if (mis != 0 && plane % 16 == 0 && (np + mis + 15) / 16 == (np + 15) / 16 && np > 16 - mis) first = 16 - mis;
  for (int p0 = 0; p0 < np; p0 += p0 == 0 ? first : 16) {
    const int n = std::min(p0 == 0 ? first : 16, np - p0);
    if (n <= 8) {
      store_group8(val + p0 * 16, n, nO, scale, bias, dst + p0, plane);
      continue;
    }
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    __m512i r[16];
    for (int p = 0; p < 16; ++p) r[p] = p < n ? _mm512_load_si512(val + (p0 + p) * 16) : _mm512_setzero_si512();
    transpose16(r);
    for (int j = 0; j < nO; ++j) {
      __m512 f = _mm512_cvtepi32_ps(r[j]);
      if (scale) f = _mm512_mul_ps(f, _mm512_set1_ps(scale[j]));
      if (bias) f = _mm512_add_ps(f, _mm512_set1_ps(bias[j]));
      _mm512_mask_storeu_ps(dst + j * plane + p0, m, f);
    }
  }
}

// Channels-last output: a pixel's 16 channel values are contiguous in the tile already.
inline void store_block_nhwc(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                             int64_t pixel_stride) {
  const __mmask16 m = static_cast<__mmask16>((1u << nO) - 1);
  const __m512 sc = scale ? _mm512_maskz_loadu_ps(m, scale) : _mm512_set1_ps(1.0f);
  const __m512 bi = bias ? _mm512_maskz_loadu_ps(m, bias) : _mm512_setzero_ps();
  if (nO == 16) {
    for (int p = 0; p < np; ++p) {
      __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512(val + p * 16));
      if (scale) f = _mm512_mul_ps(f, sc);
      if (bias) f = _mm512_add_ps(f, bi);
      _mm512_storeu_ps(dst + p * pixel_stride, f);
    }
    return;
  }
  for (int p = 0; p < np; ++p) {
    __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512(val + p * 16));
    if (scale) f = _mm512_mul_ps(f, sc);
    if (bias) f = _mm512_add_ps(f, bi);
    _mm512_mask_storeu_ps(dst + p * pixel_stride, m, f);
  }
}

// Binarised output: the same float value per channel as store_block_nhwc, then one compare
// (true for negative or NaN) gives the pixel's 16 bits.
inline void store_block_sign(const int32_t* val, int np, int nO, const float* scale, const float* bias,
                             uint16_t* dst, int64_t pixel_stride) {
  const __mmask16 m = static_cast<__mmask16>((1u << nO) - 1);
  const __m512 sc = scale ? _mm512_maskz_loadu_ps(m, scale) : _mm512_set1_ps(1.0f);
  const __m512 bi = bias ? _mm512_maskz_loadu_ps(m, bias) : _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  for (int p = 0; p < np; ++p) {
    __m512 f = _mm512_cvtepi32_ps(_mm512_load_si512(val + p * 16));
    if (scale) f = _mm512_mul_ps(f, sc);
    if (bias) f = _mm512_add_ps(f, bi);
    dst[p * pixel_stride] = static_cast<uint16_t>(_mm512_mask_cmp_ps_mask(m, f, zero, _CMP_NGE_UQ));
  }
}

inline void add16(int32_t* v, const int32_t* c) {
  _mm512_store_si512(v, _mm512_add_epi32(_mm512_load_si512(v), _mm512_loadu_si512(c)));
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

// NCHW row packing without a bit transpose: for 16 pixels at a time, each channel's compare
// mask sets bit c of the pixels' words with one masked OR per 8 pixels.
void pack_nchw_row(const float* x, int64_t cstride, int64_t W, int64_t C, int64_t words, uint64_t* dst) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t w0 = 0; w0 < W; w0 += 16) {
    const int64_t n = std::min<int64_t>(16, W - w0);
    const __mmask16 valid = static_cast<__mmask16>((1u << n) - 1);
    for (int64_t k = 0; k < words; ++k) {
      const int64_t c0 = k * 64, nc = std::min<int64_t>(64, C - c0);
      __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
      __m512i bit = _mm512_set1_epi64(1);
      const float* src = x + c0 * cstride + w0;
      for (int64_t c = 0; c < nc; ++c) {
        const __m512 v = _mm512_maskz_loadu_ps(valid, src + c * cstride);
        const __mmask16 m = _mm512_mask_cmp_ps_mask(valid, v, zero, _CMP_NGE_UQ);
        lo = _mm512_mask_or_epi64(lo, static_cast<__mmask8>(m), lo, bit);
        hi = _mm512_mask_or_epi64(hi, static_cast<__mmask8>(m >> 8), hi, bit);
        bit = _mm512_add_epi64(bit, bit);
      }
      uint64_t* d = dst + w0 * words + k;
      if (words == 1) {
        _mm512_mask_storeu_epi64(d, static_cast<__mmask8>(valid), lo);
        _mm512_mask_storeu_epi64(d + 8, static_cast<__mmask8>(valid >> 8), hi);
      } else {
        alignas(64) uint64_t tmp[16];
        _mm512_store_si512(tmp, lo);
        _mm512_store_si512(tmp + 8, hi);
        for (int64_t p = 0; p < n; ++p) d[p * words] = tmp[p];
      }
    }
  }
}

// NHWC row packing: every word is 64 consecutive floats of one pixel (4 compares).
void pack_nhwc_row(const float* x, int64_t W, int64_t C, int64_t words, uint64_t* dst) {
  const __m512 zero = _mm512_setzero_ps();
  const int64_t full = C / 64;  // words with all 64 channels present
  for (int64_t w = 0; w < W; ++w) {
    const float* src = x + w * C;
    uint64_t* d = dst + w * words;
    for (int64_t k = 0; k < full; ++k) {
      const float* p = src + k * 64;
      const uint64_t m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p), zero, _CMP_NGE_UQ);
      const uint64_t m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16), zero, _CMP_NGE_UQ);
      const uint64_t m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 32), zero, _CMP_NGE_UQ);
      const uint64_t m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + 48), zero, _CMP_NGE_UQ);
      d[k] = m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
    }
    if (full < words) d[full] = sign_mask64(src + full * 64, C - full * 64);
  }
}

uint64_t peak_loop(int64_t iters) {
  __m512i w0 = _mm512_set1_epi64(0x0123456789abcdefLL), w1 = _mm512_set1_epi64(0x7edcba9876543210LL);
  __m512i a[12], b[6];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_setzero_si512();
  for (int i = 0; i < 6; ++i) b[i] = _mm512_set1_epi64(static_cast<long long>(0x5555aaaa3333cccdULL * (i + 1)));
  for (int64_t it = 0; it < iters; ++it) {
    for (int p = 0; p < 6; ++p) {
      a[2 * p] = _mm512_add_epi64(a[2 * p], _mm512_popcnt_epi64(_mm512_xor_si512(b[p], w0)));
      a[2 * p + 1] = _mm512_add_epi64(a[2 * p + 1], _mm512_popcnt_epi64(_mm512_xor_si512(b[p], w1)));
    }
    __asm__ volatile("" : "+v"(w0), "+v"(w1));  // keep the work inside the loop
  }
  __m512i s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi64(s, a[i]);
  return static_cast<uint64_t>(_mm512_reduce_add_epi64(s));
}

}  // namespace avx512_impl

const KernelTable& avx512_kernels() {
  static const KernelTable table{Isa::avx512, &avx512_impl::sign_mask64, &avx512_impl::conv_row,
                                 &avx512_impl::peak_loop, 12 * 512, &avx512_impl::pack_nchw_row,
                                 &avx512_impl::pack_nhwc_row, /*pair_weights=*/true};
  return table;
}

}  // namespace bnn
