// ConvShape::validate and the argument checks behind it (checks.h).
#include <algorithm>
#include <stdexcept>

#include "checks.h"
#include "geometry.h"

namespace bnn {

void invalid(const std::string& what) { throw std::invalid_argument(what); }

void require_positive(const char* name, int64_t v) {
  if (v < 1) invalid(std::string(name) + " must be >= 1, got " + std::to_string(v));
  if (v > kMaxElements) invalid(std::string(name) + " is too large: " + std::to_string(v));
}

void require_geometry(const char* name, int64_t v, int64_t minimum) {
  if (v < minimum) invalid(std::string(name) + " must be >= " + std::to_string(minimum) + ", got " + std::to_string(v));
  if (v > kMaxGeometry)
    invalid(std::string(name) + " must be <= " + std::to_string(kMaxGeometry) + ", got " + std::to_string(v));
}

int64_t checked_product(std::initializer_list<int64_t> dims, const char* what) {
  int64_t p = 1;
  for (int64_t d : dims) {
    if (d != 0 && p > kMaxElements / d) invalid(std::string(what) + " is too large (more than 2^40 elements)");
    p *= d;
  }
  return p;
}

void check_buffer(const char* what, std::initializer_list<int64_t> dims, int64_t elem_bytes) {
  int64_t bytes = elem_bytes;
  bool overflow = false;
  for (int64_t d : dims) overflow = overflow || __builtin_mul_overflow(bytes, d, &bytes);
  if (overflow || bytes > kMaxBufferBytes)
    invalid(std::string(what) + " would need " + (overflow ? std::string("more than 2^63") : std::to_string(bytes)) +
            " bytes, over the limit of " + std::to_string(kMaxBufferBytes) + " bytes (4 GiB) per buffer");
}

void ConvShape::validate() const {
  require_positive("batch size", N);
  require_positive("in_channels", C);
  require_positive("input height", H);
  require_positive("input width", W);
  require_positive("out_channels", O);
  require_positive("kernel height", KH);
  require_positive("kernel width", KW);
  require_geometry("stride height", sh, 1);
  require_geometry("stride width", sw, 1);
  require_geometry("dilation height", dh, 1);
  require_geometry("dilation width", dw, 1);
  if (ph < 0 || pw < 0) invalid("padding must be >= 0, got (" + std::to_string(ph) + ", " + std::to_string(pw) + ")");
  if (ph > kMaxGeometry || pw > kMaxGeometry)
    invalid("padding must be <= " + std::to_string(kMaxGeometry) + ", got (" + std::to_string(ph) + ", " +
            std::to_string(pw) + ")");
  if (pad_value < -1 || pad_value > 1) invalid("pad_value must be -1, 0 or 1, got " + std::to_string(pad_value));
  checked_product({N, C, H, W}, "input");
  checked_product({O, C, KH, KW}, "weight");
  const int64_t k_total = checked_product({C, KH, KW}, "reduction (in_channels x kernel area)");
  // Results are integers in [-k_total, k_total]; float32 holds them exactly up to 2^24.
  if (k_total > (int64_t{1} << 24))
    invalid("in_channels x kernel area = " + std::to_string(k_total) + " exceeds 2^24, the exact range of float32");
  // From here every dimension is <= 2^40, every kernel side and k_total <= 2^24 and the geometry
  // <= 2^20, so the sizes below cannot overflow.
  if (OH() < 1 || OW() < 1)
    invalid("output size would be " + std::to_string(OH()) + "x" + std::to_string(OW()) +
            ": the dilated kernel (" + std::to_string(dh * (KH - 1) + 1) + "x" + std::to_string(dw * (KW - 1) + 1) +
            ") is larger than the padded input (" + std::to_string(H + 2 * ph) + "x" + std::to_string(W + 2 * pw) + ")");
  checked_product({N, O, OH(), OW()}, "output");
  check_buffer("padded packed input", {N, H + 2 * ph, W + 2 * pw, words_for(C)}, sizeof(uint64_t));
  check_buffer("float32 output", {N, O, OH(), OW()}, sizeof(float));
  check_buffer("packed weights", {out_blocks(O) * kOutBlock, KH, KW, words_for(C)}, sizeof(uint64_t));
  if (pad_value != 1 && (ph > 0 || pw > 0)) {
    // At most 2k + 1 border classes along an axis (see PackedWeights::correction).
    const int64_t nrc = std::min(OH(), 2 * KH + 1), ncc = std::min(OW(), 2 * KW + 1);
    check_buffer("padding-correction table", {out_blocks(O) * kOutBlock, nrc, ncc}, sizeof(int32_t));
  }
}

}  // namespace bnn
