#include "pooling.h"

#include <algorithm>
#include <limits>
#include <string>

#include "checks.h"

namespace bnn {

int64_t pool_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dilation, bool ceil_mode,
                         const char* dim) {
  const std::string d(dim);
  require_positive(("input " + d).c_str(), in);
  require_positive(("kernel " + d).c_str(), k);
  require_geometry(("stride " + d).c_str(), stride, 1);
  require_geometry(("padding " + d).c_str(), pad, 0);
  require_geometry(("dilation " + d).c_str(), dilation, 1);
  const int64_t span = dilation * (k - 1) + 1;
  if (pad > k / 2)  // torch's rule: half the kernel size, not the dilated span
    invalid("padding " + d + " (" + std::to_string(pad) + ") must be at most half the kernel size (" +
            std::to_string(k) + ")");
  const int64_t num = in + 2 * pad - span + (ceil_mode ? stride - 1 : 0);
  if (num < 0) invalid("the pooling window (" + std::to_string(span) + ") is larger than the padded input " + d);
  int64_t out = num / stride + 1;
  // ceil mode: the last window must start inside the input or its left padding
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

namespace {

// One output pixel's channels: the running maximum over the window's taps. Compiled for AVX2 as
// well as the baseline (GCC target clones, chosen when the library loads): compares and selects
// only, so every clone gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void pool_pixel(const float* image, int64_t W, int64_t C, int64_t ih0, int64_t ih_end, int64_t DH, int64_t iw0,
                int64_t iw_end, int64_t DW, bool relu_first, float* __restrict m) {
  for (int64_t c = 0; c < C; ++c) m[c] = -std::numeric_limits<float>::infinity();
  for (int64_t ih = ih0; ih < ih_end; ih += DH) {
    for (int64_t iw = iw0; iw < iw_end; iw += DW) {
      const float* __restrict v = image + (ih * W + iw) * C;
      if (relu_first) {
        for (int64_t c = 0; c < C; ++c) {
          const float r = v[c] < 0.0f ? 0.0f : v[c];
          m[c] = (r > m[c] || r != r) ? r : m[c];
        }
      } else {
        for (int64_t c = 0; c < C; ++c) m[c] = (v[c] > m[c] || v[c] != v[c]) ? v[c] : m[c];
      }
    }
  }
}

}  // namespace

void max_pool2d_nhwc(const float* x, const PoolShape& s, bool relu_first, float* out, ThreadPool& pool) {
  const int64_t OH = pool_output_size(s.H, s.KH, s.SH, s.PH, s.DH, s.ceil_mode, "height");
  const int64_t OW = pool_output_size(s.W, s.KW, s.SW, s.PW, s.DW, s.ceil_mode, "width");
  const int64_t C = s.C;
  pool.parallel_for(s.N * OH, [&](int64_t row) {
    const int64_t n = row / OH, oh = row % OH;
    int64_t ih0 = oh * s.SH - s.PH;
    const int64_t ih_end = std::min(ih0 + (s.KH - 1) * s.DH + 1, s.H);
    while (ih0 < 0) ih0 += s.DH;
    const float* image = x + n * s.H * s.W * C;
    for (int64_t ow = 0; ow < OW; ++ow) {
      int64_t iw0 = ow * s.SW - s.PW;
      const int64_t iw_end = std::min(iw0 + (s.KW - 1) * s.DW + 1, s.W);
      while (iw0 < 0) iw0 += s.DW;
      pool_pixel(image, s.W, C, ih0, ih_end, s.DH, iw0, iw_end, s.DW, relu_first, out + (row * OW + ow) * C);
    }
  });
}

}  // namespace bnn
