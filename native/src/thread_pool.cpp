#include "thread_pool.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>

namespace bnn {

namespace {
constexpr int64_t kMaxItems = int64_t{1} << 30;  // the item number fits the claim counter's low half

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Asked before each item whether the job must stop: the token's flag every time (one relaxed
// load); with a deadline, the clock only every `every_` items, sized from the items' own pace so
// that reads are ~10 us apart. A read costs ~30 ns on a VM: before each item it slowed 1x1 convs
// (items of ~0.4 us) by 2-5%. A deadline is then seen within max(one item, ~10 us).
class StopCheck {
 public:
  explicit StopCheck(const CancelToken& token) : token_(token) {}
  bool operator()() {
    if (token_.cancel_requested()) return true;
    if (!token_.has_deadline()) return false;
    if (since_ < every_) {
      ++since_;
      return false;
    }
    const auto now = CancelToken::Clock::now();
    if (now >= token_.deadline()) return true;
    if (since_ > 0) {
      const int64_t per_item = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count() / since_;
      every_ = per_item > 0 ? std::clamp<int64_t>(kClockPeriodNs / per_item, 1, kMaxEvery) : kMaxEvery;
    }
    last_ = now;
    since_ = 1;
    return false;
  }

 private:
  static constexpr int64_t kClockPeriodNs = 10000, kMaxEvery = 64;
  const CancelToken& token_;
  CancelToken::Clock::time_point last_{};
  int64_t every_ = 0, since_ = 0;  // items started since the last clock read
};
}  // namespace

// libgomp's entry point for `#pragma omp parallel` (LLVM's libomp exports it too): runs
// fn(data) on a team of num_threads threads, the caller being one of them, and returns when all
// have finished. Looked up, not linked: whichever runtime torch loaded is the one shared.
static ThreadPool::OmpParallel find_omp_parallel() {
  return reinterpret_cast<ThreadPool::OmpParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
}

bool ThreadPool::openmp_loaded() { return find_omp_parallel() != nullptr; }

ThreadPool::ThreadPool(int num_threads) { start(num_threads); }
ThreadPool::~ThreadPool() { stop(); }

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(1);
  return pool;
}

void ThreadPool::set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  std::lock_guard<std::timed_mutex> call(call_mutex_);
  if (n == num_threads_) return;
  stop();
  start(n);
}

bool ThreadPool::set_backend(Backend b) {
  std::lock_guard<std::timed_mutex> call(call_mutex_);
  const OmpParallel parallel = b == Backend::openmp ? find_omp_parallel() : nullptr;
  if (b == Backend::openmp && !parallel) return false;
  if (parallel == omp_parallel_) return true;
  stop();
  omp_parallel_ = parallel;
  start(num_threads_);
  return true;
}

