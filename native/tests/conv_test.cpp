// The convolution paths against bnn::reference, exactly, over parameter grids: every instruction
// set (one this CPU or build cannot run is skipped, saying so), NCHW and NHWC input, float NCHW,
// float NHWC and packed-sign output (with and without a border), thread counts, the fused scale /
// bias epilogue and its later steps (residual sum, PReLU, dual float + packed-sign output), the
// geometry (kernel, stride, padding, dilation, pad value), channel counts at the edges of the
// 64-bit word and the 16-channel block, inputs smaller than the kernel, and random shapes. Every input holds a NaN (sign -1) and a -0.0 (sign +1).
#include <gtest/gtest.h>

#include <array>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bnn.h"
#include "conv_grid.h"
#include "reference.h"
#include "thread_pool.h"

namespace {

using namespace bnn_test;  // NOLINT: the shared grid axes and helpers (conv_grid.h)
using bnn_test::label;     // beside this file's own overloads
using ::testing::Combine;
using ::testing::Values;
using ::testing::ValuesIn;

// ---- parameters: one small type per axis, each with a label for the test names (the geometry
// axes: conv_grid.h) ------------------------------------------------------------------------------

struct Input { int64_t h, w; };
struct InChannels { int64_t n; };
struct OutChannels { int64_t n; };
struct Threads { int n; };
struct Seed { int v; };
enum class In { nchw, nhwc };
struct Out {
  enum Kind { nchw, nhwc, sign } kind;
  int64_t ph = 0, pw = 0;  // the border of a packed-sign output
};
enum class Epilogue { plain, scale, bias, scale_bias };

std::string label(const Input& i) { return hw("in", i.h, i.w); }
std::string label(const InChannels& c) { return "C" + std::to_string(c.n); }
std::string label(const OutChannels& o) { return "O" + std::to_string(o.n); }
std::string label(const Threads& t) { return "t" + std::to_string(t.n); }
std::string label(const Seed& s) { return "case" + std::to_string(s.v); }
std::string label(In in) { return in == In::nhwc ? "nhwc_in" : "nchw_in"; }
std::string label(const Out& o) {
  return o.kind == Out::nchw ? "nchw_out" : o.kind == Out::nhwc ? "nhwc_out" : hw("sign_out_b", o.ph, o.pw);
}
std::string label(Epilogue e) {
  const char* names[] = {"plain", "scale", "bias", "scale_bias"};
  return names[static_cast<int>(e)];
}

// How gtest prints a parameter (a failure's "where GetParam() = ...").
void PrintTo(const Input& v, std::ostream* os) { *os << label(v); }
void PrintTo(const InChannels& v, std::ostream* os) { *os << label(v); }
void PrintTo(const OutChannels& v, std::ostream* os) { *os << label(v); }
void PrintTo(const Threads& v, std::ostream* os) { *os << label(v); }
void PrintTo(const Seed& v, std::ostream* os) { *os << label(v); }
void PrintTo(const In& v, std::ostream* os) { *os << label(v); }
void PrintTo(const Out& v, std::ostream* os) { *os << label(v); }
void PrintTo(const Epilogue& v, std::ostream* os) { *os << label(v); }

const In kInputs[] = {In::nchw, In::nhwc};

// ---- one convolution, every path checked against the reference --------------------------------

bnn::OutputTransform transform(const Case& c, Epilogue e) {
  bnn::OutputTransform t;
  if (e == Epilogue::scale || e == Epilogue::scale_bias) t.scale = c.scale.data();
  if (e == Epilogue::bias || e == Epilogue::scale_bias) t.bias = c.bias.data();
  return t;
}

// The reference output of case c with epilogue e. It is the same for every instruction set,
// layout and thread count, so each is computed once (most of the run time otherwise).
const std::vector<float>& reference_output(const Case& c, Epilogue e) {
  using Key = std::tuple<std::array<int64_t, 14>, uint64_t, Epilogue>;
  static std::map<Key, std::vector<float>> cache;
  const ConvShape& s = c.s;
  const Key key{{s.N, s.C, s.H, s.W, s.O, s.KH, s.KW, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw, s.pad_value}, c.seed, e};
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, bnn::reference::conv2d(c.x.data(), c.w.data(), s, transform(c, e))).first;
  return it->second;
}

