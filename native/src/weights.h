// Weight packing: float or canonical bit weights to the blocked layouts the micro-kernels read,
// plus the per-tap channel sums the padding correction needs.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "buffer.h"
#include "geometry.h"
#include "padding.h"

namespace bnn {

// Weights binarised and laid out for the kernels: [ceil(O/16)][KH][KW][words][16] u64, so one
// vector load brings the same word of 16 consecutive output channels.
class PackedWeights {
 public:
  static PackedWeights from_float(const float* w, int64_t O, int64_t C, int64_t KH, int64_t KW);
  // canonical: [O][KH][KW][words] u64, bit (c % 64) of word (c / 64) set where w < 0.
  static PackedWeights from_canonical(const uint64_t* bits, int64_t O, int64_t C, int64_t KH, int64_t KW);
  void to_canonical(uint64_t* bits) const;

  int64_t O = 0, C = 0, KH = 0, KW = 0, words = 0;
  WordBuffer blocked;
  // The same words in pair form, for the kernels with KernelTable::pair_weights; its layout is
  // that of the build's SIMD kernels. x86 (AVX2, AVX-512): the reduction words pair up as (i, i + 1)
  // from i = K % 2 (K = KH * KW * words; an odd K leaves word 0 alone), and word i + 1 holds
  // w[i] ^ w[i + 1], so a kernel gets x2 = x1 ^ (a1 ^ a2) ^ w12 with one xor; the 16 channels of a
  // block are in the order 0,2,4,6, 1,3,5,7, 8,10,12,14, 9,11,13,15. AArch64 (NEON):
  // per block of 16 channels, [K/2][16][2] u64, channel j's words 2m and 2m + 1 side by side
  // (one q register), then an odd K's last word as in `blocked`; blocks K * 16 words apart.
  WordBuffer pair_blocked;
  std::vector<int32_t> tap_sums;  // [O][KH*KW]: sum over c of sign(w), for the padding correction
  std::vector<int32_t> tap_sums_blocked;  // the same as [ceil(O/16)][KH*KW][16], zero past O

  // The correction table for this geometry, built on first use and cached (thread-safe); defined
  // in padding.cpp.
  std::shared_ptr<const CorrectionTable> correction(const ConvShape& s) const;

 private:
  void finish();
  mutable std::shared_ptr<std::mutex> cache_mutex_ = std::make_shared<std::mutex>();
  mutable std::vector<std::shared_ptr<const CorrectionTable>> cache_;  // most recent last, at most 8
};

}  // namespace bnn
