// The per-instruction-set entry points. Each kernels_<isa>.cpp defines one KernelTable by
// including conv_driver.inc after its micro-kernel (the interface: micro_kernel.h), so the same
// driver source is compiled once per target with that target's flags.
#pragma once
#include <algorithm>
#include <array>
#include <type_traits>
#include <utility>

#include "bnn.h"

namespace bnn {

struct ConvJob {
  const PackedActivations* x;
  const PackedWeights* w;
  const ConvShape* s;
  OutputTransform t;
  float* out;
  bool channels_last_out = false;  // out is NHWC [N][OH][OW][ld] instead of NCHW [N][O][OH][OW]
  int64_t ld = 0;                  // channels_last_out: floats from one output pixel to the next (>= O)
  // Binarised output (binary_conv2d_sign) instead of `out`: packed activations with their own
  // border (ph, pw); an output-channel block writes its 16 bits as one u16 of a pixel's words.
  PackedActivations* out_bits = nullptr;
  int64_t bits_block0 = 0;  // a dual output's first 16-channel block in t.sign_bits (a concat built in place)
  int64_t OH, OW;
  const uint64_t* weights;      // w->blocked, or w->pair_blocked for a path with pair_weights
  const int64_t* word_offsets;  // [KH*KW*words] offset of each reduction word inside the padded input
  int64_t k_total;              // C * KH * KW
  // Padding correction (pad_value != 1), by class: each output row has a row class (which
  // kernel rows fall outside the input), each output column a column class; class 0 is
  // "none outside". corr_table[(ob * nrc + rc) * ncc + cc][16] is the amount to add.
  const int32_t* row_class = nullptr;  // [OH]
  const int32_t* col_class = nullptr;  // [OW]
  const int32_t* corr_table = nullptr;
  int64_t nrc = 1, ncc = 1;
  int64_t col_inner_lo = 0, col_inner_hi = 0;  // columns in [lo, hi) all have class 0
};

struct KernelTable {
  Isa isa;
  // Packs 64 floats (n <= 64, the rest read as +1) into one word: bit i set where !(p[i] >= 0).
  uint64_t (*sign_mask64)(const float* p, int64_t n);
  // Computes output row `oh` of image `n` for output-channel block `ob`.
  void (*conv_row)(const ConvJob& job, int64_t n, int64_t oh, int64_t ob);
  // Register-resident reference loop for the benchmark: `iters` iterations of the plain
  // XOR + popcount + add step over this path's widest vectors (no loads, no Harley-Seal);
  // returns a checksum. peak_macs_per_iter binary MACs per iteration.
  uint64_t (*peak_loop)(int64_t iters);
  int64_t peak_macs_per_iter;
  // Optional (null: the generic transpose path). Packs one NCHW image row: x points at channel
  // 0, pixel 0 of the row, channels `cstride` floats apart; writes words [W][words] at dst
  // (pixel stride `words`); channel tail bits are zero.
  void (*pack_nchw_row)(const float* x, int64_t cstride, int64_t W, int64_t C, int64_t words, uint64_t* dst);
  // Optional (null: sign_mask64 per word). Packs one NHWC image row: x points at pixel 0,
  // channel 0, pixels C floats apart; writes words [W][words] at dst.
  void (*pack_nhwc_row)(const float* x, int64_t W, int64_t C, int64_t words, uint64_t* dst) = nullptr;
  // The micro-kernel reads PackedWeights::pair_blocked instead of blocked.
  bool pair_weights = false;
};

const KernelTable& portable_kernels();
#if BNN_HAVE_X86
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();
#endif
#if BNN_HAVE_NEON
const KernelTable& neon_kernels();
#endif
const KernelTable& active_kernels();

}  // namespace bnn
