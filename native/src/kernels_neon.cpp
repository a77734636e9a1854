// AArch64 NEON path (Advanced SIMD is part of every AArch64 core, so no run-time check is needed):
// per pair of reduction words, XOR, a byte popcount (CNT), a pairwise-add tree that folds the 16
// byte counts of each channel, and one pairwise add-and-accumulate-long (UADALP) into 16-bit
// counters.
//
// Why this shape: on NEON a popcount is one instruction, so the carry-save (Harley-Seal) trick of
// the x86 paths buys nothing (it trades two CNTs for as many logic ops), and every reducing op
// (ADDP, ADD, UADALP, UDOT) folds one register, so the floor is 3 vector ops per 128 binary MACs:
// EOR, CNT and one reducing op. This loop is at that floor with no vector op spent on loading: a
// q register holds two consecutive reduction words of one pixel (one LDR q; two single-lane loads
// where the pair straddles two kernel taps) against one channel's same two words (the NEON pair
// form of the weights, PackedWeights::pair_blocked), so nothing is broadcast (LD1R issues on a
// vector pipe). The 16 channels' weight registers are reused by the 4 pixels of the tile.
// bench/arm_mca.py models the loop (and Larq Compute Engine's) on Neoverse N1, N2, V1 and under
// -mcpu=cortex-a76; bench/RESULTS_ARM.md has the figures and the variants tried (a UDOT reduction
// models the same: one op per folded register, so no dot-product variant is chosen at run time).
#include <arm_neon.h>

#include "kernels.h"

