// ThreadPool cancellation and errors, on 1, 2 and 3 threads: a token cancelled before or during a
// job, a deadline passed before or during it, an item's exception, and what a cancelled pack or
// convolution leaves behind (its output as it was; the pool still runs every item afterwards).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#if BNN_TEST_OPENMP
#include <omp.h>
#endif

#include "bnn.h"
#include "cancel.h"
#include "thread_pool.h"

namespace {

// (threads, backend): every test runs on the pool's own workers and on the OpenMP team (the test
// binary links the compiler's OpenMP runtime, as torch brings its own into the Python process).
using PoolParam = std::tuple<int, bnn::ThreadPool::Backend>;

class ThreadPoolTest : public ::testing::TestWithParam<PoolParam> {
 protected:
  void SetUp() override {
    if (std::get<1>(GetParam()) == bnn::ThreadPool::Backend::openmp) {
#if BNN_TEST_OPENMP
      ASSERT_TRUE(pool.set_backend(bnn::ThreadPool::Backend::openmp)) << "no GOMP_parallel in the test binary";
#else
      GTEST_SKIP() << "built without an OpenMP runtime to test the openmp backend with";
#endif
    }
  }
  int threads() const { return std::get<0>(GetParam()); }
  bnn::ThreadPool pool{std::get<0>(GetParam())};
  std::atomic<int64_t> ran{0};
};

std::shared_ptr<bnn::CancelToken> cancelled_token() {
  auto token = std::make_shared<bnn::CancelToken>();
  token->cancel();
  return token;
}

TEST_P(ThreadPoolTest, CancelSkipsTheItemsAfterIt) {
  auto token = std::make_shared<bnn::CancelToken>();
  bnn::CancelScope scope(token);
  EXPECT_THROW(pool.parallel_for(200000,
                                 [&](int64_t i) {
                                   ran.fetch_add(1);
                                   if (i == 10) token->cancel();
                                 }),
               bnn::Cancelled);
  // One thread runs nothing after item 10; more threads may have claimed a few more.
  if (threads() == 1)
    EXPECT_EQ(ran.load(), 11);
  else
    EXPECT_LT(ran.load(), 200000);
}

TEST_P(ThreadPoolTest, ACancelledTokenRunsNothing) {
  bnn::CancelScope scope(cancelled_token());
  EXPECT_THROW(pool.parallel_for(1000, [&](int64_t) { ran.fetch_add(1); }), bnn::Cancelled);
  EXPECT_EQ(ran.load(), 0);
}

TEST_P(ThreadPoolTest, APassedDeadlineRunsNothing) {
  bnn::CancelScope scope(std::make_shared<bnn::CancelToken>(std::chrono::seconds(0)));
  EXPECT_THROW(pool.parallel_for(1000, [&](int64_t) { ran.fetch_add(1); }), bnn::Cancelled);
  EXPECT_EQ(ran.load(), 0);
}

TEST_P(ThreadPoolTest, ADeadlineStopsTheJob) {
  bnn::CancelScope scope(std::make_shared<bnn::CancelToken>(std::chrono::milliseconds(5)));
  EXPECT_THROW(pool.parallel_for(100000,
                                 [&](int64_t) {
                                   ran.fetch_add(1);
                                   std::this_thread::sleep_for(std::chrono::microseconds(50));
                                 }),
               bnn::Cancelled);
  EXPECT_LT(ran.load(), 100000);
}

TEST_P(ThreadPoolTest, AnItemsExceptionReachesTheCaller) {
  EXPECT_THROW(pool.parallel_for(10000,
                                 [&](int64_t i) {
                                   if (i == 7000) throw std::runtime_error("item failed");
                                 }),
               std::runtime_error);
}

// 4 images of 70 channels, 30x30, packed with a one-pixel border: [4][32][32][2] words.
const std::vector<float> kImages(static_cast<size_t>(4 * 70 * 30 * 30), -1.0f);
constexpr size_t kPackedWords = 4 * 32 * 32 * 2;

TEST_P(ThreadPoolTest, ACancelledPackLeavesItsOutputAsItWas) {
  bnn::PackedActivations packed;
  {
    bnn::CancelScope scope(cancelled_token());
    EXPECT_THROW(bnn::pack_activations(kImages.data(), 4, 70, 30, 30, false, 1, 1, packed, pool), bnn::Cancelled);
  }
  EXPECT_EQ(packed.N, 0);
  EXPECT_EQ(packed.data.size(), 0u);
  // A packed output stays as it was too: same shape, same bits.
  bnn::pack_activations(kImages.data(), 4, 70, 30, 30, false, 1, 1, packed, pool);
  const uint64_t* before = packed.data.data();
  {
    bnn::CancelScope scope(cancelled_token());
    EXPECT_THROW(bnn::pack_activations(kImages.data(), 2, 70, 30, 30, true, 0, 0, packed, pool), bnn::Cancelled);
  }
  EXPECT_EQ(packed.N, 4);
  EXPECT_EQ(packed.data.data(), before);
  EXPECT_EQ(packed.data.size(), kPackedWords);
}

TEST_P(ThreadPoolTest, ACancelledSignConvLeavesItsOutputAsItWas) {
  bnn::PackedActivations packed, bits;
  bnn::pack_activations(kImages.data(), 4, 70, 30, 30, false, 1, 1, packed, pool);
  const std::vector<float> w(static_cast<size_t>(8 * 70 * 3 * 3), 1.0f);
  const auto weights = bnn::PackedWeights::from_float(w.data(), 8, 70, 3, 3);
  bnn::ConvShape s;
  s.N = 4, s.C = 70, s.H = 30, s.W = 30, s.O = 8, s.KH = 3, s.KW = 3, s.ph = 1, s.pw = 1;
  bnn::CancelScope scope(cancelled_token());
  EXPECT_THROW(bnn::binary_conv2d_sign(packed, weights, s, {}, 0, 0, bits, pool), bnn::Cancelled);
  EXPECT_EQ(bits.N, 0);
  EXPECT_EQ(bits.data.size(), 0u);
}

TEST_P(ThreadPoolTest, ThePoolRunsEveryItemAfterACancelledJob) {
  {
    bnn::CancelScope scope(cancelled_token());
    bnn::PackedActivations packed;
    EXPECT_THROW(bnn::pack_activations(kImages.data(), 4, 70, 30, 30, false, 1, 1, packed, pool), bnn::Cancelled);
  }
  pool.parallel_for(100000, [&](int64_t) { ran.fetch_add(1); });
  EXPECT_EQ(ran.load(), 100000);
}

TEST_P(ThreadPoolTest, ATokenBoundInAnotherThreadDoesNotReachThisOne) {
  std::thread other([] { bnn::CancelScope scope(cancelled_token()); });
  other.join();
  bnn::PackedActivations packed;
  bnn::pack_activations(kImages.data(), 4, 70, 30, 30, false, 1, 1, packed, pool);
  EXPECT_EQ(packed.N, 4);
  EXPECT_EQ(packed.data.size(), kPackedWords);
}

TEST_P(ThreadPoolTest, EveryItemRunsOnceFromConcurrentCallers) {
  std::vector<std::atomic<int>> hits(20000);
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] { pool.parallel_for(20000, [&](int64_t i) { hits[i].fetch_add(1); }); });
  for (auto& t : callers) t.join();
  for (const auto& h : hits) ASSERT_EQ(h.load(), 3);
}

