// Self-test of the core without Python: every supported instruction set against a naive
// reference, over random geometry. Built and run under AddressSanitizer + UBSan by
// tests/native/test_sanitizers.py. Usage: bnn_selftest [cases] [seed]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "bnn.h"
#include "cancel.h"
#include "thread_pool.h"

namespace {

int sgn(float v) { return v >= 0.0f ? 1 : -1; }

std::vector<float> reference(const std::vector<float>& x, const std::vector<float>& w, const bnn::ConvShape& s) {
  const int64_t OH = s.OH(), OW = s.OW();
  std::vector<float> out(static_cast<size_t>(s.N * s.O * OH * OW));
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t acc = 0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t kw = 0; kw < s.KW; ++kw) {
                const int64_t ih = oh * s.sh - s.ph + kh * s.dh, iw = ow * s.sw - s.pw + kw * s.dw;
                const int xv = (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W)
                                   ? s.pad_value
                                   : sgn(x[((n * s.C + c) * s.H + ih) * s.W + iw]);
                acc += xv * sgn(w[((o * s.C + c) * s.KH + kh) * s.KW + kw]);
              }
          out[((n * s.O + o) * OH + oh) * OW + ow] = static_cast<float>(acc);
        }
  return out;
}

// Cancellation and exceptions in the thread pool, on 1 and 2 threads. Returns the failed checks;
// `checks` counts them all.
int cancellation_failures(int& checks) {
  int failed = 0;
  auto check = [&](bool ok, const char* what, int threads) {
    ++checks;
    if (!ok) ++failed, std::printf("CANCEL FAILED (%d threads): %s\n", threads, what);
  };
  for (int threads : {1, 2}) {
    bnn::ThreadPool pool(threads);
    {  // cancelled by item 10: nothing after it runs on one thread, little on two
      auto token = std::make_shared<bnn::CancelToken>();
      bnn::CancelScope scope(token);
      std::atomic<int64_t> ran{0};
      bool threw = false;
      try {
        pool.parallel_for(200000, [&](int64_t i) {
          ran.fetch_add(1);
          if (i == 10) token->cancel();
        });
      } catch (const bnn::Cancelled&) {
        threw = true;
      }
      check(threw, "a cancelled job throws Cancelled", threads);
      check(threads == 1 ? ran.load() == 11 : ran.load() < 200000, "items after the cancel are skipped", threads);
    }
    {  // already cancelled, or a deadline already passed: nothing runs
      for (auto token : {std::make_shared<bnn::CancelToken>(), std::make_shared<bnn::CancelToken>(std::chrono::seconds(0))}) {
        if (!token->has_deadline()) token->cancel();
        bnn::CancelScope scope(token);
        std::atomic<int64_t> ran{0};
        bool threw = false;
        try {
          pool.parallel_for(1000, [&](int64_t) { ran.fetch_add(1); });
        } catch (const bnn::Cancelled&) {
          threw = true;
        }
        check(threw && ran.load() == 0, "a token cancelled before the job runs nothing", threads);
      }
    }
    {  // a deadline passing mid-job
      auto token = std::make_shared<bnn::CancelToken>(std::chrono::milliseconds(5));
      bnn::CancelScope scope(token);
      std::atomic<int64_t> ran{0};
      bool threw = false;
      try {
        pool.parallel_for(100000, [&](int64_t) {
          ran.fetch_add(1);
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        });
      } catch (const bnn::Cancelled&) {
        threw = true;
      }
      check(threw && ran.load() < 100000, "a deadline stops the job", threads);
    }
    {  // an exception thrown in any thread reaches the caller, never std::terminate
      bool caught = false;
      try {
        pool.parallel_for(10000, [&](int64_t i) {
          if (i == 7000) throw std::runtime_error("item failed");
        });
      } catch (const std::runtime_error&) {
        caught = true;
      }
      check(caught, "an item's exception is rethrown in the caller", threads);
    }
    {  // a cancelled pack leaves its output as it was; the pool still runs every item afterwards
      std::vector<float> x(static_cast<size_t>(4 * 70 * 30 * 30), -1.0f);
      bnn::PackedActivations packed;
      {
        auto token = std::make_shared<bnn::CancelToken>();
        token->cancel();
        bnn::CancelScope scope(token);
        bool threw = false;
        try {
          bnn::pack_activations(x.data(), 4, 70, 30, 30, false, 1, 1, packed, pool);
        } catch (const bnn::Cancelled&) {
          threw = true;
        }
        check(threw && packed.N == 0 && packed.data.size() == 0, "a cancelled pack leaves its output empty", threads);
      }
      std::atomic<int64_t> ran{0};
      pool.parallel_for(100000, [&](int64_t) { ran.fetch_add(1); });
      check(ran.load() == 100000, "the pool runs every item after a cancelled job", threads);
      // A token bound to another thread does not reach this one.
      std::thread other([&] {
        auto token = std::make_shared<bnn::CancelToken>();
        token->cancel();
        bnn::CancelScope scope(token);
      });
      other.join();
      bnn::pack_activations(x.data(), 4, 70, 30, 30, false, 1, 1, packed, pool);
      check(packed.N == 4 && packed.data.size() == static_cast<size_t>(4 * 32 * 32 * 2), "packing works afterwards",
            threads);
    }
  }
  return failed;
}

}  // namespace

