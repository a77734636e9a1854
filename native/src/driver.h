// The convolution entry points: packed activations x packed weights, with the epilogue fused in
// (a per-channel affine transform, then float output or the next layer's packed sign bits).
#pragma once
#include <cstdint>

#include "activations.h"
#include "geometry.h"
#include "weights.h"

namespace bnn {

// The epilogue: per output channel y = acc * scale[o] + bias[o]; then, for float channels-last
// output only, each step the separate op would do with the same float operations, in this order:
// y = y + residual (a residual sum), y = y + shift_in[o], y = y > 0 ? y : slope[o] * y (PReLU),
// y = y + shift_out[o] (the shifts and the PReLU together: ReActNet's RPReLU), then with
// `clamp`, y = y < lo ? lo : y and y = y > hi ? hi : y (torch's clamp, so relu as lo = 0, hi = inf,
// and hardtanh: NaN and -0.0 pass through), and the packed sign bits of y (or of
// y + sign_shift[o]: the next layer's RSign) as a second output. Every pointer may be null (the
// step is skipped).
struct OutputTransform {
  const float* scale = nullptr;      // none: * 1
  const float* bias = nullptr;       // none: no add (so a -0.0 product stays -0.0, as torch's y * scale)
  const float* residual = nullptr;   // float32 NHWC [N][OH][OW][O]
  const float* slope = nullptr;      // [O]
  const float* shift_in = nullptr;   // [O]
  const float* shift_out = nullptr;  // [O]
  bool clamp = false;
  float clamp_lo = 0.0f, clamp_hi = 0.0f;
  // Set by binary_conv2d_dual only: also writes bit o of a pixel where !(y >= 0) (with
  // sign_shift: !(y + sign_shift[o] >= 0)), as binary_conv2d_sign does (its own border ph, pw;
  // border and tail bits zero).
  PackedActivations* sign_bits = nullptr;
  const float* sign_shift = nullptr;  // [O]
  bool has_float_post_ops() const { return residual || shift_in || slope || shift_out || clamp; }
  bool has_post_ops() const { return has_float_post_ops() || sign_bits || sign_shift; }
};

class ThreadPool;

// Each entry point below throws std::invalid_argument for a shape validate() refuses, and
// Cancelled (cancel.h) when the calling thread's token is cancelled while it runs; `out` is then
// left as it was (a float `out` buffer may be partly written).

// out: float32 NCHW [N][O][OH][OW], or NHWC [N][OH][OW][O] with channels_last_out (then a
// pixel's 16 channels of a block are contiguous and the epilogue needs no transpose). A residual
// or any other float post-op needs channels_last_out; sign_bits must be null (binary_conv2d_dual
// sets it). out_pixel_stride (channels_last_out only; 0 means O): the floats from one output
// pixel to the next, >= O, so that `out` can be channels [c0, c0 + O) of a wider NHWC tensor (a
// channel concat written in place; the residual keeps its own [N][OH][OW][O] layout).
void binary_conv2d(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                   const OutputTransform& t, float* out, ThreadPool& pool, bool channels_last_out = false,
                   int64_t out_pixel_stride = 0);

// The same convolution with a binarised output: `out` becomes the next layer's packed
// activations, [N][OH + 2*out_ph][OW + 2*out_pw][ceil(O / 64)] (border zero = +1), where bit o of
// a pixel is set exactly where the float output above would be negative or NaN, i.e.
// !(acc * scale[o] + bias[o] >= 0), computed with the same float operations. A binary layer
// that feeds another binary layer through sign() then never writes, reads or packs floats.
void binary_conv2d_sign(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, int64_t out_ph, int64_t out_pw, PackedActivations& out,
                        ThreadPool& pool);

// Dual output, in one pass: binary_conv2d's float NHWC output `out` (residual and slope applied)
// and, bit for bit as binary_conv2d_sign would write them from those floats, their packed sign
// bits in `bits` with border (out_ph, out_pw): for a layer read both by a float op (a residual
// sum, a float shortcut) and by the next binary layer, which then packs nothing.
void binary_conv2d_dual(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, float* out, int64_t out_ph, int64_t out_pw,
                        PackedActivations& bits, ThreadPool& pool);

// binary_conv2d_dual into parts of wider tensors (a channel concat built in place, with its packed
// bits): the floats into `out` with pixels out_pixel_stride (>= O) floats apart, as binary_conv2d's,
// and the sign bits into channels [bits_channel, bits_channel + O) of `bits`, which the caller made
// (blank_activations) with the output's N, OH and OW. bits_channel is a multiple of 16, and O too
// unless these are bits' last channels (a block's 16 bits are written as one u16). A cancelled call
// may leave `out` and `bits` partly written.
void binary_conv2d_dual_into(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                             const OutputTransform& t, float* out, int64_t out_pixel_stride, PackedActivations& bits,
                             int64_t bits_channel, ThreadPool& pool);

}  // namespace bnn