namespace bnn {
namespace neon_impl {

// Pixels per micro_tile call: 4 pixels x 16 channels keeps the 16 weight registers of a word pair,
// 8 counters and one pixel's activation register and temporaries inside the 32 vector registers.
constexpr int kMaxPx = 4;
// A 16-bit counter lane gains at most 128 per word pair (one channel's two 64-bit words), so 511
// pairs (1022 words) cannot overflow it; longer reductions widen the counters to 32 bits between
// chunks.
constexpr int64_t kChunkPairs = 511;

// How a pixel's pair of reduction words reaches its register: both words at once (they are
// adjacent in memory: the pair lies inside one kernel tap), one word and then the other into the
// upper lane (the pair straddles two taps), or the last word of an odd reduction alone (the upper
// lane zero, against a zero weight word: it counts nothing).
enum class PairLoad { adjacent, lanes, single };

// The tree, for channels c .. c + 7 of one pixel (T0..T3 temporaries, A the activation pair, W0..W7
// the channels' weight registers, ACC their counters): CNT of channel c's EOR gives 16 byte counts of
// that channel; three levels of ADDP leave 2 bytes per channel, channels in order, and UADALP adds
// each byte pair into the channel's 16-bit lane. Bytes stay <= 64 (8 bits x 8 bytes), no wrap.
#define BNN_NEON_TREE8(T0, T1, T2, T3, A, W0, W1, W2, W3, W4, W5, W6, W7, ACC) \
  "eor %[" #T0 "].16b, %[" #A "].16b, %[" #W0 "].16b\n\t"                        \
  "eor %[" #T1 "].16b, %[" #A "].16b, %[" #W1 "].16b\n\t"                        \
  "cnt %[" #T0 "].16b, %[" #T0 "].16b\n\t"                                       \
  "cnt %[" #T1 "].16b, %[" #T1 "].16b\n\t"                                       \
  "eor %[" #T2 "].16b, %[" #A "].16b, %[" #W2 "].16b\n\t"                        \
  "eor %[" #T3 "].16b, %[" #A "].16b, %[" #W3 "].16b\n\t"                        \
  "addp %[" #T0 "].16b, %[" #T0 "].16b, %[" #T1 "].16b\n\t"                      \
  "cnt %[" #T2 "].16b, %[" #T2 "].16b\n\t"                                       \
  "cnt %[" #T3 "].16b, %[" #T3 "].16b\n\t"                                       \
  "eor %[" #T1 "].16b, %[" #A "].16b, %[" #W4 "].16b\n\t"                        \
  "addp %[" #T2 "].16b, %[" #T2 "].16b, %[" #T3 "].16b\n\t"                      \
  "eor %[" #T3 "].16b, %[" #A "].16b, %[" #W5 "].16b\n\t"                        \
  "cnt %[" #T1 "].16b, %[" #T1 "].16b\n\t"                                       \
  "cnt %[" #T3 "].16b, %[" #T3 "].16b\n\t"                                       \
  "addp %[" #T0 "].16b, %[" #T0 "].16b, %[" #T2 "].16b\n\t"                      \
  "addp %[" #T1 "].16b, %[" #T1 "].16b, %[" #T3 "].16b\n\t"                      \
  "eor %[" #T2 "].16b, %[" #A "].16b, %[" #W6 "].16b\n\t"                        \
  "eor %[" #T3 "].16b, %[" #A "].16b, %[" #W7 "].16b\n\t"                        \
  "cnt %[" #T2 "].16b, %[" #T2 "].16b\n\t"                                       \
  "cnt %[" #T3 "].16b, %[" #T3 "].16b\n\t"                                       \
  "addp %[" #T2 "].16b, %[" #T2 "].16b, %[" #T3 "].16b\n\t"                      \
  "addp %[" #T1 "].16b, %[" #T1 "].16b, %[" #T2 "].16b\n\t"                      \
  "addp %[" #T0 "].16b, %[" #T0 "].16b, %[" #T1 "].16b\n\t"                      \
  "uadalp %[" #ACC "].8h, %[" #T0 "].16b\n\t"

#define BNN_NEON_PAIR_BODY                                                 \
  BNN_NEON_TREE8(t0, t1, t2, t3, a, w0, w1, w2, w3, w4, w5, w6, w7, acc0) \
  BNN_NEON_TREE8(t0, t1, t2, t3, a, w8, w9, w10, w11, w12, w13, w14, w15, acc1)

// Adds the popcounts of a ^ w_c for one pixel and a word pair to acc (channels 0..7 and 8..15 as
// 16-bit lanes): a holds the pixel's words at lo and hi, w[c] channel c's same two words. One asm
// block per pixel, so that the compiler cannot interleave the pixels of a tile into more live
// registers than there are (it spilled to the stack when it did) nor choose another load form. The
// block reads the activations at lo and hi without declaring them: nothing writes them during a conv.
template <PairLoad L>
__attribute__((always_inline)) inline void accumulate_pair(const uint64_t* lo, const uint64_t* hi,
                                                           const uint8x16_t w[16], uint16x8_t acc[2]) {
  uint8x16_t a, t0, t1, t2, t3;
  uint16x8_t acc0 = acc[0], acc1 = acc[1];
#define BNN_NEON_PAIR_OPERANDS                                                                                  \
  : [acc0] "+w"(acc0), [acc1] "+w"(acc1), [a] "=&w"(a), [t0] "=&w"(t0), [t1] "=&w"(t1), [t2] "=&w"(t2),         \
    [t3] "=&w"(t3)                                                                                              \
  : [lo] "r"(lo), [hi] "r"(hi), [w0] "w"(w[0]), [w1] "w"(w[1]), [w2] "w"(w[2]), [w3] "w"(w[3]), [w4] "w"(w[4]), \
    [w5] "w"(w[5]), [w6] "w"(w[6]), [w7] "w"(w[7]), [w8] "w"(w[8]), [w9] "w"(w[9]), [w10] "w"(w[10]),           \
    [w11] "w"(w[11]), [w12] "w"(w[12]), [w13] "w"(w[13]), [w14] "w"(w[14]), [w15] "w"(w[15])
  if constexpr (L == PairLoad::adjacent) {
    __asm__("ldr %q[a], [%[lo]]\n\t" BNN_NEON_PAIR_BODY BNN_NEON_PAIR_OPERANDS);
  } else if constexpr (L == PairLoad::lanes) {
    __asm__("ldr %d[a], [%[lo]]\n\tld1 {%[a].d}[1], [%[hi]]\n\t" BNN_NEON_PAIR_BODY BNN_NEON_PAIR_OPERANDS);
  } else {
    __asm__("ldr %d[a], [%[lo]]\n\t" BNN_NEON_PAIR_BODY BNN_NEON_PAIR_OPERANDS);
  }
#undef BNN_NEON_PAIR_OPERANDS
  acc[0] = acc0, acc[1] = acc1;
}

#undef BNN_NEON_PAIR_BODY
#undef BNN_NEON_TREE8

// Adds word pairs m0 .. m1 - 1 of PX pixels to acc (pair m: words 2m and 2m + 1; the weights of
// pair m at wpairs[m * 32 ..], channel c's two words at 2c, 2c + 1; the lone last word of an odd
// K: channel c's at c).
template <int PX, PairLoad L>
__attribute__((always_inline)) inline void add_pairs(const uint64_t* in, int64_t pix_stride, const int64_t* offs,
                                                     int64_t m0, int64_t m1, const uint64_t* wpairs,
                                                     uint16x8_t (&acc)[PX][2]) {
  for (int64_t m = m0; m < m1; ++m) {
    const uint64_t* wt = wpairs + m * 32;
    uint8x16_t w[16];
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c)  // the lone word: channel c's at c, the upper lane zero
      w[c] = L == PairLoad::single ? vreinterpretq_u8_u64(vcombine_u64(vld1_u64(wt + c), vdup_n_u64(0)))
                                   : vreinterpretq_u8_u64(vld1q_u64(wt + 2 * c));
    const uint64_t* lo = in + offs[2 * m];
    const uint64_t* hi = L == PairLoad::lanes ? in + offs[2 * m + 1] : lo;
#pragma GCC unroll 16
    for (int p = 0; p < PX; ++p) accumulate_pair<L>(lo + p * pix_stride, hi + p * pix_stride, w, acc[p]);
  }
}

// Whether every whole word pair lies inside one kernel tap (the pixel's words per tap even: the
// usual case), so that LDR q loads it.
inline bool pairs_adjacent(const int64_t* offs, int64_t pairs) {
  for (int64_t m = 0; m < pairs; ++m)
    if (offs[2 * m + 1] != offs[2 * m] + 1) return false;
  return true;
}

// Counts word pairs m0 .. m1 - 1 (at most kChunkPairs; pair K / 2 is the lone last word of an
// odd K) of PX pixels into 16-bit counters, then hands them to `done` (acc[p][h]: pixel p,
// channels 8h .. 8h + 7). The counters stay locals of this function: copied out to an array, GCC
// kept them in memory and stored them on every word.
template <int PX, class Done>
__attribute__((always_inline)) inline void count_pairs(const uint64_t* in, int64_t pix_stride, const int64_t* offs,
                                                       int64_t K, bool adjacent, int64_t m0, int64_t m1,
                                                       const uint64_t* wpairs, Done&& done) {
  uint16x8_t acc[PX][2];
#pragma GCC unroll 16
  for (int p = 0; p < PX; ++p) acc[p][0] = acc[p][1] = vdupq_n_u16(0);
  const int64_t whole = std::min(m1, K / 2);
  if (adjacent)
    add_pairs<PX, PairLoad::adjacent>(in, pix_stride, offs, m0, whole, wpairs, acc);
  else
    add_pairs<PX, PairLoad::lanes>(in, pix_stride, offs, m0, whole, wpairs, acc);
  if (m1 > K / 2) add_pairs<PX, PairLoad::single>(in, pix_stride, offs, K / 2, K / 2 + 1, wpairs, acc);
  done(acc);
}

// val = k_total - 2 * popcount for 4 channels.
inline void store_counts(int32_t* val, int32_t k_total, uint32x4_t pc) {
  vst1q_s32(val, vsubq_s32(vdupq_n_s32(k_total), vreinterpretq_s32_u32(vshlq_n_u32(pc, 1))));
}

// wblk: the block's weights in the NEON pair form (PackedWeights::pair_blocked, weights.h).
template <int PX>
void micro_tile(const uint64_t* in, int64_t pix_stride, const int64_t* offs, int64_t K, const uint64_t* wblk,
                int32_t k_total, int32_t* val) {
  const int64_t pairs = (K + 1) / 2;
  const bool adjacent = pairs_adjacent(offs, K / 2);
  if (pairs <= kChunkPairs) {
    count_pairs<PX>(in, pix_stride, offs, K, adjacent, 0, pairs, wblk, [&](const uint16x8_t (&acc)[PX][2]) {
#pragma GCC unroll 16
      for (int p = 0; p < PX; ++p)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          store_counts(val + p * 16 + 8 * h, k_total, vmovl_u16(vget_low_u16(acc[p][h])));
          store_counts(val + p * 16 + 8 * h + 4, k_total, vmovl_high_u16(acc[p][h]));
        }
    });
    return;
  }
  // A long reduction: 32-bit sums of the chunks' 16-bit counts, on the stack.
  alignas(16) uint32_t wide[PX][16] = {};
  for (int64_t m0 = 0; m0 < pairs; m0 += kChunkPairs)
    count_pairs<PX>(in, pix_stride, offs, K, adjacent, m0, std::min(pairs, m0 + kChunkPairs), wblk,
                    [&](const uint16x8_t (&acc)[PX][2]) {
                      for (int p = 0; p < PX; ++p)
                        for (int h = 0; h < 2; ++h) {
                          uint32_t* d = wide[p] + 8 * h;
                          vst1q_u32(d, vaddw_u16(vld1q_u32(d), vget_low_u16(acc[p][h])));
                          vst1q_u32(d + 4, vaddw_high_u16(vld1q_u32(d + 4), acc[p][h]));
                        }
                    });
  for (int p = 0; p < PX; ++p)
    for (int q = 0; q < 4; ++q) store_counts(val + p * 16 + 4 * q, k_total, vld1q_u32(wide[p] + 4 * q));
}

