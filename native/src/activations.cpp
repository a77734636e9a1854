// pack_activations: the sign bits of every channel of a pixel, written into the padded
// channels-last layout with the active instruction set's packing routines.
#include <algorithm>
#include <utility>
#include <vector>

#include "activations.h"
#include "checks.h"
#include "geometry.h"
#include "kernels.h"
#include "thread_pool.h"

namespace bnn {

namespace {

// Transposes a 64x64 bit matrix in place: afterwards bit c of a[p] is the old bit p of a[c].
void transpose64(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= (m << j)) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  }
}

// Packs x into `out`, whose geometry and zeroed buffer are set; with `shift` ([C]), the sign bits
// of x + shift[c] (one float add, as torch's x + shift, then the same packing).
void pack_into(const float* x, bool channels_last, const float* shift, PackedActivations& out, ThreadPool& pool) {
  const int64_t N = out.N, C = out.C, H = out.H, W = out.W, ph = out.ph, pw = out.pw;
  const KernelTable& kt = active_kernels();
  const int64_t words = out.words, Wp = out.Wp(), HW = H * W;
  uint64_t* dst = out.data.data();
  auto pixel_word = [&](int64_t n, int64_t p) { return dst + ((n * out.Hp() + p / W + ph) * Wp + p % W + pw) * words; };
  // One NHWC image row (W pixels, C floats apart) -> words [W][words].
  auto pack_nhwc = [&](const float* row, uint64_t* d) {
    if (kt.pack_nhwc_row) {
      kt.pack_nhwc_row(row, W, C, words, d);
      return;
    }
    for (int64_t w = 0; w < W; ++w, d += words)
      for (int64_t k = 0; k < words; ++k) d[k] = kt.sign_mask64(row + w * C + k * 64, std::min<int64_t>(64, C - k * 64));
  };

  if (shift) {
    // RSign folded into the packing: x + shift into a per-row NHWC scratch (in cache), then the
    // active instruction set's row packing, so no path needs code of its own for it.
    pool.parallel_for(N * H, [&](int64_t r) {
      const int64_t n = r / H, h = r % H;
      thread_local std::vector<float> scratch;
      scratch.resize(static_cast<size_t>(W * C));
      float* s = scratch.data();
      if (channels_last) {
        const float* src = x + (n * H + h) * W * C;
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c) s[w * C + c] = src[w * C + c] + shift[c];
      } else {
        for (int64_t c = 0; c < C; ++c) {
          const float* src = x + (n * C + c) * HW + h * W;
          for (int64_t w = 0; w < W; ++w) s[w * C + c] = src[w] + shift[c];
        }
      }
      pack_nhwc(s, pixel_word(n, h * W));
    });
    return;
  }
  if (channels_last) {
    // Each pixel's channels are contiguous: 64 floats -> one word.
    pool.parallel_for(N * H, [&](int64_t r) {
      const int64_t n = r / H, h = r % H;
      pack_nhwc(x + (n * H + h) * W * C, pixel_word(n, h * W));
    });
    return;
  }
  if (kt.pack_nchw_row) {
    pool.parallel_for(N * H, [&](int64_t r) {
      const int64_t n = r / H, h = r % H;
      kt.pack_nchw_row(x + n * C * HW + h * W, HW, W, C, words, pixel_word(n, h * W));
    });
    return;
  }
  // NCHW: sign masks of 64 pixels for each of 64 channels, then a 64x64 bit transpose.
  const int64_t pblocks = (HW + 63) / 64;
  pool.parallel_for(N * pblocks, [&](int64_t job) {
    const int64_t n = job / pblocks, p0 = (job % pblocks) * 64, np = std::min<int64_t>(64, HW - p0);
    alignas(64) uint64_t m[64];
    for (int64_t k = 0; k < words; ++k) {
      const int64_t c0 = k * 64, nc = std::min<int64_t>(64, C - c0);
      for (int64_t c = 0; c < nc; ++c) m[c] = kt.sign_mask64(x + (n * C + c0 + c) * HW + p0, np);
      for (int64_t c = nc; c < 64; ++c) m[c] = 0;
      transpose64(m);
      // Walk the block's pixels in row order (no division per pixel: it cost more than the
      // transpose); a block may wrap onto the next rows.
      int64_t h = p0 / W, w = p0 % W;
      uint64_t* d = pixel_word(n, p0) + k;
      for (int64_t p = 0; p < np; ++p) {
        *d = m[p];
        d += words;
        if (++w == W && p + 1 < np) {
          w = 0;
          d = pixel_word(n, ++h * W) + k;
        }
      }
    }
  });
}

}  // namespace

PackedActivations blank_activations(int64_t N, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw) {
  require_geometry("padding height", ph, 0);
  require_geometry("padding width", pw, 0);
  PackedActivations a;
  a.N = N, a.C = C, a.H = H, a.W = W, a.ph = ph, a.pw = pw;
  a.words = words_for(C);
  check_buffer("packed activations", {a.N, a.Hp(), a.Wp(), a.words}, sizeof(uint64_t));
  a.data = WordBuffer(static_cast<size_t>(a.N * a.Hp() * a.Wp() * a.words));
  return a;
}

void pack_activations(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last,
                      int64_t ph, int64_t pw, PackedActivations& out, ThreadPool& pool, const float* shift) {
  ConvShape s;
  s.N = N, s.C = C, s.H = H, s.W = W, s.ph = ph, s.pw = pw, s.KH = 1, s.KW = 1;
  s.validate();
  // Built aside and moved into `out` only when complete (a cancelled pack leaves `out` as it was).
  PackedActivations packed;
  packed.N = N, packed.C = C, packed.H = H, packed.W = W, packed.ph = ph, packed.pw = pw, packed.words = words_for(C);
  packed.data = WordBuffer(static_cast<size_t>(N * packed.Hp() * packed.Wp() * packed.words));
  pack_into(x, channels_last, shift, packed, pool);
  out = std::move(packed);
}

}  // namespace bnn
