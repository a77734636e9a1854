// Convolution geometry: the shape of one binary convolution, its output size, the packing
// granularity (64 channels per word, 16 output channels per weight block) and the limits
// ConvShape::validate enforces before anything is allocated.
#pragma once
#include <cstdint>

namespace bnn {

constexpr int64_t kOutBlock = 16;  // output channels per weight block (two zmm / four ymm of u64)

inline int64_t words_for(int64_t channels) { return (channels + 63) / 64; }
inline int64_t out_blocks(int64_t O) { return (O + kOutBlock - 1) / kOutBlock; }

// Bounds ConvShape::validate enforces, before anything is allocated: with them no size or index
// arithmetic overflows int64, and no single buffer the core or the binding allocates (packed
// input, packed or float output, packed weights, padding-correction table) exceeds
// kMaxBufferBytes. 4 GiB is ~1e9 float outputs in one call, far beyond any one layer of a served
// model; a request past it is a mistake or an attack (padding 11585 on a 1x1 input needs 4.3 GB).
constexpr int64_t kMaxElements = int64_t{1} << 40;     // any one dimension, and any element count
constexpr int64_t kMaxGeometry = int64_t{1} << 20;     // stride, dilation, padding
constexpr int64_t kMaxBufferBytes = int64_t{1} << 32;  // 4 GiB

struct ConvShape {
  int64_t N = 1, C = 1, H = 1, W = 1;  // input
  int64_t O = 1, KH = 1, KW = 1;       // weights
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int pad_value = 0;  // value of the padded border: -1, 0 or +1

  // floor((span - 1) / stride) + 1, and 0 when the dilated kernel does not fit (C++ division
  // truncates toward zero, so a negative numerator must not reach it).
  int64_t OH() const { return out_size(H + 2 * ph, dh * (KH - 1) + 1, sh); }
  int64_t OW() const { return out_size(W + 2 * pw, dw * (KW - 1) + 1, sw); }
  static int64_t out_size(int64_t padded, int64_t dilated_kernel, int64_t stride) {
    return padded < dilated_kernel ? 0 : (padded - dilated_kernel) / stride + 1;
  }
  // Throws std::invalid_argument naming the offending parameter, or the buffer that would be too
  // large with its size and the limit.
  void validate() const;
};

}  // namespace bnn