// float(v) * scale + bias for four channels, as the reference computes it (a multiply, then an add:
// the core is built with -ffp-contract=off, so no fused multiply-add). No bias adds -0.0, the
// identity of float addition (a -0.0 product stays -0.0, as with the x86 paths' skipped add).
inline float32x4_t transform4(int32x4_t v, float32x4_t sc, float32x4_t bi) {
  return vaddq_f32(vmulq_f32(vcvtq_f32_s32(v), sc), bi);
}

inline float32x4_t load_or(const float* p, int n, float fill) {
  if (!p) return vdupq_n_f32(fill);
  if (n >= 4) return vld1q_f32(p);
  float t[4] = {fill, fill, fill, fill};
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return vld1q_f32(t);
}

inline void store_block_scalar(const int32_t*, int, int, const float*, const float*, float*, int64_t);

// NCHW output: 4 pixels x 4 channels at a time, transposed in registers so each channel's pixels
// are stored as one vector; channel and pixel tails go through the scalar epilogue.
inline void store_block(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                        int64_t plane) {
  const int full_px = np & ~3, full_ch = nO & ~3;
  for (int j = 0; j < full_ch; j += 4) {
    float sc[4], bi[4];
    for (int c = 0; c < 4; ++c) sc[c] = scale ? scale[j + c] : 1.0f, bi[c] = bias ? bias[j + c] : -0.0f;
    for (int p = 0; p < full_px; p += 4) {
      const int32_t* v = val + p * 16 + j;
      const int32x4_t r0 = vld1q_s32(v), r1 = vld1q_s32(v + 16), r2 = vld1q_s32(v + 32), r3 = vld1q_s32(v + 48);
      // r_k = pixel p + k, channels j..j+3 -> t[c] = channel j + c, pixels p..p+3
      const int64x2_t a0 = vreinterpretq_s64_s32(vtrn1q_s32(r0, r1)), a1 = vreinterpretq_s64_s32(vtrn2q_s32(r0, r1));
      const int64x2_t a2 = vreinterpretq_s64_s32(vtrn1q_s32(r2, r3)), a3 = vreinterpretq_s64_s32(vtrn2q_s32(r2, r3));
      const int32x4_t t[4] = {vreinterpretq_s32_s64(vtrn1q_s64(a0, a2)), vreinterpretq_s32_s64(vtrn1q_s64(a1, a3)),
                              vreinterpretq_s32_s64(vtrn2q_s64(a0, a2)), vreinterpretq_s32_s64(vtrn2q_s64(a1, a3))};
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c)
        vst1q_f32(dst + (j + c) * plane + p, transform4(t[c], vdupq_n_f32(sc[c]), vdupq_n_f32(bi[c])));
    }
  }
  // The pixel tail of the full channel groups, then every pixel of the channel tail.
  if (full_px < np && full_ch > 0)
    store_block_scalar(val + full_px * 16, np - full_px, full_ch, scale, bias, dst + full_px, plane);
  if (full_ch < nO)
    store_block_scalar(val + full_ch, np, nO - full_ch, scale ? scale + full_ch : nullptr,
                       bias ? bias + full_ch : nullptr, dst + full_ch * plane, plane);
}

