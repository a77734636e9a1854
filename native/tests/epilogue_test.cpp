// The convolution epilogue (bnn::OutputTransform, driver.h) field by field against a scalar
// reference written from driver.h's float operation order, bit for bit (NaN as any NaN), on every
// instruction set, through binary_conv2d (NCHW, NHWC, and NHWC into channels of a wider tensor with
// out_pixel_stride), binary_conv2d_sign and binary_conv2d_dual (with and without sign_shift); and
// the combinations each entry point refuses. The values reach the edges: signed zeros (sums exactly
// +0 and -0), NaN, +-inf, values on the clamp bounds, -0.0 bounds; the shapes have output channel
// counts off the 8- and 16-lane widths, rows wider than an epilogue chunk, padding and strides.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <ostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bnn.h"
#include "conv_grid.h"
#include "reference.h"
#include "thread_pool.h"

namespace {

using namespace bnn_test;  // NOLINT: the shared grid axes and helpers (conv_grid.h)
using bnn_test::label;     // beside this file's own overloads
using ::testing::ValuesIn;

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- parameters: entry point x epilogue fields x shape -----------------------------------------

enum class Entry { nchw, nhwc, nhwc_into, sign, dual, dual_shifted };

// The fields of OutputTransform a test sets (sign_bits / sign_shift come with the entry point).
struct Fields {
  const char* name;
  bool scale, bias, residual, shift_in, slope, shift_out, clamp;
  float lo = 0.0f, hi = 0.0f;
  bool float_post_ops() const { return residual || shift_in || slope || shift_out || clamp; }
};

struct EpilogueShape {
  const char* name;
  ConvShape s;
};

std::string label(Entry e) {
  const char* names[] = {"nchw", "nhwc", "nhwc_into", "sign", "dual", "dual_sign_shift"};
  return names[static_cast<int>(e)];
}
std::string label(const Fields& f) { return f.name; }
std::string label(const EpilogueShape& s) { return s.name; }
void PrintTo(const Entry& v, std::ostream* os) { *os << label(v); }
void PrintTo(const Fields& v, std::ostream* os) { *os << label(v); }
void PrintTo(const EpilogueShape& v, std::ostream* os) { *os << label(v); }

// The affine step alone (every entry point takes it). A scale without a bias is its own slice below.
const Fields kAffineFields[] = {
    {"none", false, false, false, false, false, false, false},
    {"bias", false, true, false, false, false, false, false},
    {"scale_bias", true, true, false, false, false, false, false},
};
// Each later step alone after scale and bias, the PReLU / residual alone on the plain counts, the
// clamps of relu, relu6, hardtanh, with -0.0 bounds and with lo > hi (every value becomes hi), and
// the steps together as Bi-Real-Net and ReActNet use them.
const Fields kFloatPostOpFields[] = {
    {"residual", true, true, true, false, false, false, false},
    {"shift_in", true, true, false, true, false, false, false},
    {"prelu", true, true, false, false, true, false, false},
    {"shift_out", true, true, false, false, false, true, false},
    {"rprelu", true, true, false, true, true, true, false},
    {"plain_residual", false, false, true, false, false, false, false},
    {"plain_prelu", false, false, false, false, true, false, false},
    {"relu", true, true, false, false, false, false, true, 0.0f, kInf},
    {"relu6", true, true, false, false, false, false, true, 0.0f, 6.0f},
    {"hardtanh", true, true, false, false, false, false, true, -1.0f, 1.0f},
    {"clamp_m0_p0", true, true, false, false, false, false, true, -0.0f, 0.0f},
    {"clamp_m0_inf", true, true, false, false, false, false, true, -0.0f, kInf},
    {"clamp_minf_m0", true, true, false, false, false, false, true, -kInf, -0.0f},
    {"clamp_lo_gt_hi", true, true, false, false, false, false, true, 2.0f, -1.0f},
    {"residual_prelu", true, true, true, false, true, false, false},
    {"residual_rprelu_hardtanh", true, true, true, true, true, true, true, -1.0f, 1.0f},
    {"residual_relu", false, true, true, false, false, false, true, 0.0f, kInf},
};
const Fields kScaleWithoutBias = {"scale", true, false, false, false, false, false, false};

// Output channel counts off the 8- and 16-lane widths, and 16 exactly; a row of 70 pixels (past
// every path's epilogue chunk: 60 to 64); padding with each pad value, stride 2 and a 630-bit
// reduction. Few input channels make the count 0 (and so signed-zero outputs) frequent; C = 3 with
// a 3x3 kernel makes the counts odd, so +-1 (hardtanh's bounds) occur.
const EpilogueShape kShapes[] = {
    {"O1", shape(2, 4, 5, 6, 1, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {0})},
    {"O7", shape(2, 3, 5, 6, 7, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1})},
    {"O16", shape(1, 4, 6, 5, 16, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {0})},
    {"O17", shape(2, 6, 4, 7, 17, {2, 3}, {1, 1}, {0, 1}, {1, 1}, {-1})},
    {"O33", shape(1, 4, 5, 5, 33, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {1})},
    {"OW70", shape(1, 4, 3, 70, 19, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {0})},
    {"s2_C70_O24", shape(2, 70, 9, 11, 24, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1})},
};

