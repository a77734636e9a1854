// What the convolution test grids share (conv_test.cpp, epilogue_test.cpp): the geometry axes with
// their labels, the test names built from them, the instruction sets of this build with the suite
// that runs each test on one of them, and one convolution's random inputs.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bnn.h"

namespace bnn {
// How gtest prints an instruction set (found by argument-dependent lookup, so in bnn).
inline void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }
}  // namespace bnn

namespace bnn_test {

using bnn::ConvShape;
using bnn::Isa;

// ---- geometry parameters: one small type per axis, each with a label for the test names --------

struct Kernel { int64_t h, w; };
struct Stride { int64_t h, w; };
struct Padding { int64_t h, w; };
struct Dilation { int64_t h, w; };
struct PadValue { int v; };

inline std::string hw(const char* what, int64_t h, int64_t w) {
  return what + std::to_string(h) + "x" + std::to_string(w);
}
inline std::string label(Isa isa) { return bnn::isa_name(isa); }
inline std::string label(const Kernel& k) { return hw("k", k.h, k.w); }
inline std::string label(const Stride& s) { return hw("s", s.h, s.w); }
inline std::string label(const Padding& p) { return hw("p", p.h, p.w); }
inline std::string label(const Dilation& d) { return hw("d", d.h, d.w); }
inline std::string label(const PadValue& p) { return p.v < 0 ? "pvm1" : "pv" + std::to_string(p.v); }

// How gtest prints a parameter (a failure's "where GetParam() = ...").
inline void PrintTo(const Kernel& v, std::ostream* os) { *os << label(v); }
inline void PrintTo(const Stride& v, std::ostream* os) { *os << label(v); }
inline void PrintTo(const Padding& v, std::ostream* os) { *os << label(v); }
inline void PrintTo(const Dilation& v, std::ostream* os) { *os << label(v); }
inline void PrintTo(const PadValue& v, std::ostream* os) { *os << label(v); }

// Names a test after its parameters: avx2_k3x3_s2x1_... (each parameter type has a `label`, here
// or, found by argument-dependent lookup, beside the type in the test file).
struct ParamName {
  template <class Tuple>
  std::string operator()(const ::testing::TestParamInfo<Tuple>& info) const {
    return std::apply([](const auto&... v) {
      std::string name;
      ((name += (name.empty() ? "" : "_") + label(v)), ...);
      return name;
    }, info.param);
  }
};

// The paths of this build's architecture (the x86 ones are skipped on a CPU without them).
constexpr Isa kIsas[] = {Isa::portable,
#if BNN_HAVE_X86
                         Isa::avx2, Isa::avx512,
#endif
#if BNN_HAVE_NEON
                         Isa::neon,
#endif
};
constexpr PadValue kPadValues[] = {{-1}, {0}, {1}};

// A suite whose first parameter is the instruction set: skipped where it cannot run, else run on
// it (the active path is global, so each test sets it).
template <class Param>
class IsaTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const Isa isa = std::get<0>(this->GetParam());
    if (!bnn::isa_supported(isa)) GTEST_SKIP() << bnn::isa_name(isa) << " is not supported by this CPU/build";
    bnn::set_active_isa(isa);
  }
};

inline ConvShape shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, Kernel k, Stride st, Padding p,
                       Dilation d, PadValue pv) {
  ConvShape s;
  s.N = N, s.C = C, s.H = H, s.W = W, s.O = O, s.KH = k.h, s.KW = k.w;
  s.sh = st.h, s.sw = st.w, s.ph = p.h, s.pw = p.w, s.dh = d.h, s.dw = d.w, s.pad_value = pv.v;
  return s;
}

// ---- one convolution's inputs ------------------------------------------------------------------

struct Case {
  ConvShape s;
  uint64_t seed;                         // the values are a function of (s, seed)
  std::vector<float> x, w, scale, bias;  // x NCHW, w [O][C][KH][KW]
};

inline Case make_case(const ConvShape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  Case c{s, seed, std::vector<float>(static_cast<size_t>(s.N * s.C * s.H * s.W)),
         std::vector<float>(static_cast<size_t>(s.O * s.C * s.KH * s.KW)), std::vector<float>(static_cast<size_t>(s.O)),
         std::vector<float>(static_cast<size_t>(s.O))};
  for (auto& v : c.x) v = normal(rng);
  for (auto& v : c.w) v = normal(rng);
  for (auto& v : c.scale) v = normal(rng);
  for (auto& v : c.bias) v = 4.0f * normal(rng);  // moves the sign threshold by a few counts
  // The values whose sign is easy to get wrong: NaN is -1, -0.0 is +1.
  c.x[0] = NAN, c.x.back() = -0.0f, c.w[0] = -0.0f;
  return c;
}

}  // namespace bnn_test