// Channels-last output: a pixel's channel values are contiguous in the tile already.
inline void store_block_nhwc(const int32_t* val, int np, int nO, const float* scale, const float* bias, float* dst,
                             int64_t pixel_stride) {
  for (int j = 0; j < nO; j += 4) {
    const int n = std::min(4, nO - j);
    const float32x4_t sc = load_or(scale ? scale + j : nullptr, n, 1.0f);
    const float32x4_t bi = load_or(bias ? bias + j : nullptr, n, -0.0f);
    for (int p = 0; p < np; ++p) {
      const float32x4_t f = transform4(vld1q_s32(val + p * 16 + j), sc, bi);
      float* d = dst + p * pixel_stride + j;
      if (n == 4) {
        vst1q_f32(d, f);
      } else {
        alignas(16) float t[4];
        vst1q_f32(t, f);
        for (int i = 0; i < n; ++i) d[i] = t[i];
      }
    }
  }
}

// Binarised output: the same float value per channel, then bit j set where !(value >= 0) (NaN
// included: the compare is false), 16 channels folded into one u16 by weighting and adding lanes.
inline void store_block_sign(const int32_t* val, int np, int nO, const float* scale, const float* bias, uint16_t* dst,
                             int64_t pixel_stride) {
  float32x4_t sc[4], bi[4];
  uint32x4_t weight[4];
  const uint32x4_t lane_bits = {1, 2, 4, 8};
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const int n = std::max(0, std::min(4, nO - 4 * q));
    sc[q] = load_or(scale && n ? scale + 4 * q : nullptr, n, 1.0f);
    bi[q] = load_or(bias && n ? bias + 4 * q : nullptr, n, -0.0f);
    // Lanes past nO weigh 0, so they never set a bit.
    const uint32x4_t keep = vcltq_u32(uint32x4_t{0, 1, 2, 3}, vdupq_n_u32(static_cast<uint32_t>(n)));
    weight[q] = vandq_u32(lane_bits, keep);
  }
  for (int p = 0; p < np; ++p) {
    uint32x4_t bits = vdupq_n_u32(0);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const float32x4_t f = transform4(vld1q_s32(val + p * 16 + 4 * q), sc[q], bi[q]);
      const uint32x4_t negative = vmvnq_u32(vcgeq_f32(f, vdupq_n_f32(0.0f)));
      bits = vorrq_u32(bits, vshlq_u32(vandq_u32(negative, weight[q]), vdupq_n_s32(4 * q)));
    }
    dst[p * pixel_stride] = static_cast<uint16_t>(vaddvq_u32(bits));
  }
}