using EpilogueParam = std::tuple<Isa, Entry, Fields, EpilogueShape>;

// Every entry point with every field set it takes (NCHW float and packed-sign output: the affine
// step only).
std::vector<EpilogueParam> grid(std::initializer_list<Fields> only = {}) {
  std::vector<EpilogueParam> out;
  for (Isa isa : kIsas)
    for (Entry e : {Entry::nchw, Entry::nhwc, Entry::nhwc_into, Entry::sign, Entry::dual, Entry::dual_shifted}) {
      std::vector<Fields> fields(only);
      if (fields.empty()) {
        fields.assign(std::begin(kAffineFields), std::end(kAffineFields));
        if (e != Entry::nchw && e != Entry::sign)
          fields.insert(fields.end(), std::begin(kFloatPostOpFields), std::end(kFloatPostOpFields));
      }
      for (const Fields& f : fields)
        for (const EpilogueShape& s : kShapes) out.emplace_back(isa, e, f, s);
    }
  return out;
}

// ---- the values: ordinary ones, and on most channels an edge value ----------------------------

// [O] values, spread * normal, except on channels o % 4 != 0, which take `edges` in turn (so
// channel 0, all that O = 1 has, stays ordinary).
std::vector<float> per_channel(int64_t O, std::mt19937_64& rng, float spread, std::initializer_list<float> edges) {
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(O));
  size_t k = 0;
  for (int64_t o = 0; o < O; ++o)
    v[static_cast<size_t>(o)] = o % 4 == 0 ? spread * normal(rng) : edges.begin()[k++ % edges.size()];
  return v;
}

struct Values {
  // The k-th scale and bias edges share a channel: (-0.0, -0.0) gives -0.0 where the count is >= 0
  // and +0.0 below; (-0.5, -0.0) gives -0.0 where it is 0; (inf, -inf) and (-inf, NaN) NaN and
  // infinities; (3e38, 3e38) overflows to inf; (0.5, 0.25) and (1, -2) land on the clamp bounds.
  std::vector<float> scale, bias, shift_in, slope, shift_out, sign_shift;
};

Values make_values(int64_t O, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Values v;
  v.scale = per_channel(O, rng, 1.0f, {-0.0f, -0.5f, 0.0f, nan, kInf, 3e38f, 0.5f, 1.0f, -kInf});
  v.bias = per_channel(O, rng, 4.0f, {-0.0f, -0.0f, 0.0f, 1.0f, -kInf, 3e38f, 0.25f, -2.0f, nan});
  v.shift_in = per_channel(O, rng, 1.0f, {-0.0f, 0.0f, nan, kInf, 0.5f, -1.0f, -kInf});
  v.slope = per_channel(O, rng, 0.5f, {0.0f, -0.0f, -1.0f, nan, kInf, 0.25f, 1.0f});
  v.shift_out = per_channel(O, rng, 1.0f, {-0.0f, 0.0f, -kInf, nan, 1.0f, -0.5f});
  v.sign_shift = per_channel(O, rng, 2.0f, {-0.0f, 0.0f, nan, -kInf, kInf, -1.0f, 0.5f});
  return v;
}