void ThreadPool::start(int n) {
  stopping_ = false;
  num_threads_ = n;
  if (omp_parallel_) return;  // the OpenMP runtime's team does the work
  const uint64_t gen = generation_.load();  // workers start from this generation, never a later one
  for (int i = 1; i < n; ++i) workers_.emplace_back([this, gen] { worker_loop(gen); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::run_items(const Job& job) {
  const uint64_t tag = static_cast<uint64_t>(job.id) << 32;
  uint64_t v = claim_.load(std::memory_order_acquire);
  bool stopping = false;  // the job's token was cancelled (or fn threw): skip what is left
  for (;;) {
    // Claim only items of this job: a stale or finished job's counter never matches.
    if ((v & ~uint64_t{0xffffffff}) != tag || static_cast<int64_t>(v & 0xffffffff) >= job.items) return;
    // Guided claiming: a run of 1 / (2 * threads) of what is left, so a job costs a few dozen
    // claims on the shared counter instead of one per item (an item can be well under a
    // microsecond, a contended claim ~0.1 us), each thread writes a contiguous range, and the
    // runs shrink towards the end so the threads still finish together. Once stopping, claim
    // all that is left, so no thread starts another run.
    const int64_t k = static_cast<int64_t>(v & 0xffffffff);
    const int64_t take = stopping ? job.items - k : std::max<int64_t>(1, (job.items - k) / (2 * job.threads));
    if (!claim_.compare_exchange_weak(v, v + static_cast<uint64_t>(take), std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      continue;
    // The claimed items keep the caller waiting, so from here on its token is alive (not before
    // the claim: the job of a stale snapshot may have ended).
    if (!stopping) stopping = !run_range(job, k * job.per, std::min(job.n, (k + take) * job.per));
    if (stopping) skipped_.store(true, std::memory_order_relaxed);  // published by the add below
    done_.fetch_add(take, std::memory_order_acq_rel);
    v = claim_.load(std::memory_order_acquire);
  }
}

bool ThreadPool::run_range(const Job& job, int64_t begin, int64_t end) noexcept {
  int64_t i = begin;
  try {
    if (job.cancel) {
      StopCheck stop(*job.cancel);
      for (; i < end && !stop(); ++i) (*job.fn)(i);
    } else {
      for (; i < end; ++i) (*job.fn)(i);
    }
    return i == end;
  } catch (...) {  // kept for the caller: an exception must not leave a worker thread
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
    return false;
  }
}

void ThreadPool::worker_loop(uint64_t seen) {
  for (;;) {
    // Stay awake for a short while: the next layer usually follows within microseconds. Yield
    // rather than spin: inside a model the next op is often torch's, whose OpenMP threads need
    // this core (a busy spin made Bi-Real-Net-18 on 2 threads ~12% slower, bench/RESULTS_MODELS.md).
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
      std::this_thread::yield();
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stopping_) return;
      job = job_;  // a consistent snapshot; items are claimed only while this job is current
    }
    if (job.fn) run_items(job);
  }
}

void ThreadPool::run_team(const Job& job) {
  struct Team {
    ThreadPool* pool;
    const Job* job;
  } team{this, &job};
  // run_items never throws (run_range keeps an item's exception for the caller), so nothing
  // unwinds through the OpenMP runtime's frames.
  omp_parallel_([](void* p) {
    auto* t = static_cast<Team*>(p);
    t->pool->run_items(*t->job);
  }, &team, static_cast<unsigned>(job.threads), 0);
}

void ThreadPool::lock_call(std::unique_lock<std::timed_mutex>& call, const CancelToken* token) {
  if (!token) {
    call.lock();
    return;
  }
  // Queued behind another caller's job: give up as soon as this call's token is cancelled.
  while (!call.try_lock_for(std::chrono::milliseconds(1)))
    if (token->cancelled()) throw Cancelled();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  const CancelToken* token = current_cancel_token();
  if (token && token->cancelled()) throw Cancelled();
  std::unique_lock<std::timed_mutex> call(call_mutex_, std::defer_lock);
  lock_call(call, token);
  if (num_threads_ == 1 || n == 1) {
    if (!token) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    StopCheck stop(*token);
    for (int64_t i = 0; i < n; ++i) {
      if (stop()) throw Cancelled();
      fn(i);
    }
    return;
  }
  Job job;
  job.fn = &fn;
  job.n = n;
  job.per = (n + kMaxItems - 1) / kMaxItems;
  job.items = (n + job.per - 1) / job.per;
  job.threads = num_threads_;
  job.cancel = token;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job.id = ++next_id_;
    job_ = job;
    done_.store(0, std::memory_order_relaxed);
    skipped_.store(false, std::memory_order_relaxed);
    error_ = nullptr;
    claim_.store(static_cast<uint64_t>(job.id) << 32, std::memory_order_release);
    if (!omp_parallel_) generation_.fetch_add(1, std::memory_order_release);
  }
  if (omp_parallel_) {
    run_team(job);  // returns once every team thread has left the job: all items done or skipped
  } else {
    wake_.notify_all();
    run_items(job);
    // Wait for the items the workers claimed (not for the workers themselves).
    for (int spins = 0; done_.load(std::memory_order_acquire) < job.items; ++spins) {
      if (spins < 4096) cpu_relax();
      else std::this_thread::yield();
    }
  }
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_.fn = nullptr;  // a worker waking now finds no job
    job_.cancel = nullptr;
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
  if (skipped_.load(std::memory_order_relaxed)) throw Cancelled();
}

}  // namespace bnn
