// The convolution entry points: packed activations x packed weights, with the epilogue fused in
// (a per-channel affine transform, then float output or the next layer's packed sign bits).
#pragma once
#include <cstdint>

#include "activations.h"
#include "geometry.h"
#include "weights.h"

namespace bnn {

// Per-output-channel affine transform fused into the epilogue: y = acc * scale[o] + bias[o].
struct OutputTransform {
  const float* scale = nullptr;  // may be null: 1
  const float* bias = nullptr;   // may be null: 0
};

class ThreadPool;

// Each entry point below throws std::invalid_argument for a shape validate() refuses, and
// Cancelled (cancel.h) when the calling thread's token is cancelled while it runs; `out` is then
// left as it was (a float `out` buffer may be partly written).

// out: float32 NCHW [N][O][OH][OW], or NHWC [N][OH][OW][O] with channels_last_out (then a
// pixel's 16 channels of a block are contiguous and the epilogue needs no transpose).
void binary_conv2d(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                   const OutputTransform& t, float* out, ThreadPool& pool, bool channels_last_out = false);

// The same convolution with a binarised output: `out` becomes the next layer's packed
// activations, [N][OH + 2*out_ph][OW + 2*out_pw][ceil(O / 64)] (border zero = +1), where bit o of
// a pixel is set exactly where the float output above would be negative or NaN, i.e.
// !(acc * scale[o] + bias[o] >= 0), computed with the same float operations. A binary layer
// that feeds another binary layer through sign() then never writes, reads or packs floats.
void binary_conv2d_sign(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, int64_t out_ph, int64_t out_pw, PackedActivations& out,
                        ThreadPool& pool);

}  // namespace bnn