// The float steps one at a time: each result is stored to a volatile float, so it is rounded to
// float and never fused with the next operation (whatever the compiler's -ffp-contract).
float affine(float acc, float scale, float bias, const Fields& f) {
  volatile float y = acc * (f.scale ? scale : 1.0f);
  y = y + (f.bias ? bias : -0.0f);  // no bias adds -0.0, the identity: a -0.0 product stays -0.0
  return y;
}

struct Step {
  float r, si, a, so;  // residual, shift_in, slope, shift_out of this element
};

float later_steps(float y0, const Step& e, const Fields& f) {
  volatile float y = y0;
  if (f.residual) y = y + e.r;
  if (f.shift_in) y = y + e.si;
  if (f.slope) {
    const float v = y;
    y = v > 0.0f ? v : e.a * v;
  }
  if (f.shift_out) y = y + e.so;
  if (f.clamp) {
    const float v = y;
    y = v < f.lo ? f.lo : v;
    const float w = y;
    y = w > f.hi ? f.hi : w;
  }
  return y;
}

bool sign_bit(float y, const float* shift) {
  volatile float z = y;
  if (shift) z = z + *shift;
  return !(z >= 0.0f);
}

bool same_float(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b));
}

std::string bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  std::ostringstream os;
  os << f << " (0x" << std::hex << u << ")";
  return os.str();
}

