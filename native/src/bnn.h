// Binary (1-bit) convolution: bit-packing and XNOR-popcount convolution over packed words.
// Plain C++17; no Python, no torch. Conventions (pinned by the tests):
//   sign(x) = +1 for x >= 0, -1 otherwise (NaN -> -1); a set bit means -1.
//   Packed activations are channels-last: [N][H + 2*ph][W + 2*pw][words], words = ceil(C / 64);
//   the spatial border is all-zero bits (= +1), channel tail bits are zero in activations and
//   weights alike, so they never count as mismatches.
#pragma once
#include <cstddef>
#include <cstdint>
#include <array>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnn {

constexpr int64_t kOutBlock = 16;  // output channels per weight block (two zmm / four ymm of u64)

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

inline int64_t words_for(int64_t channels) { return (channels + 63) / 64; }

// Bounds ConvShape::validate enforces, before anything is allocated: with them no size or index
// arithmetic overflows int64, and no single buffer the core or the binding allocates (packed
// input, packed or float output, packed weights, padding-correction table) exceeds
// kMaxBufferBytes. 4 GiB is ~1e9 float outputs in one call, far beyond any one layer of a served
// model; a request past it is a mistake or an attack (padding 11585 on a 1x1 input needs 4.3 GB).
constexpr int64_t kMaxElements = int64_t{1} << 40;     // any one dimension, and any element count
constexpr int64_t kMaxGeometry = int64_t{1} << 20;     // stride, dilation, padding
constexpr int64_t kMaxBufferBytes = int64_t{1} << 32;  // 4 GiB

struct ConvShape {
  int64_t N = 1, C = 1, H = 1, W = 1;  // input
  int64_t O = 1, KH = 1, KW = 1;       // weights
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int pad_value = 0;  // value of the padded border: -1, 0 or +1

  // floor((span - 1) / stride) + 1, and 0 when the dilated kernel does not fit (C++ division
  // truncates toward zero, so a negative numerator must not reach it).
  int64_t OH() const { return out_size(H + 2 * ph, dh * (KH - 1) + 1, sh); }
  int64_t OW() const { return out_size(W + 2 * pw, dw * (KW - 1) + 1, sw); }
  static int64_t out_size(int64_t padded, int64_t dilated_kernel, int64_t stride) {
    return padded < dilated_kernel ? 0 : (padded - dilated_kernel) / stride + 1;
  }
  // Throws std::invalid_argument naming the offending parameter, or the buffer that would be too
  // large with its size and the limit.
  void validate() const;
};

// Padding-correction tables for one conv geometry (see ConvJob in kernels.h).
struct CorrectionTable {
  std::array<int64_t, 10> key{};  // H, W, ph, pw, sh, sw, dh, dw, pad_value, OH
  std::vector<int32_t> row_class, col_class, table;
  int64_t nrc = 1, ncc = 1;
  int64_t col_inner_lo = 0, col_inner_hi = 0;  // columns in [lo, hi) all have class 0
};

// Weights binarised and laid out for the kernels: [ceil(O/16)][KH][KW][words][16] u64, so one
// vector load brings the same word of 16 consecutive output channels.
class PackedWeights {
 public:
  static PackedWeights from_float(const float* w, int64_t O, int64_t C, int64_t KH, int64_t KW);
  // canonical: [O][KH][KW][words] u64, bit (c % 64) of word (c / 64) set where w < 0.
  static PackedWeights from_canonical(const uint64_t* bits, int64_t O, int64_t C, int64_t KH, int64_t KW);
  void to_canonical(uint64_t* bits) const;

  int64_t O = 0, C = 0, KH = 0, KW = 0, words = 0;
  WordBuffer blocked;
  // The same words in pair form (the AVX2 and AVX-512 kernels read these): the reduction words pair
  // up as (i, i + 1) from i = K % 2 (K = KH * KW * words; an odd K leaves word 0 alone), and
  // word i + 1 holds w[i] ^ w[i + 1], so a kernel gets x2 = x1 ^ (a1 ^ a2) ^ w12 with one xor;
  // the 16 channels of a block are in the order 0,2,4,6, 1,3,5,7, 8,10,12,14, 9,11,13,15.
  WordBuffer pair_blocked;
  std::vector<int32_t> tap_sums;  // [O][KH*KW]: sum over c of sign(w), for the padding correction
  std::vector<int32_t> tap_sums_blocked;  // the same as [ceil(O/16)][KH*KW][16], zero past O

  // The correction table for this geometry, built on first use and cached (thread-safe).
  std::shared_ptr<const CorrectionTable> correction(const ConvShape& s) const;

 private:
  void finish();
  mutable std::shared_ptr<std::mutex> cache_mutex_ = std::make_shared<std::mutex>();
  mutable std::vector<std::shared_ptr<const CorrectionTable>> cache_;  // most recent last, at most 8
};

class PackedActivations {
 public:
  int64_t N = 0, C = 0, H = 0, W = 0, ph = 0, pw = 0, words = 0;
  int64_t Hp() const { return H + 2 * ph; }
  int64_t Wp() const { return W + 2 * pw; }
  WordBuffer data;
};

// Per-output-channel affine transform fused into the epilogue: y = acc * scale[o] + bias[o].
struct OutputTransform {
  const float* scale = nullptr;  // may be null: 1
  const float* bias = nullptr;   // may be null: 0
};

class ThreadPool;

// Each entry point below throws std::invalid_argument for a shape validate() refuses, and
// Cancelled (cancel.h) when the calling thread's token is cancelled while it runs; `out` is then
// left as it was (a float `out` buffer may be partly written).

// x is float32, NCHW contiguous (channels_last=false) or NHWC contiguous (channels_last=true).
void pack_activations(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last,
                      int64_t ph, int64_t pw, PackedActivations& out, ThreadPool& pool);

// out: float32 NCHW [N][O][OH][OW], or NHWC [N][OH][OW][O] with channels_last_out (then a
// pixel's 16 channels of a block are contiguous and the epilogue needs no transpose).
void binary_conv2d(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                   const OutputTransform& t, float* out, ThreadPool& pool, bool channels_last_out = false);

// The same convolution with a binarised output: `out` becomes the next layer's packed
// activations, [N][OH + 2*out_ph][OW + 2*out_pw][ceil(O / 64)] (border zero = +1), where bit o of
// a pixel is set exactly where the float output above would be negative or NaN, i.e.
// !(acc * scale[o] + bias[o] >= 0), computed with the same float operations. A binary layer
// that feeds another binary layer through sign() then never writes, reads or packs floats.
void binary_conv2d_sign(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, int64_t out_ph, int64_t out_pw, PackedActivations& out,
                        ThreadPool& pool);

// ---- runtime dispatch -------------------------------------------------------------------
enum class Isa { portable = 0, avx2 = 1, avx512 = 2 };
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument
bool isa_supported(Isa isa);                 // compiled in and supported by this CPU
std::vector<Isa> supported_isas();           // best first
Isa active_isa();
void set_active_isa(Isa isa);  // throws if unsupported

}  // namespace bnn
