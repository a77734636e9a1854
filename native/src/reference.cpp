// The reference convolution (reference.h), written for obviousness rather than speed.
#include "reference.h"

namespace bnn::reference {

namespace {

int sgn(float v) { return v >= 0.0f ? 1 : -1; }

}  // namespace

std::vector<float> conv2d(const float* x, const float* w, const ConvShape& s, const OutputTransform& t) {
  const int64_t OH = s.OH(), OW = s.OW();
  std::vector<float> out(static_cast<size_t>(s.N * s.O * OH * OW));
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t acc = 0;
          for (int64_t c = 0; c < s.C; ++c)
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t kw = 0; kw < s.KW; ++kw) {
                const int64_t ih = oh * s.sh - s.ph + kh * s.dh, iw = ow * s.sw - s.pw + kw * s.dw;
                const int xv = (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) ? s.pad_value
                                                                            : sgn(x[((n * s.C + c) * s.H + ih) * s.W + iw]);
                acc += xv * sgn(w[((o * s.C + c) * s.KH + kh) * s.KW + kw]);
              }
          out[((n * s.O + o) * OH + oh) * OW + ow] =
              static_cast<float>(acc) * (t.scale ? t.scale[o] : 1.0f) + (t.bias ? t.bias[o] : -0.0f);  // -0.0: x + -0.0 == x
        }
  return out;
}

std::vector<uint64_t> sign_bits(const std::vector<float>& y, const ConvShape& s, int64_t out_ph, int64_t out_pw) {
  const int64_t OH = s.OH(), OW = s.OW(), Hp = OH + 2 * out_ph, Wp = OW + 2 * out_pw, words = words_for(s.O);
  std::vector<uint64_t> bits(static_cast<size_t>(s.N * Hp * Wp * words), 0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.O; ++o)
      for (int64_t p = 0; p < OH * OW; ++p)
        if (!(y[(n * s.O + o) * OH * OW + p] >= 0.0f))
          bits[((n * Hp + p / OW + out_ph) * Wp + p % OW + out_pw) * words + o / 64] |= uint64_t{1} << (o % 64);
  return bits;
}

std::vector<float> nchw_to_nhwc(const float* x, int64_t N, int64_t C, int64_t P) {
  std::vector<float> out(static_cast<size_t>(N * C * P));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p) out[(n * P + p) * C + c] = x[(n * C + c) * P + p];
  return out;
}

std::vector<float> nhwc_to_nchw(const float* x, int64_t N, int64_t C, int64_t P) {
  std::vector<float> out(static_cast<size_t>(N * C * P));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) out[(n * C + c) * P + p] = x[(n * P + p) * C + c];
  return out;
}

}  // namespace bnn::reference
