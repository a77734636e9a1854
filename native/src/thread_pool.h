// A pool that lives across calls: the calling thread works too, so n threads means n - 1
// workers. Workers spin briefly after a job (back-to-back layers are common), then sleep.
// One job runs at a time; concurrent callers queue on a mutex, so the thread count set is
// the number of threads the kernel ever uses.
//
// Items are claimed in shrinking runs from a counter tagged with the job's number, and the caller
// waits for the items to be done, not for the workers: a worker that wakes late (a busy
// machine) finds nothing left and never touches a finished job, so the caller never waits for
// a thread that is not running one of its items.
//
// Cancellation: a job takes the calling thread's current CancelToken (cancel.h) and every thread
// checks it before each item; skipped items still count as done, so the caller's wait ends
// within one item of cancel() (of a deadline: one item or ~10 us, whichever is longer), and
// parallel_for then throws Cancelled. Exceptions never cross a thread: one thrown by fn in a
// worker is caught there and rethrown in the caller.
//
// Backends. `own`: the pool's own n - 1 worker threads. `openmp`: the threads of the OpenMP
// runtime already loaded in the process (torch's libgomp, found with dlsym; the core links no
// OpenMP itself). Inside a model, torch's ops run on that runtime's team between convolutions: with
// its own workers the kernel's threads and torch's alternate on the same cores, each set waking
// the other's cores up or competing for them; sharing one team means the same hot threads run
// every op of the forward pass. The items, their claiming, cancellation and errors are the same
// in both; with openmp the caller waits at the team's barrier (GOMP_parallel returns when every
// team thread has left the job), and one job still runs at a time.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "cancel.h"

namespace bnn {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads = 1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  enum class Backend { own, openmp };
  using OmpParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);  // GOMP_parallel

  static ThreadPool& global();
  void set_num_threads(int n);  // throws std::invalid_argument for n < 1
  int num_threads() const { return num_threads_; }
  // Switches backend; openmp needs an OpenMP runtime in the process (returns false and keeps the
  // current backend when there is none).
  bool set_backend(Backend b);
  Backend backend() const { return omp_parallel_ ? Backend::openmp : Backend::own; }
  // Whether an OpenMP runtime (its GOMP_parallel entry point) is loaded in the process now.
  static bool openmp_loaded();
  // Runs fn(i) for i in [0, n); returns when all are done. Throws Cancelled if the calling
  // thread's token is cancelled before or while it runs (some fn(i) then never ran), or the
  // first exception fn threw (the other items still ran or were skipped, none is left running).
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  struct Job {
    const std::function<void(int64_t)>* fn = nullptr;
    int64_t n = 0, per = 1, items = 0;  // item k runs indices [k * per, min(n, (k + 1) * per))
    int64_t threads = 1;
    uint32_t id = 0;
    const CancelToken* cancel = nullptr;  // the caller's; alive while it waits for the items
  };
  void start(int n);
  void stop();
  void worker_loop(uint64_t seen);
  void run_items(const Job& job);
  bool run_range(const Job& job, int64_t begin, int64_t end) noexcept;
  void lock_call(std::unique_lock<std::timed_mutex>& call, const CancelToken* token);
  void run_team(const Job& job);

  OmpParallel omp_parallel_ = nullptr;  // set: the openmp backend (no own workers)

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::timed_mutex call_mutex_;  // one job at a time; a caller with a token waits cancellably
  std::mutex mutex_;             // guards job_, error_ and stopping_
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};  // bumped to wake the workers (new job or stop)
  std::atomic<uint64_t> claim_{0};       // (job id << 32) | next item
  std::atomic<int64_t> done_{0};         // items finished (or skipped) in the current job
  std::atomic<bool> skipped_{false};     // some item of the current job was skipped
  std::exception_ptr error_;             // the first exception fn threw in the current job (mutex_)
  Job job_;
  uint32_t next_id_ = 0;
  bool stopping_ = false;
};

}  // namespace bnn