// A float the core never computes from these inputs: what an unwritten output still holds.
float sentinel() {
  const uint32_t u = 0x7fa5a5a5;  // a signalling NaN with a payload of its own
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// One test's inputs and what the reference makes of them.
struct Expected {
  std::vector<float> residual;  // NHWC [N][OH][OW][O]
  std::vector<float> y;         // NHWC: every step
  std::vector<float> y0;        // NHWC: the affine step only (for the messages)
  std::vector<float> acc;       // NHWC: the counts
};

// The counts of a shape: bnn::reference::conv2d with no epilogue (exact integers), NHWC.
const std::vector<float>& counts(const EpilogueShape& es, const Case& c) {
  static std::map<std::string, std::vector<float>> cache;
  auto it = cache.find(es.name);
  if (it == cache.end()) {
    const ConvShape& s = es.s;
    const std::vector<float> nchw = bnn::reference::conv2d(c.x.data(), c.w.data(), s);
    it = cache.emplace(es.name, bnn::reference::nchw_to_nhwc(nchw.data(), s.N, s.O, s.OH() * s.OW())).first;
  }
  return it->second;
}

// The residual: ordinary values, and at the edges: where the affine output is a zero, a zero of
// either sign (sums exactly +0 and -0); elsewhere, in turn, -y (sums exactly +0), -0.0, +0.0, NaN,
// +-inf, and the amounts that move y onto +-1 and 6.
std::vector<float> make_residual(const std::vector<float>& y0, int64_t O, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> r(y0.size());
  for (size_t i = 0; i < r.size(); ++i) {
    const float y = y0[i];
    const int64_t pixel = static_cast<int64_t>(i) / O;
    if (y == 0.0f) {
      r[i] = pixel % 2 ? -0.0f : 0.0f;
      continue;
    }
    switch (i % 11) {
      case 0: r[i] = -y; break;
      case 1: r[i] = -0.0f; break;
      case 2: r[i] = 0.0f; break;
      case 3: r[i] = std::numeric_limits<float>::quiet_NaN(); break;
      case 4: r[i] = kInf; break;
      case 5: r[i] = -kInf; break;
      case 6: r[i] = 1.0f - y; break;
      case 7: r[i] = -1.0f - y; break;
      case 8: r[i] = 6.0f - y; break;
      default: r[i] = 3.0f * normal(rng);
    }
  }
  return r;
}

Expected expected(const EpilogueShape& es, const Case& c, const Values& v, const Fields& f) {
  const ConvShape& s = es.s;
  const int64_t O = s.O;
  Expected e;
  e.acc = counts(es, c);
  e.y0.resize(e.acc.size());
  for (size_t i = 0; i < e.acc.size(); ++i) {
    const size_t o = i % static_cast<size_t>(O);
    e.y0[i] = affine(e.acc[i], v.scale[o], v.bias[o], f);
  }
  e.residual = make_residual(e.y0, O, c.seed + 1);
  e.y.resize(e.acc.size());
  for (size_t i = 0; i < e.acc.size(); ++i) {
    const size_t o = i % static_cast<size_t>(O);
    e.y[i] = later_steps(e.y0[i], {e.residual[i], v.shift_in[o], v.slope[o], v.shift_out[o]}, f);
  }
  return e;
}

// What an element's inputs were, for a failure message.
std::string inputs(const Expected& e, const Values& v, const Fields& f, size_t i, int64_t O, int64_t OW) {
  const size_t o = i % static_cast<size_t>(O);
  const int64_t pixel = static_cast<int64_t>(i) / O;
  std::ostringstream os;
  os << "pixel " << pixel << " (ow " << pixel % OW << ") channel " << o << ": count " << e.acc[i];
  if (f.scale) os << ", scale " << bits_of(v.scale[o]);
  if (f.bias) os << ", bias " << bits_of(v.bias[o]);
  os << ", affine " << bits_of(e.y0[i]);
  if (f.residual) os << ", residual " << bits_of(e.residual[i]);
  if (f.shift_in) os << ", shift_in " << bits_of(v.shift_in[o]);
  if (f.slope) os << ", slope " << bits_of(v.slope[o]);
  if (f.shift_out) os << ", shift_out " << bits_of(v.shift_out[o]);
  if (f.clamp) os << ", clamp [" << bits_of(f.lo) << ", " << bits_of(f.hi) << "]";
  return os.str();
}

// Expects `got` (NHWC floats `ld` apart, channels [c0, c0 + O) of each pixel) to equal `e.y` (and
// to have been written), and every float outside those channels to be the sentinel still. Reports
// the first few differences.
void expect_floats(const std::vector<float>& got, int64_t ld, int64_t c0, const Expected& e, const Values& v,
                   const Fields& f, const ConvShape& s) {
  const int64_t O = s.O, pixels = static_cast<int64_t>(e.y.size()) / O;
  ASSERT_EQ(got.size(), static_cast<size_t>(pixels * ld));
  const float untouched = sentinel();
  int reported = 0, differing = 0;
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t j = 0; j < ld; ++j) {
      const float g = got[static_cast<size_t>(p * ld + j)];
      const bool written = std::memcmp(&g, &untouched, sizeof g) != 0;
      if (j < c0 || j >= c0 + O) {
        if (written && ++differing && reported++ < 3)
          ADD_FAILURE() << "pixel " << p << " float " << j << " is outside the conv's channels [" << c0 << ", "
                        << c0 + O << ") but was written: " << bits_of(g);
        continue;
      }
      const size_t i = static_cast<size_t>(p * O + j - c0);
      if ((!written || !same_float(g, e.y[i])) && ++differing && reported++ < 3)
        ADD_FAILURE() << inputs(e, v, f, i, O, s.OW()) << ": got " << (written ? "" : "(never written) ")
                      << bits_of(g) << ", want " << bits_of(e.y[i]);
    }
  EXPECT_EQ(differing, 0) << "floats differing from the reference";
}