// Packs c's input in layout `in`, convolves it on the active path with epilogue e into output
// `out` and expects exactly the reference output.
void expect_exact(const Case& c, Epilogue e, In in, const Out& out, bnn::ThreadPool& pool) {
  SCOPED_TRACE(label(in) + " " + label(out));
  const ConvShape& s = c.s;
  const bnn::OutputTransform t = transform(c, e);
  const std::vector<float>& want = reference_output(c, e);
  const int64_t OH = s.OH(), OW = s.OW(), P = OH * OW;
  const auto weights = bnn::PackedWeights::from_float(c.w.data(), s.O, s.C, s.KH, s.KW);
  const std::vector<float> x = in == In::nhwc ? bnn::reference::nchw_to_nhwc(c.x.data(), s.N, s.C, s.H * s.W) : c.x;
  bnn::PackedActivations packed;
  bnn::pack_activations(x.data(), s.N, s.C, s.H, s.W, in == In::nhwc, s.ph, s.pw, packed, pool);

  if (out.kind == Out::sign) {
    bnn::PackedActivations bits;
    bnn::binary_conv2d_sign(packed, weights, s, t, out.ph, out.pw, bits, pool);
    EXPECT_EQ(std::make_tuple(bits.N, bits.C, bits.H, bits.W, bits.ph, bits.pw, bits.words),
              std::make_tuple(s.N, s.O, OH, OW, out.ph, out.pw, bnn::words_for(s.O)));
    const std::vector<uint64_t> want_bits = bnn::reference::sign_bits(want, s, out.ph, out.pw);
    ASSERT_EQ(bits.data.size(), want_bits.size());
    for (size_t i = 0; i < want_bits.size(); ++i)
      if (bits.data.data()[i] != want_bits[i]) {
        const int64_t words = bits.words, pixel = static_cast<int64_t>(i) / words;
        ADD_FAILURE() << "packed output differs at n=" << pixel / (bits.Hp() * bits.Wp())
                      << " padded row=" << pixel / bits.Wp() % bits.Hp() << " padded col=" << pixel % bits.Wp()
                      << " word=" << static_cast<int64_t>(i) % words << ": got " << std::hex << bits.data.data()[i]
                      << ", want " << want_bits[i];
        return;
      }
    return;
  }
  std::vector<float> y(want.size());
  bnn::binary_conv2d(packed, weights, s, t, y.data(), pool, out.kind == Out::nhwc);
  if (out.kind == Out::nhwc) y = bnn::reference::nhwc_to_nchw(y.data(), s.N, s.O, P);
  for (size_t i = 0; i < want.size(); ++i)
    if (y[i] != want[i]) {
      const int64_t at = static_cast<int64_t>(i);
      ADD_FAILURE() << "output differs at n=" << at / (s.O * P) << " o=" << at / P % s.O << " oh=" << at % P / OW
                    << " ow=" << at % OW << ": got " << y[i] << ", want " << want[i];
      return;
    }
}

// Every input and output layout of one case, plain epilogue.
void expect_every_layout_exact(const Case& c, int64_t sign_ph, int64_t sign_pw, bnn::ThreadPool& pool) {
  for (In in : kInputs)
    for (Out out : {Out{Out::nchw}, Out{Out::nhwc}, Out{Out::sign, sign_ph, sign_pw}})
      expect_exact(c, Epilogue::plain, in, out, pool);
}

// A geometry with an empty output: every entry point refuses it.
void expect_refused(const Case& c, bnn::ThreadPool& pool) {
  const ConvShape& s = c.s;
  EXPECT_THROW(s.validate(), std::invalid_argument);
  const auto weights = bnn::PackedWeights::from_float(c.w.data(), s.O, s.C, s.KH, s.KW);
  bnn::PackedActivations packed, bits;
  bnn::pack_activations(c.x.data(), s.N, s.C, s.H, s.W, false, s.ph, s.pw, packed, pool);
  std::vector<float> y(16);
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s, {}, y.data(), pool), std::invalid_argument);
  EXPECT_THROW(bnn::binary_conv2d_sign(packed, weights, s, {}, 0, 0, bits, pool), std::invalid_argument);
}

