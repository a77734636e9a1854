// PackedWeights: binarising, the blocked and pair-blocked layouts, and the per-tap sums.
#include <vector>

#include "checks.h"
#include "weights.h"

namespace bnn {

PackedWeights PackedWeights::from_float(const float* w, int64_t O, int64_t C, int64_t KH, int64_t KW) {
  ConvShape s;
  s.C = C, s.O = O, s.KH = KH, s.KW = KW, s.H = KH, s.W = KW;
  s.validate();
  const int64_t words = words_for(C);
  std::vector<uint64_t> canonical(static_cast<size_t>(O * KH * KW * words), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < KH * KW; ++t) {
        const float v = w[(o * C + c) * KH * KW + t];
        if (!(v >= 0.0f)) canonical[(o * KH * KW + t) * words + c / 64] |= uint64_t{1} << (c % 64);
      }
  return from_canonical(canonical.data(), O, C, KH, KW);
}

PackedWeights PackedWeights::from_canonical(const uint64_t* bits, int64_t O, int64_t C, int64_t KH, int64_t KW) {
  ConvShape s;
  s.C = C, s.O = O, s.KH = KH, s.KW = KW, s.H = KH, s.W = KW;
  s.validate();
  PackedWeights pw;
  pw.O = O, pw.C = C, pw.KH = KH, pw.KW = KW, pw.words = words_for(C);
  const int64_t taps = KH * KW, blocks = out_blocks(O);
  const uint64_t tail_mask = (C % 64) ? ((uint64_t{1} << (C % 64)) - 1) : ~uint64_t{0};
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      const uint64_t last = bits[(o * taps + t) * pw.words + pw.words - 1];
      if (last & ~tail_mask)
        invalid("packed weights have bits set beyond in_channels=" + std::to_string(C) + " (output channel " +
                std::to_string(o) + ")");
    }
  pw.blocked = WordBuffer(static_cast<size_t>(blocks * taps * pw.words * kOutBlock));
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < pw.words; ++k)
        pw.blocked.data()[((o / kOutBlock * taps + t) * pw.words + k) * kOutBlock + o % kOutBlock] =
            bits[(o * taps + t) * pw.words + k];
  pw.finish();
  return pw;
}

void PackedWeights::finish() {
  const int64_t taps = KH * KW;
#if BNN_HAVE_NEON
  {
    // The NEON pair form: per block, [pair m][channel j][2], words 2m and 2m + 1 of channel j side
    // by side; an odd K's last word stays as in `blocked` (channel j at j). The block stride stays
    // K * 16 words, which the shared driver assumes.
    const int64_t K = taps * words, nblocks = out_blocks(O);
    pair_blocked = WordBuffer(blocked.size());
    const uint64_t* src = blocked.data();
    uint64_t* dst = pair_blocked.data();
    for (int64_t b = 0; b < nblocks; ++b)
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < kOutBlock; ++j)
          dst[b * K * kOutBlock + (i < K - K % 2 ? (i / 2 * kOutBlock + j) * 2 + i % 2 : i * kOutBlock + j)] =
              src[(b * K + i) * kOutBlock + j];
  }
#else
  {
    const int64_t K = taps * words, nblocks = out_blocks(O);
    pair_blocked = WordBuffer(blocked.size());
    const uint64_t* src = blocked.data();
    uint64_t* dst = pair_blocked.data();
    for (int64_t b = 0; b < nblocks; ++b)
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < kOutBlock; ++j) {
          const int64_t at = (b * K + i) * kOutBlock + j;
          // channel order inside the block: the AVX2 kernel's ymm v holds channels
          // {0,2,4,6}, {1,3,5,7}, {8,10,12,14}, {9,11,13,15} for v = 0..3
          const int64_t from = (b * K + i) * kOutBlock + (j & 8) + (j & 3) * 2 + ((j >> 2) & 1);
          const bool second = i >= K % 2 && (i - K % 2) % 2 == 1;
          dst[at] = second ? src[from] ^ src[from - kOutBlock] : src[from];
        }
  }
#endif
  tap_sums.assign(static_cast<size_t>(O * taps), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      int64_t neg = 0;
      for (int64_t k = 0; k < words; ++k)
        neg += __builtin_popcountll(blocked.data()[((o / kOutBlock * taps + t) * words + k) * kOutBlock + o % kOutBlock]);
      tap_sums[o * taps + t] = static_cast<int32_t>(C - 2 * neg);
    }
  const int64_t blocks = out_blocks(O);
  tap_sums_blocked.assign(static_cast<size_t>(blocks * taps * kOutBlock), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t)
      tap_sums_blocked[(o / kOutBlock * taps + t) * kOutBlock + o % kOutBlock] = tap_sums[o * taps + t];
}

void PackedWeights::to_canonical(uint64_t* bits) const {
  const int64_t taps = KH * KW;
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < words; ++k)
        bits[(o * taps + t) * words + k] = blocked.data()[((o / kOutBlock * taps + t) * words + k) * kOutBlock + o % kOutBlock];
}

}  // namespace bnn