// Expects packed bits [N][OH + 2ph][OW + 2pw][words] to hold bit o where !(y + shift[o] >= 0), and
// zero border and tail bits.
void expect_bits(const bnn::PackedActivations& bits, int64_t ph, int64_t pw, const Expected& e, const Values& v,
                 const Fields& f, const float* shift, const ConvShape& s) {
  const int64_t O = s.O, OH = s.OH(), OW = s.OW(), words = bnn::words_for(O);
  EXPECT_EQ(std::make_tuple(bits.N, bits.C, bits.H, bits.W, bits.ph, bits.pw, bits.words),
            std::make_tuple(s.N, O, OH, OW, ph, pw, words));
  const int64_t Hp = OH + 2 * ph, Wp = OW + 2 * pw;
  std::vector<uint64_t> want(static_cast<size_t>(s.N * Hp * Wp * words), 0);
  for (size_t i = 0; i < e.y.size(); ++i) {
    const int64_t o = static_cast<int64_t>(i) % O, pixel = static_cast<int64_t>(i) / O;
    const int64_t n = pixel / (OH * OW), oh = pixel / OW % OH, ow = pixel % OW;
    if (sign_bit(e.y[i], shift ? shift + o : nullptr))
      want[static_cast<size_t>(((n * Hp + oh + ph) * Wp + ow + pw) * words + o / 64)] |= uint64_t{1} << (o % 64);
  }
  ASSERT_EQ(bits.data.size(), want.size());
  int reported = 0, differing = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const uint64_t got = bits.data.data()[k];
    if (got == want[k]) continue;
    ++differing;
    if (reported++ >= 3) continue;
    const int64_t pixel = static_cast<int64_t>(k) / words, word = static_cast<int64_t>(k) % words;
    const int64_t n = pixel / (Hp * Wp), row = pixel / Wp % Hp - ph, col = pixel % Wp - pw;
    std::ostringstream os;
    os << "packed word at n " << n << " oh " << row << " ow " << col << " word " << word << ": got 0x" << std::hex
       << got << ", want 0x" << want[k] << std::dec;
    const uint64_t diff = got ^ want[k];
    for (int b = 0; b < 64; ++b)
      if (diff >> b & 1) {
        const int64_t o = word * 64 + b;
        if (row < 0 || row >= OH || col < 0 || col >= OW || o >= O) {
          os << "\n  bit " << b << ": border or tail";
          continue;
        }
        const size_t i = static_cast<size_t>(((n * OH + row) * OW + col) * O + o);
        os << "\n  " << inputs(e, v, f, i, O, OW) << ", y " << bits_of(e.y[i]);
        if (shift) os << ", sign_shift " << bits_of(shift[o]);
      }
    ADD_FAILURE() << os.str();
  }
  EXPECT_EQ(differing, 0) << "packed words differing from the reference";
}

// ---- the grid ------------------------------------------------------------------------------------

class EpilogueTest : public IsaTest<EpilogueParam> {};

