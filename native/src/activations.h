// Activation packing: float32 NCHW or NHWC to padded, channels-last sign bits (layout in bnn.h).
#pragma once
#include <cstdint>

#include "buffer.h"

namespace bnn {

class ThreadPool;

class PackedActivations {
 public:
  int64_t N = 0, C = 0, H = 0, W = 0, ph = 0, pw = 0, words = 0;
  int64_t Hp() const { return H + 2 * ph; }
  int64_t Wp() const { return W + 2 * pw; }
  WordBuffer data;
};

// All-zero packed activations (every value +1, border and tail bits zero) of [N][C][H][W] with
// border (ph, pw): what a convolution's packed output starts as. Throws std::invalid_argument for a
// negative border or a size past the buffer bounds (checks.h).
PackedActivations blank_activations(int64_t N, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw);

// x is float32, NCHW contiguous (channels_last=false) or NHWC contiguous (channels_last=true).
// With `shift` (float32 [C]), packs the signs of x + shift[c] instead (ReActNet's RSign: the same
// float sum as torch's x + shift, then the same bits). Throws std::invalid_argument for a shape
// ConvShape::validate refuses, and Cancelled (cancel.h) when the calling thread's token is
// cancelled while it runs; `out` is then left as it was.
void pack_activations(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last,
                      int64_t ph, int64_t pw, PackedActivations& out, ThreadPool& pool, const float* shift = nullptr);

}  // namespace bnn
