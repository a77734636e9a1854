// The core's one buffer type, for packed weights and activations. It starts zeroed because the
// packed layouts rely on the zeros: border pixels read as +1, channel tail bits never mismatch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace bnn {

// 64-byte aligned, zero-initialised buffer of u64 words.
class WordBuffer {
 public:
  WordBuffer() = default;
  explicit WordBuffer(size_t n);
  uint64_t* data() { return ptr_.get(); }
  const uint64_t* data() const { return ptr_.get(); }
  size_t size() const { return n_; }

 private:
  struct Free { void operator()(uint64_t* p) const; };
  std::unique_ptr<uint64_t, Free> ptr_;
  size_t n_ = 0;
};

}  // namespace bnn