// ---- geometry: kernel x stride x padding x dilation x pad value --------------------------------

using GeometryParam = std::tuple<Isa, Kernel, Stride, Padding, Dilation, PadValue>;
class ConvGeometryTest : public IsaTest<GeometryParam> {};

// Two words of input channels (the second partial) and two blocks of output channels (the second
// partial); every layout, the sign output with an uneven border.
TEST_P(ConvGeometryTest, EveryLayoutMatchesTheReference) {
  const auto& [isa, kernel, stride, padding, dilation, pad_value] = GetParam();
  bnn::ThreadPool pool(2);
  expect_every_layout_exact(make_case(shape(2, 70, 9, 11, 19, kernel, stride, padding, dilation, pad_value), 1), 1, 2,
                            pool);
}

INSTANTIATE_TEST_SUITE_P(Grid, ConvGeometryTest,
                         Combine(ValuesIn(kIsas), Values(Kernel{1, 1}, Kernel{3, 3}, Kernel{2, 4}, Kernel{4, 1}),
                                 Values(Stride{1, 1}, Stride{2, 2}, Stride{3, 1}, Stride{1, 3}),
                                 Values(Padding{0, 0}, Padding{1, 1}, Padding{2, 0}, Padding{0, 2}),
                                 Values(Dilation{1, 1}, Dilation{2, 2}, Dilation{1, 2}), ValuesIn(kPadValues)),
                         ParamName());

// ---- channels: in x out channel counts around 64 (a word) and 16 (a block) ---------------------

using ChannelsParam = std::tuple<Isa, InChannels, OutChannels, PadValue>;
class ConvChannelsTest : public IsaTest<ChannelsParam> {};

TEST_P(ConvChannelsTest, EveryLayoutMatchesTheReference) {
  const auto& [isa, in_channels, out_channels, pad_value] = GetParam();
  bnn::ThreadPool pool(2);
  const ConvShape s = shape(1, in_channels.n, 6, 7, out_channels.n, {3, 3}, {1, 1}, {1, 1}, {1, 1}, pad_value);
  expect_every_layout_exact(make_case(s, 2), 1, 0, pool);
}

INSTANTIATE_TEST_SUITE_P(Grid, ConvChannelsTest,
                         Combine(ValuesIn(kIsas),
                                 Values(InChannels{1}, InChannels{2}, InChannels{63}, InChannels{64}, InChannels{65},
                                        InChannels{127}, InChannels{128}, InChannels{130}, InChannels{193}),
                                 Values(OutChannels{1}, OutChannels{7}, OutChannels{15}, OutChannels{16},
                                        OutChannels{17}, OutChannels{33}, OutChannels{64}, OutChannels{65}),
                                 ValuesIn(kPadValues)),
                         ParamName());

// ---- inputs no larger than the kernel: mostly border, or no output at all ----------------------

using SmallInputParam = std::tuple<Isa, Input, Kernel, Stride, Padding, Dilation, PadValue>;
class ConvSmallInputTest : public IsaTest<SmallInputParam> {};

TEST_P(ConvSmallInputTest, EveryLayoutMatchesTheReferenceOrIsRefused) {
  const auto& [isa, input, kernel, stride, padding, dilation, pad_value] = GetParam();
  bnn::ThreadPool pool(2);
  const Case c = make_case(shape(1, 5, input.h, input.w, 3, kernel, stride, padding, dilation, pad_value), 3);
  if (c.s.OH() < 1 || c.s.OW() < 1)
    expect_refused(c, pool);
  else
    expect_every_layout_exact(c, 0, 1, pool);
}

INSTANTIATE_TEST_SUITE_P(Grid, ConvSmallInputTest,
                         Combine(ValuesIn(kIsas), Values(Input{1, 1}, Input{1, 4}, Input{2, 3}, Input{3, 1}, Input{4, 4}),
                                 Values(Kernel{1, 1}, Kernel{2, 2}, Kernel{3, 3}, Kernel{4, 2}),
                                 Values(Stride{1, 1}, Stride{2, 3}), Values(Padding{0, 0}, Padding{1, 1}, Padding{2, 1}),
                                 Values(Dilation{1, 1}, Dilation{2, 1}), ValuesIn(kPadValues)),
                         ParamName());

