// The convolution entry points and the driver they share: check the shapes, prepare the job
// (reduction-word offsets, padding-correction table, the active kernel table's weights) and run
// the active instruction set's conv_row over (image, output row, output-channel block) items on
// the thread pool.
#include <memory>
#include <string>
#include <vector>

#include "checks.h"
#include "driver.h"
#include "kernels.h"
#include "thread_pool.h"

namespace bnn {

namespace {

// The shared driver: `job` carries the output (floats, or packed bits in job.out_bits).
void run_conv(const PackedActivations& x, const PackedWeights& w, const ConvShape& s, ConvJob& job,
              ThreadPool& pool) {
  s.validate();
  if (x.N != s.N || x.C != s.C || x.H != s.H || x.W != s.W || x.ph != s.ph || x.pw != s.pw)
    invalid("packed activations do not match the convolution shape");
  if (w.O != s.O || w.C != s.C || w.KH != s.KH || w.KW != s.KW)
    invalid("packed weights do not match the convolution shape");
  job.x = &x, job.w = &w, job.s = &s;
  job.OH = s.OH(), job.OW = s.OW();
  // Reduction word i = (kh * KW + kw) * words + k, in the order of the blocked weights.
  std::vector<int64_t> offs(static_cast<size_t>(s.KH * s.KW * x.words));
  for (int64_t kh = 0; kh < s.KH; ++kh)
    for (int64_t kw = 0; kw < s.KW; ++kw)
      for (int64_t k = 0; k < x.words; ++k)
        offs[(kh * s.KW + kw) * x.words + k] = (kh * s.dh * x.Wp() + kw * s.dw) * x.words + k;
  job.word_offsets = offs.data();
  job.k_total = s.C * s.KH * s.KW;
  std::shared_ptr<const CorrectionTable> corr;
  if (s.pad_value != 1 && (s.ph > 0 || s.pw > 0)) {
    corr = w.correction(s);
    job.row_class = corr->row_class.data();
    job.col_class = corr->col_class.data();
    job.corr_table = corr->table.data();
    job.nrc = corr->nrc, job.ncc = corr->ncc;
    job.col_inner_lo = corr->col_inner_lo, job.col_inner_hi = corr->col_inner_hi;
  }
  const KernelTable& kt = active_kernels();
  job.weights = kt.pair_weights ? w.pair_blocked.data() : w.blocked.data();
  const int64_t blocks = out_blocks(s.O);
  const int64_t rows = s.N * job.OH;
  if ((job.channels_last_out || job.out_bits) && pool.num_threads() > 1) {
    // Block-major: threads claim consecutive items, and the items of one output row would write
    // neighbouring (possibly shared) cache lines of the same NHWC pixels; adjacent rows of one
    // block do not.
    pool.parallel_for(rows * blocks, [&](int64_t i) {
      const int64_t ob = i / rows, row = i % rows;
      kt.conv_row(job, row / job.OH, row % job.OH, ob);
    });
    return;
  }
  pool.parallel_for(rows * blocks, [&](int64_t i) {
    const int64_t row = i / blocks, ob = i % blocks;
    kt.conv_row(job, row / job.OH, row % job.OH, ob);
  });
}

// A packed-sign output with its border and zeroed words (border = +1, tail bits = 0).
PackedActivations sign_output(const ConvShape& s, int64_t out_ph, int64_t out_pw) {
  require_geometry("output padding height", out_ph, 0);
  require_geometry("output padding width", out_pw, 0);
  check_buffer("packed output", {s.N, s.OH() + 2 * out_ph, s.OW() + 2 * out_pw, words_for(s.O)}, sizeof(uint64_t));
  return blank_activations(s.N, s.O, s.OH(), s.OW(), out_ph, out_pw);
}

// NHWC floats written `stride` floats per pixel: at least the conv's O channels.
void require_pixel_stride(const ConvShape& s, int64_t stride) {
  if (stride < s.O)
    invalid("the output pixel stride (" + std::to_string(stride) + ") must be at least O (" + std::to_string(s.O) + ")");
}

}  // namespace

void binary_conv2d(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                   const OutputTransform& t, float* out, ThreadPool& pool, bool channels_last_out,
                   int64_t out_pixel_stride) {
  if (t.sign_bits) invalid("binary_conv2d writes no sign bits (binary_conv2d_dual does)");
  if (t.sign_shift) invalid("binary_conv2d writes no sign bits, so takes no sign shift (binary_conv2d_dual does)");
  if (t.has_float_post_ops() && !channels_last_out)
    invalid("a fused residual sum, activation or shift needs channels-last output");
  if (out_pixel_stride != 0 && !channels_last_out) invalid("an output pixel stride needs channels-last output");
  if (out_pixel_stride != 0) require_pixel_stride(s, out_pixel_stride);
  ConvJob job;
  job.t = t, job.out = out, job.channels_last_out = channels_last_out;
  job.ld = out_pixel_stride != 0 ? out_pixel_stride : s.O;
  run_conv(x, w, s, job, pool);
}

void binary_conv2d_sign(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, int64_t out_ph, int64_t out_pw, PackedActivations& out,
                        ThreadPool& pool) {
  s.validate();
  if (t.has_post_ops()) invalid("a fused residual sum, PReLU, shift or sign shift needs float output (binary_conv2d_dual)");
  // Built aside and moved into `out` only when complete (a cancelled conv leaves `out` as it was).
  PackedActivations bits = sign_output(s, out_ph, out_pw);
  ConvJob job;
  job.t = t, job.out_bits = &bits;
  run_conv(x, w, s, job, pool);
  out = std::move(bits);
}

void binary_conv2d_dual_into(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                             const OutputTransform& t, float* out, int64_t out_pixel_stride, PackedActivations& bits,
                             int64_t bits_channel, ThreadPool& pool) {
  s.validate();
  if (t.sign_bits) invalid("binary_conv2d_dual_into writes `bits` (sign_bits must be null)");
  require_pixel_stride(s, out_pixel_stride);
  if (bits.N != s.N || bits.H != s.OH() || bits.W != s.OW())
    invalid("the packed output does not have the convolution's batch and image size");
  if (bits_channel < 0 || bits_channel % kOutBlock != 0 || bits_channel + s.O > bits.C)
    invalid("the packed output's channel " + std::to_string(bits_channel) + " must be a multiple of " +
            std::to_string(kOutBlock) + " with the " + std::to_string(s.O) + " output channels inside its " +
            std::to_string(bits.C));
  if (s.O % kOutBlock != 0 && bits_channel + s.O != bits.C)
    invalid("output channels that are not a multiple of " + std::to_string(kOutBlock) +
            " must be the packed output's last ones");
  if (bits.data.size() != static_cast<size_t>(bits.N * bits.Hp() * bits.Wp() * bits.words))
    invalid("the packed output's buffer does not match its shape");
  ConvJob job;
  job.t = t, job.t.sign_bits = &bits, job.out = out, job.channels_last_out = true, job.ld = out_pixel_stride;
  job.bits_block0 = bits_channel / kOutBlock;
  run_conv(x, w, s, job, pool);
}

void binary_conv2d_dual(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, float* out, int64_t out_ph, int64_t out_pw,
                        PackedActivations& bits, ThreadPool& pool) {
  s.validate();
  if (t.sign_bits) invalid("binary_conv2d_dual makes its own sign bits");
  PackedActivations made = sign_output(s, out_ph, out_pw);
  ConvJob job;
  job.t = t, job.t.sign_bits = &made, job.out = out, job.channels_last_out = true, job.ld = s.O;
  run_conv(x, w, s, job, pool);
  bits = std::move(made);
}

}  // namespace bnn
