// The argument checks the entry points share (internal). Each throws std::invalid_argument with a
// message naming the value, so a refused call says what to change.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

namespace bnn {

[[noreturn]] void invalid(const std::string& what);

// 1 <= v <= kMaxElements: a dimension (batch, channels, height, width, kernel side).
void require_positive(const char* name, int64_t v);
// minimum <= v <= kMaxGeometry: a stride, dilation or padding.
void require_geometry(const char* name, int64_t v, int64_t minimum);
// The product of dims (each >= 0), refused above kMaxElements.
int64_t checked_product(std::initializer_list<int64_t> dims, const char* what);
// Refuses a buffer of prod(dims) elements of elem_bytes each above kMaxBufferBytes (dims >= 0).
void check_buffer(const char* what, std::initializer_list<int64_t> dims, int64_t elem_bytes);

}  // namespace bnn