int main(int argc, char** argv) {
  const int cases = argc > 1 ? std::atoi(argv[1]) : 200;
  std::mt19937_64 rng(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1234);
  auto uni = [&](int lo, int hi) { return static_cast<int64_t>(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  std::normal_distribution<float> normal;
  bnn::ThreadPool pool(2);
  int failures = 0, run = 0;
  for (int i = 0; i < cases; ++i) {
    bnn::ConvShape s;
    s.N = uni(1, 2), s.C = uni(1, 140), s.O = uni(1, 37), s.KH = uni(1, 4), s.KW = uni(1, 4);
    s.sh = uni(1, 3), s.sw = uni(1, 3), s.dh = uni(1, 2), s.dw = uni(1, 2), s.ph = uni(0, 2), s.pw = uni(0, 2);
    s.H = uni(1, 9), s.W = uni(1, 9), s.pad_value = static_cast<int>(uni(-1, 1));
    if (s.OH() < 1 || s.OW() < 1) continue;
    std::vector<float> x(static_cast<size_t>(s.N * s.C * s.H * s.W)), w(static_cast<size_t>(s.O * s.C * s.KH * s.KW));
    for (auto& v : x) v = normal(rng);
    for (auto& v : w) v = normal(rng);
    if (i % 7 == 0) x[0] = NAN, w[0] = -0.0f;
    const auto expected = reference(x, w, s);
    const auto weights = bnn::PackedWeights::from_float(w.data(), s.O, s.C, s.KH, s.KW);
    if (std::getenv("BNN_SELFTEST_VERBOSE"))
      std::printf("case N=%ld C=%ld H=%ld W=%ld O=%ld K=%ldx%ld s=%ldx%ld p=%ldx%ld d=%ldx%ld pv=%d\n", s.N, s.C, s.H, s.W,
                  s.O, s.KH, s.KW, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw, s.pad_value), std::fflush(stdout);
    for (bnn::Isa isa : bnn::supported_isas()) {
      bnn::set_active_isa(isa);
      for (bool channels_last : {false, true}) {
        std::vector<float> xin = x;
        if (channels_last)
          for (int64_t n = 0; n < s.N; ++n)
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t p = 0; p < s.H * s.W; ++p) xin[(n * s.H * s.W + p) * s.C + c] = x[(n * s.C + c) * s.H * s.W + p];
        bnn::PackedActivations packed;
        bnn::pack_activations(xin.data(), s.N, s.C, s.H, s.W, channels_last, s.ph, s.pw, packed, pool);
        for (bool cl_out : {false, true}) {
          std::vector<float> out(expected.size());
          bnn::binary_conv2d(packed, weights, s, {}, out.data(), pool, cl_out);
          if (cl_out) {  // NHWC -> NCHW for the comparison
            std::vector<float> nchw(out.size());
            const int64_t P = s.OH() * s.OW();
            for (int64_t n = 0; n < s.N; ++n)
              for (int64_t p = 0; p < P; ++p)
                for (int64_t o = 0; o < s.O; ++o) nchw[(n * s.O + o) * P + p] = out[(n * P + p) * s.O + o];
            out.swap(nchw);
          }
          ++run;
          if (out != expected) {
            ++failures;
            std::printf("MISMATCH isa=%s cl=%d cl_out=%d N=%ld C=%ld H=%ld W=%ld O=%ld K=%ldx%ld s=%ldx%ld p=%ldx%ld d=%ldx%ld pv=%d\n",
                        bnn::isa_name(isa), channels_last, cl_out, s.N, s.C, s.H, s.W, s.O, s.KH, s.KW, s.sh, s.sw, s.ph,
                        s.pw, s.dh, s.dw, s.pad_value);
          }
        }
        // Binarised output with a border: bit o of each interior pixel is sign(expected) < 0,
        // everything else (border, channel tail) zero.
        const int64_t oph = i % 3, opw = (i / 3) % 2;
        bnn::PackedActivations bits;
        bnn::binary_conv2d_sign(packed, weights, s, {}, oph, opw, bits, pool);
        const int64_t OH = s.OH(), OW = s.OW(), words = bnn::words_for(s.O);
        std::vector<uint64_t> want(static_cast<size_t>(s.N * (OH + 2 * oph) * (OW + 2 * opw) * words), 0);
        for (int64_t n = 0; n < s.N; ++n)
          for (int64_t o = 0; o < s.O; ++o)
            for (int64_t p = 0; p < OH * OW; ++p)
              if (expected[(n * s.O + o) * OH * OW + p] < 0)
                want[((n * (OH + 2 * oph) + p / OW + oph) * (OW + 2 * opw) + p % OW + opw) * words + o / 64] |=
                    uint64_t{1} << (o % 64);
        ++run;
        if (bits.data.size() != want.size() || !std::equal(want.begin(), want.end(), bits.data.data())) {
          ++failures;
          std::printf("MISMATCH (sign output) isa=%s cl=%d N=%ld C=%ld H=%ld W=%ld O=%ld\n", bnn::isa_name(isa),
                      channels_last, s.N, s.C, s.H, s.W, s.O);
        }
      }
    }
  }
  // Invalid shapes must throw, never crash.
  int rejected = 0;
  for (auto mutate : std::vector<void (*)(bnn::ConvShape&)>{
           [](bnn::ConvShape& s) { s.C = 0; }, [](bnn::ConvShape& s) { s.sh = 0; },
           [](bnn::ConvShape& s) { s.KH = 50; }, [](bnn::ConvShape& s) { s.ph = -1; },
           [](bnn::ConvShape& s) { s.pad_value = 3; }, [](bnn::ConvShape& s) { s.N = int64_t{1} << 62; },
           [](bnn::ConvShape& s) { s.dh = int64_t{1} << 40; },
           // (1 + 2 - 4) / 3 truncates to 0 in C++: the output size must still come out as 0.
           [](bnn::ConvShape& s) { s.H = 1, s.ph = 1, s.KH = 4, s.sh = 3; }}) {
    bnn::ConvShape s;
    s.C = 3, s.H = 5, s.W = 5, s.KH = 3, s.KW = 3;
    mutate(s);
    try {
      s.validate();
    } catch (const std::invalid_argument&) {
      ++rejected;
    }
  }
  int cancel_checks = 0;
  const int cancel_failed = cancellation_failures(cancel_checks);
  std::printf("%d passed, %d failed\n", run - failures + rejected + cancel_checks - cancel_failed,
              failures + (8 - rejected) + cancel_failed);
  return failures == 0 && rejected == 8 && cancel_failed == 0 ? 0 : 1;
}
