// A pool that lives across calls: the calling thread works too, so n threads means n - 1
// workers. Workers spin briefly after a job (back-to-back layers are common), then sleep.
// One job runs at a time; concurrent callers queue on a mutex, so the thread count set is
// the number of threads the kernel ever uses.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bnn {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads = 1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  static ThreadPool& global();
  void set_num_threads(int n);  // throws std::invalid_argument for n < 1
  int num_threads() const { return num_threads_; }
  // Runs fn(i) for i in [0, n); returns when all are done.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  void start(int n);
  void stop();
  void worker_loop(uint64_t seen);
  void run_chunks();

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> active_{0};
  int64_t total_ = 0;
  const std::function<void(int64_t)>* fn_ = nullptr;
  bool stopping_ = false;
};

}  // namespace bnn