// ---- outputs: input layout x output layout x threads x epilogue --------------------------------

using OutputParam = std::tuple<Isa, In, Out, Threads, Epilogue>;
class ConvOutputTest : public IsaTest<OutputParam> {};

// Three shapes: channel tails and three output blocks with zero padding; rows of 75 pixels (more
// than one 64-pixel epilogue chunk) with -1 padding; and a strided, dilated conv with two words of
// sign output.
const ConvShape kOutputShapes[] = {shape(2, 70, 10, 10, 37, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {0}),
                                   shape(1, 64, 3, 75, 16, {1, 3}, {1, 1}, {0, 1}, {1, 1}, {-1}),
                                   shape(3, 130, 7, 9, 65, {3, 2}, {2, 1}, {1, 2}, {2, 1}, {1})};

TEST_P(ConvOutputTest, MatchesTheReference) {
  const auto& [isa, in, out, threads, epilogue] = GetParam();
  bnn::ThreadPool pool(threads.n);
  for (const ConvShape& s : kOutputShapes) {
    SCOPED_TRACE("C=" + std::to_string(s.C) + " W=" + std::to_string(s.W) + " O=" + std::to_string(s.O));
    const Case c = make_case(s, 4);
    expect_exact(c, epilogue, in, out, pool);
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, ConvOutputTest,
                         Combine(ValuesIn(kIsas), ValuesIn(kInputs),
                                 Values(Out{Out::nchw}, Out{Out::nhwc}, Out{Out::sign, 0, 0}, Out{Out::sign, 1, 0},
                                        Out{Out::sign, 2, 1}),
                                 Values(Threads{1}, Threads{2}, Threads{3}, Threads{8}),
                                 Values(Epilogue::plain, Epilogue::scale, Epilogue::bias, Epilogue::scale_bias)),
                         ParamName());

// ---- long reductions: more reduction words than a kernel's narrow counters hold ---------------

// K = KH * KW * words past 1022 (the NEON path's 16-bit counters take 511 word pairs a chunk) and
// past 2044, with random signs and with every bit a mismatch (the largest count a counter can reach).
struct LongShape { int64_t C, k, H, W, O, pad; };
std::string label(const LongShape& l) { return "C" + std::to_string(l.C) + "_" + hw("k", l.k, l.k); }
void PrintTo(const LongShape& v, std::ostream* os) { *os << label(v); }
enum class Signs { random, all_mismatch };
std::string label(Signs s) { return s == Signs::random ? "random" : "all_mismatch"; }
void PrintTo(const Signs& v, std::ostream* os) { *os << label(v); }

using LongParam = std::tuple<Isa, LongShape, Signs, PadValue>;
class ConvLongReductionTest : public IsaTest<LongParam> {};

TEST_P(ConvLongReductionTest, EveryLayoutMatchesTheReference) {
  const auto& [isa, l, signs, pad_value] = GetParam();
  bnn::ThreadPool pool(2);
  // Its own seed per sign pattern: the reference cache is keyed by (shape, seed, epilogue).
  Case c = make_case(shape(1, l.C, l.H, l.W, l.O, {l.k, l.k}, {1, 1}, {l.pad, l.pad}, {1, 1}, pad_value),
                     signs == Signs::random ? 5 : 6);
  if (signs == Signs::all_mismatch) {
    for (auto& v : c.x) v = -1.0f;
    for (auto& v : c.w) v = 1.0f;
  }
  expect_every_layout_exact(c, 0, 1, pool);
}

INSTANTIATE_TEST_SUITE_P(Grid, ConvLongReductionTest,
                         Combine(ValuesIn(kIsas),
                                 Values(LongShape{7296, 3, 4, 4, 17, 1}, LongShape{65537, 1, 2, 5, 3, 0},
                                        LongShape{14597, 3, 3, 4, 5, 1}),
                                 Values(Signs::random, Signs::all_mismatch), Values(PadValue{0}, PadValue{1})),
                         ParamName());

// ---- the epilogue's later steps: residual sum, PReLU, dual (float + packed sign) output ---------

// What follows the affine step, as the separate ops would compute it on the float output.
struct PostOps {
  bool residual, prelu, dual;
  int64_t ph = 0, pw = 0;  // the dual output's border
};
std::string label(const PostOps& p) {
  std::string name = std::string(p.residual ? "residual" : "noresidual") + (p.prelu ? "_prelu" : "");
  return p.dual ? name + "_" + hw("dual_b", p.ph, p.pw) : name;
}
void PrintTo(const PostOps& v, std::ostream* os) { *os << label(v); }

using PostOpsParam = std::tuple<Isa, In, PostOps, Threads, Epilogue>;
class ConvPostOpsTest : public IsaTest<PostOpsParam> {};

// NHWC float output with the residual added and PReLU applied in the epilogue equals the reference
// output followed by y + r, then y > 0 ? y : a * y; the dual output's bits equal the reference
// packing of those floats. The residual has zeros of both signs and a NaN; the slopes include 0
// and negative ones (so -0.0 and +0.0 results both occur).
TEST_P(ConvPostOpsTest, MatchesTheSeparateOps) {
  const auto& [isa, in, post, threads, epilogue] = GetParam();
  bnn::ThreadPool pool(threads.n);
  for (const ConvShape& s : kOutputShapes) {
    SCOPED_TRACE("C=" + std::to_string(s.C) + " W=" + std::to_string(s.W) + " O=" + std::to_string(s.O));
    const Case c = make_case(s, 7);
    const int64_t P = s.OH() * s.OW();
    std::vector<float> want = reference_output(c, epilogue);  // NCHW
    std::mt19937_64 rng(11);
    std::normal_distribution<float> normal;
    std::vector<float> residual(want.size()), slope(static_cast<size_t>(s.O));
    for (auto& v : residual) v = 3.0f * normal(rng);
    residual[1] = -0.0f, residual[2] = 0.0f, residual[residual.size() / 2] = NAN;
    for (auto& v : slope) v = normal(rng);
    slope[0] = 0.0f;
    for (size_t i = 0; i < want.size(); ++i) {
      float y = want[i];
      if (post.residual) y = y + residual[i];
      if (post.prelu) y = y > 0.0f ? y : slope[static_cast<size_t>(static_cast<int64_t>(i) / P % s.O)] * y;
      want[i] = y;
    }
    const std::vector<float> residual_nhwc = bnn::reference::nchw_to_nhwc(residual.data(), s.N, s.O, P);
    bnn::OutputTransform t = transform(c, epilogue);
    if (post.residual) t.residual = residual_nhwc.data();
    if (post.prelu) t.slope = slope.data();
    const auto weights = bnn::PackedWeights::from_float(c.w.data(), s.O, s.C, s.KH, s.KW);
    const std::vector<float> x = in == In::nhwc ? bnn::reference::nchw_to_nhwc(c.x.data(), s.N, s.C, s.H * s.W) : c.x;
    bnn::PackedActivations packed, bits;
    bnn::pack_activations(x.data(), s.N, s.C, s.H, s.W, in == In::nhwc, s.ph, s.pw, packed, pool);
    std::vector<float> y(want.size());
    if (post.dual)
      bnn::binary_conv2d_dual(packed, weights, s, t, y.data(), post.ph, post.pw, bits, pool);
    else
      bnn::binary_conv2d(packed, weights, s, t, y.data(), pool, true);
    y = bnn::reference::nhwc_to_nchw(y.data(), s.N, s.O, P);
    for (size_t i = 0; i < want.size(); ++i)
      if (std::memcmp(&y[i], &want[i], sizeof(float)) != 0 && !(std::isnan(y[i]) && std::isnan(want[i]))) {
        ADD_FAILURE() << "output differs at " << i << ": got " << y[i] << ", want " << want[i];
        break;
      }
    if (post.dual) {
      EXPECT_EQ(std::make_tuple(bits.N, bits.C, bits.H, bits.W, bits.ph, bits.pw),
                std::make_tuple(s.N, s.O, s.OH(), s.OW(), post.ph, post.pw));
      const std::vector<uint64_t> want_bits = bnn::reference::sign_bits(want, s, post.ph, post.pw);
      ASSERT_EQ(bits.data.size(), want_bits.size());
      EXPECT_TRUE(std::equal(want_bits.begin(), want_bits.end(), bits.data.data())) << "dual output's sign bits differ";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, ConvPostOpsTest,
                         Combine(ValuesIn(kIsas), ValuesIn(kInputs),
                                 Values(PostOps{true, false, false}, PostOps{false, true, false},
                                        PostOps{true, true, false}, PostOps{false, false, true},
                                        PostOps{true, true, true, 1, 1}, PostOps{true, false, true, 2, 0}),
                                 Values(Threads{1}, Threads{3}), Values(Epilogue::plain, Epilogue::scale_bias)),
                         ParamName());

// Post-ops need float NHWC output; the sign-only entry and NCHW output refuse them.
TEST(ConvPostOpsRefusedTest, OnlyWithChannelsLastFloatOutput) {
  bnn::ThreadPool pool(1);
  const Case c = make_case(shape(1, 8, 4, 4, 5, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {0}), 8);
  const ConvShape& s = c.s;
  const auto weights = bnn::PackedWeights::from_float(c.w.data(), s.O, s.C, s.KH, s.KW);
  bnn::PackedActivations packed, bits;
  bnn::pack_activations(c.x.data(), s.N, s.C, s.H, s.W, false, s.ph, s.pw, packed, pool);
  std::vector<float> y(static_cast<size_t>(s.O * 16)), slope(static_cast<size_t>(s.O), 0.5f);
  bnn::OutputTransform t;
  t.slope = slope.data();
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s, t, y.data(), pool, false), std::invalid_argument);
  EXPECT_THROW(bnn::binary_conv2d_sign(packed, weights, s, t, 0, 0, bits, pool), std::invalid_argument);
  t.slope = nullptr, t.sign_bits = &bits;
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s, t, y.data(), pool, true), std::invalid_argument);
}

