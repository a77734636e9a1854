// The micro-kernel interface: what each kernels_<isa>.cpp defines, inside its own namespace,
// before it includes conv_driver.inc. conv_driver.inc includes this file first, so it lands in
// that namespace and the checks below see that instruction set's definitions. No #pragma once and
// no std headers here (they come from kernels.h): the file is included inside a namespace.
//
//   constexpr int kMaxPx;                       // output pixels per register tile
//   template <int PX> void micro_tile(const uint64_t* in, int64_t pix_stride,
//       const int64_t* offs, int64_t K, const uint64_t* wblk, int32_t k_total, int32_t* val);
//   // val[p * 16 + j] = k_total - 2 * popcount of (input xor weight) over the K reduction
//   // words (word i of pixel p at in[p * pix_stride + offs[i]], weights of 16 channels at
//   // wblk[i * 16 .. i * 16 + 15]), for pixel p < PX and channel j < 16
//   void store_block(const int32_t* val /*[np][16]*/, int np, int nO, const float* scale,
//       const float* bias, float* dst, int64_t plane);
//   // dst[j * plane + p] = float(val[p * 16 + j]) * scale[j] + bias[j] (null: 1 / 0), j < nO
//   void store_block_nhwc(const int32_t* val, int np, int nO, const float* scale,
//       const float* bias, float* dst, int64_t pixel_stride);
//   // dst[p * pixel_stride + j] = the same value (channels-last output: no transpose)
//   void store_block_sign(const int32_t* val, int np, int nO, const float* scale,
//       const float* bias, uint16_t* dst, int64_t pixel_stride);
//   // bit j of dst[p * pixel_stride] = !(the same value >= 0) for j < nO, 0 for j >= nO
//   uint64_t sign_mask64(const float* p, int64_t n);
//   void add16(int32_t* v, const int32_t* c);  // v[0..15] += c[0..15], as one vector where possible
//
// In return conv_driver.inc defines conv_row (KernelTable::conv_row, kernels.h) and the scalar
// epilogues store_block_scalar, store_block_nhwc_scalar and store_block_sign_scalar, which a path
// may forward-declare and call. The checks hold each definition to exactly the signature above
// (a definition that merely converted would compile and could go unnoticed); they emit no code.

static_assert(kMaxPx >= 1 && kMaxPx <= 64, "kMaxPx: 1 to 64 pixels per tile (an epilogue chunk is at most 64)");
static_assert(std::is_same_v<decltype(&micro_tile<1>), void (*)(const uint64_t*, int64_t, const int64_t*, int64_t,
                                                                 const uint64_t*, int32_t, int32_t*)>,
              "micro_tile<PX> has the signature above");
static_assert(std::is_same_v<decltype(&store_block),
                             void (*)(const int32_t*, int, int, const float*, const float*, float*, int64_t)>,
              "store_block has the signature above");
static_assert(std::is_same_v<decltype(&store_block_nhwc),
                             void (*)(const int32_t*, int, int, const float*, const float*, float*, int64_t)>,
              "store_block_nhwc has the signature above");
static_assert(std::is_same_v<decltype(&store_block_sign),
                             void (*)(const int32_t*, int, int, const float*, const float*, uint16_t*, int64_t)>,
              "store_block_sign has the signature above");
static_assert(std::is_same_v<decltype(&sign_mask64), uint64_t (*)(const float*, int64_t)>,
              "sign_mask64 has the signature above");
static_assert(std::is_same_v<decltype(&add16), void (*)(int32_t*, const int32_t*)>, "add16 has the signature above");
