// Cancellation of running work: a token (a flag, and optionally a deadline) that the thread pool
// checks before each work item, so a pack or a convolution stops within one item of the token
// being cancelled or its deadline passing, and the call throws Cancelled in the calling thread.
//
// The token reaches the pool through the calling thread's "current token" (set_cancel_token /
// CancelScope) rather than through every signature: each job started from that thread picks it up.
#pragma once
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>

namespace bnn {

// Thrown by a call whose token was cancelled (or whose deadline passed) before it finished; the
// call's output is then incomplete and is not returned.
class Cancelled : public std::exception {
 public:
  const char* what() const noexcept override {
    return "cancelled: the call's cancel token was cancelled or its deadline passed";
  }
};

class CancelToken {
 public:
  using Clock = std::chrono::steady_clock;
  CancelToken() = default;
  // Cancelled once `timeout` has passed (a timeout <= 0: from the start).
  explicit CancelToken(Clock::duration timeout) : has_deadline_(true), deadline_(Clock::now() + timeout) {}
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  void cancel() noexcept { flag_.store(true, std::memory_order_relaxed); }
  // cancel() was called: one relaxed load.
  bool cancel_requested() const noexcept { return flag_.load(std::memory_order_relaxed); }
  // cancel() was called or the deadline passed (a clock read, ~30 ns on a VM, for a deadline).
  bool cancelled() const noexcept { return cancel_requested() || (has_deadline_ && Clock::now() >= deadline_); }
  bool has_deadline() const noexcept { return has_deadline_; }
  Clock::time_point deadline() const noexcept { return deadline_; }

 private:
  std::atomic<bool> flag_{false};
  const bool has_deadline_ = false;  // the deadline never changes, so threads read it without sync
  const Clock::time_point deadline_{};
};

// The calling thread's current token (null: none); ThreadPool::parallel_for reads it when a job
// starts. set_cancel_token returns the previous one.
CancelToken* current_cancel_token() noexcept;
std::shared_ptr<CancelToken> set_cancel_token(std::shared_ptr<CancelToken> token);

// Binds a token to the calling thread for a scope, then restores the previous one.
class CancelScope {
 public:
  explicit CancelScope(std::shared_ptr<CancelToken> token) : previous_(set_cancel_token(std::move(token))) {}
  ~CancelScope() { set_cancel_token(std::move(previous_)); }
  CancelScope(const CancelScope&) = delete;
  CancelScope& operator=(const CancelScope&) = delete;

 private:
  std::shared_ptr<CancelToken> previous_;
};

}  // namespace bnn