inline void add16(int32_t* v, const int32_t* c) {
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) vst1q_s32(v + 4 * q, vaddq_s32(vld1q_s32(v + 4 * q), vld1q_s32(c + 4 * q)));
}

// 16 floats -> 16 bytes, 0xff where !(x >= 0).
inline uint8x16_t negative_bytes(const float* p) {
  const uint32x4_t z0 = vcgeq_f32(vld1q_f32(p), vdupq_n_f32(0.0f)), z1 = vcgeq_f32(vld1q_f32(p + 4), vdupq_n_f32(0.0f));
  const uint32x4_t z2 = vcgeq_f32(vld1q_f32(p + 8), vdupq_n_f32(0.0f)), z3 = vcgeq_f32(vld1q_f32(p + 12), vdupq_n_f32(0.0f));
  const uint16x8_t h0 = vcombine_u16(vmovn_u32(z0), vmovn_u32(z1)), h1 = vcombine_u16(vmovn_u32(z2), vmovn_u32(z3));
  return vmvnq_u8(vcombine_u8(vmovn_u16(h0), vmovn_u16(h1)));
}

uint64_t sign_mask64(const float* p, int64_t n) {
  if (n == 64) {
    // Weight byte i by 1 << (i % 8); three pairwise adds then sum each run of 8 bytes into one.
    const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t b0 = vandq_u8(negative_bytes(p), bit), b1 = vandq_u8(negative_bytes(p + 16), bit);
    const uint8x16_t b2 = vandq_u8(negative_bytes(p + 32), bit), b3 = vandq_u8(negative_bytes(p + 48), bit);
    const uint8x16_t s = vpaddq_u8(vpaddq_u8(b0, b1), vpaddq_u8(b2, b3));
    return vgetq_lane_u64(vreinterpretq_u64_u8(vpaddq_u8(s, s)), 0);
  }
  uint64_t m = 0;
  for (int64_t i = 0; i < n; ++i) m |= static_cast<uint64_t>(!(p[i] >= 0.0f)) << i;
  return m;
}

