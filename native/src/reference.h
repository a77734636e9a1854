// The reference convolution: plain loops over the +-1 values with exact integer accumulation, no
// packing, no blocking, no threads. Every optimised path is tested for exact equality with it
// (native/tests, and the geometry fuzz driver); nothing served runs it.
#pragma once
#include <cstdint>
#include <vector>

#include "driver.h"
#include "geometry.h"

namespace bnn::reference {

// x: float32 NCHW [N][C][H][W], w: float32 [O][C][KH][KW], s valid. Returns the float32 NCHW output
// [N][O][OH][OW]: the correlation of sign(x) and sign(w) with the border at pad_value, then
// acc * scale[o] + bias[o] with the epilogue's float operations (binary_conv2d's contract).
std::vector<float> conv2d(const float* x, const float* w, const ConvShape& s, const OutputTransform& t = {});

// What binary_conv2d_sign makes of that output y (NCHW): packed activations
// [N][OH + 2*out_ph][OW + 2*out_pw][ceil(O / 64)], bit o set where !(y >= 0), border and tail zero.
std::vector<uint64_t> sign_bits(const std::vector<float>& y, const ConvShape& s, int64_t out_ph, int64_t out_pw);

// Layout conversions of a float tensor with N images, C channels and P pixels each.
std::vector<float> nchw_to_nhwc(const float* x, int64_t N, int64_t C, int64_t P);
std::vector<float> nhwc_to_nchw(const float* x, int64_t N, int64_t C, int64_t P);

}  // namespace bnn::reference
