// WordBuffer: aligned_alloc + memset, released with free.
#include <cstdlib>
#include <cstring>
#include <new>

#include "buffer.h"

namespace bnn {

WordBuffer::WordBuffer(size_t n) : n_(n) {
  if (n == 0) return;
  const size_t bytes = ((n * sizeof(uint64_t) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  ptr_.reset(static_cast<uint64_t*>(p));
}
void WordBuffer::Free::operator()(uint64_t* p) const { std::free(p); }

}  // namespace bnn
