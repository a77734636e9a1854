#include "thread_pool.h"

#include <chrono>
#include <stdexcept>

namespace bnn {

ThreadPool::ThreadPool(int num_threads) { start(num_threads); }
ThreadPool::~ThreadPool() { stop(); }

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(1);
  return pool;
}

void ThreadPool::set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
  std::lock_guard<std::mutex> call(call_mutex_);
  if (n == num_threads_) return;
  stop();
  start(n);
}

void ThreadPool::start(int n) {
  stopping_ = false;
  num_threads_ = n;
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

void ThreadPool::run_chunks() {
  for (int64_t i = next_.fetch_add(1); i < total_; i = next_.fetch_add(1)) (*fn_)(i);
}

void ThreadPool::worker_loop(uint64_t seen) {
  for (;;) {
    // Spin for a short while: the next layer usually follows within microseconds.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stopping_) return;
    }
    run_chunks();
    if (active_.fetch_sub(1) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  std::lock_guard<std::mutex> call(call_mutex_);
  if (workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = &fn;
    total_ = n;
    next_.store(0);
    active_.store(static_cast<int>(workers_.size()));
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  run_chunks();
  // Wait for workers to leave the job (they may still be finishing their last index).
  const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
  while (active_.load(std::memory_order_acquire) != 0 && std::chrono::steady_clock::now() < spin_until) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return active_.load() == 0; });
  fn_ = nullptr;
}

}  // namespace bnn
