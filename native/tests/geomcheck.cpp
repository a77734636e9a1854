// Geometry and size checks of the core, driven from stdin (tests/native/test_geometry_fuzz.py runs
// it under AddressSanitizer + UBSan with hypothesis-made cases). One case per line:
//   N C H W O KH KW sh sw ph pw dh dw pad_value      (any int64 values)
// and one answer line each:
//   rejected <message>   ConvShape::validate threw std::invalid_argument
//   ok                   valid and small: packed and convolved on every supported instruction set,
//                        NCHW and NHWC in and out, float and binarised output, equal to a naive
//                        reference
//   mismatch <details>   valid and small, but some path disagreed with the reference
//   valid                valid, too large to run here
// The first line out names the limits: "limits max_buffer_bytes=B max_geometry=G max_elements=E".
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnn.h"
#include "reference.h"
#include "thread_pool.h"

namespace {

constexpr double kMaxRunMacs = 1e7;      // cases up to this much work run against the reference
constexpr double kMaxRunElements = 1e6;  // and up to this many input, packed or weight elements

bool small_enough(const bnn::ConvShape& s) {
  const double d = static_cast<double>(s.N) * s.O * s.OH() * s.OW();
  const double macs = d * s.C * s.KH * s.KW;
  const double input = static_cast<double>(s.N) * s.C * s.H * s.W;
  const double padded = static_cast<double>(s.N) * (s.H + 2 * s.ph) * (s.W + 2 * s.pw) * bnn::words_for(s.C);
  const double weights = static_cast<double>(s.O) * s.C * s.KH * s.KW;
  return macs <= kMaxRunMacs && input <= kMaxRunElements && padded <= kMaxRunElements && weights <= kMaxRunElements;
}

// "" when every path matches the reference, else what differed.
std::string run_case(const bnn::ConvShape& s, uint64_t seed, bnn::ThreadPool& pool) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(s.N * s.C * s.H * s.W)), w(static_cast<size_t>(s.O * s.C * s.KH * s.KW));
  for (auto& v : x) v = normal(rng);
  for (auto& v : w) v = normal(rng);
  const std::vector<float> expected = bnn::reference::conv2d(x.data(), w.data(), s);
  const auto weights = bnn::PackedWeights::from_float(w.data(), s.O, s.C, s.KH, s.KW);
  const int64_t P = s.OH() * s.OW();
  const std::vector<float> nhwc_in = bnn::reference::nchw_to_nhwc(x.data(), s.N, s.C, s.H * s.W);
  // The binarised output with a one-pixel border on top and bottom.
  const int64_t oph = 1, opw = 0;
  const std::vector<uint64_t> want_bits = bnn::reference::sign_bits(expected, s, oph, opw);

  for (bnn::Isa isa : bnn::supported_isas()) {
    bnn::set_active_isa(isa);
    for (bool channels_last : {false, true}) {
      const std::string where = std::string(bnn::isa_name(isa)) + (channels_last ? " nhwc-in" : " nchw-in");
      bnn::PackedActivations packed;
      bnn::pack_activations(channels_last ? nhwc_in.data() : x.data(), s.N, s.C, s.H, s.W, channels_last, s.ph, s.pw,
                            packed, pool);
      for (bool cl_out : {false, true}) {
        std::vector<float> out(expected.size());
        bnn::binary_conv2d(packed, weights, s, {}, out.data(), pool, cl_out);
        for (int64_t n = 0; n < s.N; ++n)
          for (int64_t o = 0; o < s.O; ++o)
            for (int64_t p = 0; p < P; ++p) {
              const float got = cl_out ? out[(n * P + p) * s.O + o] : out[(n * s.O + o) * P + p];
              if (got != expected[(n * s.O + o) * P + p]) return where + (cl_out ? " nhwc-out" : " nchw-out");
            }
      }
      bnn::PackedActivations bits;
      bnn::binary_conv2d_sign(packed, weights, s, {}, oph, opw, bits, pool);
      if (bits.data.size() != want_bits.size() || !std::equal(want_bits.begin(), want_bits.end(), bits.data.data()))
        return where + " sign-out";
    }
  }
  return "";
}

}  // namespace

int main() {
  std::printf("limits max_buffer_bytes=%lld max_geometry=%lld max_elements=%lld\n",
              static_cast<long long>(bnn::kMaxBufferBytes), static_cast<long long>(bnn::kMaxGeometry),
              static_cast<long long>(bnn::kMaxElements));
  std::fflush(stdout);
  bnn::ThreadPool pool(2);
  std::string line;
  for (uint64_t case_no = 0; std::getline(std::cin, line); ++case_no) {
    std::istringstream in(line);
    long long v[14];
    int got = 0;
    while (got < 14 && in >> v[got]) ++got;
    if (got != 14) {
      std::printf("error: expected 14 integers, got %d\n", got);
      std::fflush(stdout);
      continue;
    }
    bnn::ConvShape s;
    s.N = v[0], s.C = v[1], s.H = v[2], s.W = v[3], s.O = v[4], s.KH = v[5], s.KW = v[6];
    s.sh = v[7], s.sw = v[8], s.ph = v[9], s.pw = v[10], s.dh = v[11], s.dw = v[12];
    s.pad_value = static_cast<int>(std::clamp<long long>(v[13], INT_MIN, INT_MAX));  // out of int: still invalid
    try {
      s.validate();
    } catch (const std::invalid_argument& e) {
      std::printf("rejected %s\n", e.what());
      std::fflush(stdout);
      continue;
    }
    if (!small_enough(s)) {
      std::printf("valid\n");
    } else {
      const std::string bad = run_case(s, case_no, pool);
      if (bad.empty()) std::printf("ok\n");
      else std::printf("mismatch %s: %s\n", bad.c_str(), line.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}