TEST_P(EpilogueTest, MatchesTheScalarReferenceBitForBit) {
  const auto& [isa, entry, f, es] = GetParam();
  const ConvShape& s = es.s;
  const int64_t O = s.O, P = s.OH() * s.OW(), pixels = s.N * P;
  bnn::ThreadPool pool(3);
  const Case c = make_case(s, 21);
  const Values v = make_values(O, 22);
  const Expected e = expected(es, c, v, f);

  bnn::OutputTransform t;
  if (f.scale) t.scale = v.scale.data();
  if (f.bias) t.bias = v.bias.data();
  if (f.residual) t.residual = e.residual.data();
  if (f.shift_in) t.shift_in = v.shift_in.data();
  if (f.slope) t.slope = v.slope.data();
  if (f.shift_out) t.shift_out = v.shift_out.data();
  t.clamp = f.clamp, t.clamp_lo = f.lo, t.clamp_hi = f.hi;
  const float* shift = entry == Entry::dual_shifted ? v.sign_shift.data() : nullptr;
  t.sign_shift = shift;

  const auto weights = bnn::PackedWeights::from_float(c.w.data(), O, s.C, s.KH, s.KW);
  bnn::PackedActivations packed, bits;
  bnn::pack_activations(c.x.data(), s.N, s.C, s.H, s.W, false, s.ph, s.pw, packed, pool);

  switch (entry) {
    case Entry::nchw: {
      std::vector<float> y(static_cast<size_t>(pixels * O), sentinel());
      bnn::binary_conv2d(packed, weights, s, t, y.data(), pool, false);
      expect_floats(bnn::reference::nchw_to_nhwc(y.data(), s.N, O, P), O, 0, e, v, f, s);
      break;
    }
    case Entry::nhwc: {
      std::vector<float> y(static_cast<size_t>(pixels * O), sentinel());
      bnn::binary_conv2d(packed, weights, s, t, y.data(), pool, true);
      expect_floats(y, O, 0, e, v, f, s);
      break;
    }
    case Entry::nhwc_into: {
      // Channels [3, 3 + O) of an NHWC tensor with O + 5 channels: unaligned vector stores, and
      // floats on both sides that must stay as they were.
      const int64_t c0 = 3, ld = O + 5;
      std::vector<float> y(static_cast<size_t>(pixels * ld), sentinel());
      bnn::binary_conv2d(packed, weights, s, t, y.data() + c0, pool, true, ld);
      expect_floats(y, ld, c0, e, v, f, s);
      break;
    }
    case Entry::sign:
      bnn::binary_conv2d_sign(packed, weights, s, t, 2, 1, bits, pool);
      expect_bits(bits, 2, 1, e, v, f, nullptr, s);
      break;
    case Entry::dual:
    case Entry::dual_shifted: {
      const int64_t ph = entry == Entry::dual ? 1 : 0, pw = entry == Entry::dual ? 0 : 2;
      std::vector<float> y(static_cast<size_t>(pixels * O), sentinel());
      bnn::binary_conv2d_dual(packed, weights, s, t, y.data(), ph, pw, bits, pool);
      expect_floats(y, O, 0, e, v, f, s);
      expect_bits(bits, ph, pw, e, v, f, shift, s);
      break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, EpilogueTest, ValuesIn(grid()), ParamName());

// A scale without a bias, where a count of 0 times a negative scale (or a negative count times a
// zero scale) is -0.0, and stays -0.0 on every path, as torch's `y * scale` keeps it.
INSTANTIATE_TEST_SUITE_P(ScaleWithoutBias, EpilogueTest, ValuesIn(grid({kScaleWithoutBias})), ParamName());

// ---- refusals: what each entry point does not take --------------------------------------------

class EpilogueRefusedTest : public ::testing::Test {
 protected:
  EpilogueRefusedTest()
      : c(make_case(shape(1, 8, 4, 5, 7, {3, 3}, {1, 1}, {1, 1}, {1, 1}, {0}), 23)),
        weights(bnn::PackedWeights::from_float(c.w.data(), 7, 8, 3, 3)),
        ones(7, 1.0f),
        y(static_cast<size_t>(4 * 5 * 16), sentinel()) {
    bnn::pack_activations(c.x.data(), 1, 8, 4, 5, false, 1, 1, packed, pool);
  }
  const ConvShape& s() const { return c.s; }

  // The transform with one float post-op set: 0 residual, 1 shift_in, 2 slope, 3 shift_out, 4 clamp.
  bnn::OutputTransform with_float_post_op(int which) const {
    bnn::OutputTransform t;
    if (which == 0) t.residual = y.data();
    if (which == 1) t.shift_in = ones.data();
    if (which == 2) t.slope = ones.data();
    if (which == 3) t.shift_out = ones.data();
    if (which == 4) t.clamp = true, t.clamp_lo = 0.0f, t.clamp_hi = kInf;
    return t;
  }

  bool untouched(const std::vector<float>& out) const {
    const float want = sentinel();
    for (float g : out)
      if (std::memcmp(&g, &want, sizeof g) != 0) return false;
    return true;
  }

  bnn::ThreadPool pool{1};
  Case c;
  bnn::PackedWeights weights;
  bnn::PackedActivations packed;
  std::vector<float> ones, y;
};

TEST_F(EpilogueRefusedTest, FloatPostOpsNeedChannelsLastOutput) {
  for (int which = 0; which < 5; ++which) {
    SCOPED_TRACE("post op " + std::to_string(which));
    std::vector<float> out(y.size(), sentinel());
    EXPECT_THROW(bnn::binary_conv2d(packed, weights, s(), with_float_post_op(which), out.data(), pool, false),
                 std::invalid_argument);
    EXPECT_TRUE(untouched(out));
    bnn::binary_conv2d(packed, weights, s(), with_float_post_op(which), out.data(), pool, true);  // taken
  }
}

TEST_F(EpilogueRefusedTest, PixelStrideIsAtLeastOAndChannelsLastOnly) {
  for (int64_t stride : {int64_t{6}, int64_t{1}, int64_t{-1}, int64_t{-7}}) {
    SCOPED_TRACE("out_pixel_stride " + std::to_string(stride));
    std::vector<float> out(y.size(), sentinel());
    EXPECT_THROW(bnn::binary_conv2d(packed, weights, s(), {}, out.data(), pool, true, stride), std::invalid_argument);
    EXPECT_TRUE(untouched(out));
  }
  std::vector<float> out(y.size(), sentinel());
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s(), {}, out.data(), pool, false, 8), std::invalid_argument);
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s(), {}, out.data(), pool, false, 7), std::invalid_argument);
  EXPECT_TRUE(untouched(out));
  // A stride of exactly O is the same as none.
  std::vector<float> dense(static_cast<size_t>(4 * 5 * 7)), strided(dense.size());
  bnn::binary_conv2d(packed, weights, s(), {}, dense.data(), pool, true);
  bnn::binary_conv2d(packed, weights, s(), {}, strided.data(), pool, true, 7);
  EXPECT_EQ(std::memcmp(dense.data(), strided.data(), dense.size() * sizeof(float)), 0);
}