// ---- random shapes: every axis at once, independently in height and width ---------------------

using RandomParam = std::tuple<Isa, Seed>;
class ConvRandomTest : public IsaTest<RandomParam> {};

TEST_P(ConvRandomTest, EveryLayoutMatchesTheReferenceOrIsRefused) {
  const auto& [isa, seed] = GetParam();
  std::mt19937_64 rng(static_cast<uint64_t>(seed.v));
  auto uni = [&](int lo, int hi) { return static_cast<int64_t>(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  ConvShape s;
  s.N = uni(1, 2), s.C = uni(1, 140), s.O = uni(1, 37), s.KH = uni(1, 4), s.KW = uni(1, 4);
  s.sh = uni(1, 3), s.sw = uni(1, 3), s.dh = uni(1, 2), s.dw = uni(1, 2), s.ph = uni(0, 2), s.pw = uni(0, 2);
  s.H = uni(1, 9), s.W = uni(1, 9), s.pad_value = static_cast<int>(uni(-1, 1));
  SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " H=" + std::to_string(s.H) +
               " W=" + std::to_string(s.W) + " O=" + std::to_string(s.O) + " " + label(Kernel{s.KH, s.KW}) + " " +
               label(Stride{s.sh, s.sw}) + " " + label(Padding{s.ph, s.pw}) + " " + label(Dilation{s.dh, s.dw}) +
               " " + label(PadValue{s.pad_value}));
  bnn::ThreadPool pool(2);
  const Case c = make_case(s, static_cast<uint64_t>(seed.v) + 1000);
  if (s.OH() < 1 || s.OW() < 1)
    expect_refused(c, pool);
  else
    expect_every_layout_exact(c, seed.v % 3, seed.v / 3 % 2, pool);
}

std::vector<Seed> seeds(int n) {
  std::vector<Seed> out;
  for (int i = 0; i < n; ++i) out.push_back({i});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Random, ConvRandomTest, Combine(ValuesIn(kIsas), ValuesIn(seeds(150))), ParamName());

}  // namespace