TEST_P(ThreadPoolTest, SwitchingBackendKeepsTheThreadCount) {
  const auto other = pool.backend() == bnn::ThreadPool::Backend::own ? bnn::ThreadPool::Backend::openmp
                                                                     : bnn::ThreadPool::Backend::own;
  if (pool.set_backend(other)) {
    EXPECT_EQ(pool.backend(), other);
  }
  EXPECT_EQ(pool.num_threads(), threads());
  pool.parallel_for(5000, [&](int64_t) { ran.fetch_add(1); });
  EXPECT_EQ(ran.load(), 5000);
}

#if BNN_TEST_OPENMP
TEST(ThreadPoolOpenMP, TheJobRunsOnATeamOfTheThreadCount) {
  bnn::ThreadPool pool(3);
  ASSERT_TRUE(pool.set_backend(bnn::ThreadPool::Backend::openmp));
  std::atomic<int> team{0};
  pool.parallel_for(1000, [&](int64_t) { team.store(omp_get_num_threads()); });
  EXPECT_EQ(team.load(), 3);
  pool.set_num_threads(2);
  EXPECT_EQ(pool.backend(), bnn::ThreadPool::Backend::openmp);
  pool.parallel_for(1000, [&](int64_t) { team.store(omp_get_num_threads()); });
  EXPECT_EQ(team.load(), 2);
}
#endif

INSTANTIATE_TEST_SUITE_P(
    Threads, ThreadPoolTest,
    ::testing::Combine(::testing::Values(1, 2, 3),
                       ::testing::Values(bnn::ThreadPool::Backend::own, bnn::ThreadPool::Backend::openmp)),
    [](const ::testing::TestParamInfo<PoolParam>& info) {
      return "t" + std::to_string(std::get<0>(info.param)) +
             (std::get<1>(info.param) == bnn::ThreadPool::Backend::openmp ? "_openmp" : "_own");
    });

}  // namespace