#include "conv_driver.inc"

// 4 pixels x 8 channel pairs of the plain XOR + CNT + add step, all in registers (as the other
// paths' peak loops: no loads, no reduction tree).
uint64_t peak_loop(int64_t iters) {
  uint8x16_t w0 = vreinterpretq_u8_u64(vdupq_n_u64(0x0123456789abcdefULL));
  uint8x16_t w1 = vreinterpretq_u8_u64(vdupq_n_u64(0x7edcba9876543210ULL));
  uint8x16_t b[4], a[8];
  for (int p = 0; p < 4; ++p) b[p] = vreinterpretq_u8_u64(vdupq_n_u64(0x5555aaaa3333cccdULL * (p + 1)));
  for (int i = 0; i < 8; ++i) a[i] = vdupq_n_u8(0);
  uint64_t sum = 0;
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      a[2 * p] = vaddq_u8(a[2 * p], vcntq_u8(veorq_u8(b[p], w0)));
      a[2 * p + 1] = vaddq_u8(a[2 * p + 1], vcntq_u8(veorq_u8(b[p], w1)));
    }
    __asm__ volatile("" : "+w"(w0), "+w"(w1));
    if ((it & 15) == 15) {  // byte counters: fold before they can wrap (16 x 8 <= 255)
      for (int i = 0; i < 8; ++i) sum += vaddlvq_u8(a[i]), a[i] = vdupq_n_u8(0);
    }
  }
  for (int i = 0; i < 8; ++i) sum += vaddlvq_u8(a[i]);
  return sum;
}

}  // namespace neon_impl

const KernelTable& neon_kernels() {
  static const KernelTable table{Isa::neon, &neon_impl::sign_mask64, &neon_impl::conv_row, &neon_impl::peak_loop,
                                 8 * 128, nullptr, nullptr, /*pair_weights=*/true};
  return table;
}

}  // namespace bnn
