// Padding correction. The packed border of the activations is all-zero bits, i.e. +1, so a
// kernel's popcount treats every padded tap as +1; for pad_value 0 or -1 the driver adds, per
// output pixel, (pad_value - 1) * the tap sums of the taps that fell outside the input. Those
// amounts depend only on which kernel rows and columns fall outside, so output rows and columns
// group into a few border classes and one table per geometry holds every amount.
// PackedWeights::correction (padding.cpp) builds the table; conv_driver.inc applies it.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace bnn {

// Padding-correction tables for one conv geometry (see ConvJob in kernels.h).
struct CorrectionTable {
  std::array<int64_t, 10> key{};  // H, W, ph, pw, sh, sw, dh, dw, pad_value, OH
  std::vector<int32_t> row_class, col_class, table;
  int64_t nrc = 1, ncc = 1;
  int64_t col_inner_lo = 0, col_inner_hi = 0;  // columns in [lo, hi) all have class 0
};

}  // namespace bnn