// 0 to 4: the float post-ops, 5: sign_shift, 6: sign_bits; `out` is left as it was.
TEST_F(EpilogueRefusedTest, SignOutputTakesNoPostOp) {
  for (int which = 0; which < 7; ++which) {
    SCOPED_TRACE("post op " + std::to_string(which));
    bnn::PackedActivations out, other;
    bnn::binary_conv2d_sign(packed, weights, s(), {}, 0, 0, out, pool);
    const std::vector<uint64_t> before(out.data.data(), out.data.data() + out.data.size());
    bnn::OutputTransform t = which < 5 ? with_float_post_op(which) : bnn::OutputTransform{};
    if (which == 5) t.sign_shift = ones.data();
    if (which == 6) t.sign_bits = &other;
    EXPECT_THROW(bnn::binary_conv2d_sign(packed, weights, s(), t, 1, 1, out, pool), std::invalid_argument);
    EXPECT_EQ(std::make_tuple(out.ph, out.pw), std::make_tuple(int64_t{0}, int64_t{0}));
    ASSERT_EQ(out.data.size(), before.size());
    EXPECT_TRUE(std::equal(before.begin(), before.end(), out.data.data()));
  }
}

TEST_F(EpilogueRefusedTest, SignBitsOnlyFromTheDualOutput) {
  bnn::PackedActivations other;
  bnn::OutputTransform t;
  t.sign_bits = &other;
  std::vector<float> out(y.size(), sentinel());
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s(), t, out.data(), pool, true), std::invalid_argument);
  EXPECT_THROW(bnn::binary_conv2d_dual(packed, weights, s(), t, out.data(), 0, 0, other, pool), std::invalid_argument);
  t.sign_bits = nullptr, t.sign_shift = ones.data();
  EXPECT_THROW(bnn::binary_conv2d(packed, weights, s(), t, out.data(), pool, true), std::invalid_argument);
  EXPECT_TRUE(untouched(out));
}

}  // namespace
