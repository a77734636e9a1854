// Max pooling over channels-last (NHWC) float32, with torch's exact semantics, optionally with a
// ReLU applied to each input value first (the stem's ReLU -> max pool as one pass).
//
// Exactly F.max_pool2d (and F.relu before it): windows are scanned row by row, left to right,
// over the taps inside the image (padding is never a candidate); a value replaces the running
// maximum (which starts at -inf) when it is greater or NaN, so the first of equal values wins
// (+0.0 and -0.0 keep the sign of the first) and the last NaN of a window is the answer. The ReLU
// is torch's: negatives become +0.0; -0.0 and NaN pass unchanged.
//
// Plain C++ compiled once for every machine (no per-ISA code): the channel loop vectorises with the
// baseline instruction set.
#pragma once
#include <cstdint>

#include "thread_pool.h"

namespace bnn {

struct PoolShape {
  int64_t N = 1, H = 1, W = 1, C = 1;
  int64_t KH = 1, KW = 1, SH = 1, SW = 1, PH = 0, PW = 0, DH = 1, DW = 1;
  bool ceil_mode = false;
};

// torch's pooling output size (pooling_output_shape), checked: >= 1, padding at most half the
// kernel size; throws std::invalid_argument naming the problem.
int64_t pool_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dilation, bool ceil_mode,
                         const char* dim);

// out: [N][OH][OW][C] with OH, OW from pool_output_size. x: [N][H][W][C].
void max_pool2d_nhwc(const float* x, const PoolShape& s, bool relu_first, float* out, ThreadPool& pool);

}  // namespace bnn
