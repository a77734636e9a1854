// Shape validation, weight and activation packing, and the parallel convolution driver.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>

#include "kernels.h"
#include "thread_pool.h"

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

namespace {

[[noreturn]] void invalid(const std::string& what) { throw std::invalid_argument(what); }

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

// Refuses a buffer of prod(dims) elements of elem_bytes each above kMaxBufferBytes (dims >= 0).
void check_buffer(const char* what, std::initializer_list<int64_t> dims, int64_t elem_bytes) {
  int64_t bytes = elem_bytes;
  bool overflow = false;
  for (int64_t d : dims) overflow = overflow || __builtin_mul_overflow(bytes, d, &bytes);
  if (overflow || bytes > kMaxBufferBytes)
    invalid(std::string(what) + " would need " + (overflow ? std::string("more than 2^63") : std::to_string(bytes)) +
            " bytes, over the limit of " + std::to_string(kMaxBufferBytes) + " bytes (4 GiB) per buffer");
}

int64_t out_blocks(int64_t O) { return (O + kOutBlock - 1) / kOutBlock; }

// Transposes a 64x64 bit matrix in place: afterwards bit c of a[p] is the old bit p of a[c].
void transpose64(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= (m << j)) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  }
}

}  // namespace

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

// ---- weights ------------------------------------------------------------------------------

PackedWeights PackedWeights::from_float(const float* w, int64_t O, int64_t C, int64_t KH, int64_t KW) {
  ConvShape s;
  s.C = C, s.O = O, s.KH = KH, s.KW = KW, s.H = KH, s.W = KW;
  s.validate();
  const int64_t words = words_for(C);
  std::vector<uint64_t> canonical(static_cast<size_t>(O * KH * KW * words), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < KH * KW; ++t) {
        const float v = w[(o * C + c) * KH * KW + t];
        if (!(v >= 0.0f)) canonical[(o * KH * KW + t) * words + c / 64] |= uint64_t{1} << (c % 64);
      }
  return from_canonical(canonical.data(), O, C, KH, KW);
}

PackedWeights PackedWeights::from_canonical(const uint64_t* bits, int64_t O, int64_t C, int64_t KH, int64_t KW) {
  ConvShape s;
  s.C = C, s.O = O, s.KH = KH, s.KW = KW, s.H = KH, s.W = KW;
  s.validate();
  PackedWeights pw;
  pw.O = O, pw.C = C, pw.KH = KH, pw.KW = KW, pw.words = words_for(C);
  const int64_t taps = KH * KW, blocks = (O + kOutBlock - 1) / kOutBlock;
  const uint64_t tail_mask = (C % 64) ? ((uint64_t{1} << (C % 64)) - 1) : ~uint64_t{0};
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      const uint64_t last = bits[(o * taps + t) * pw.words + pw.words - 1];
      if (last & ~tail_mask)
        invalid("packed weights have bits set beyond in_channels=" + std::to_string(C) + " (output channel " +
                std::to_string(o) + ")");
    }
  pw.blocked = WordBuffer(static_cast<size_t>(blocks * taps * pw.words * kOutBlock));
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < pw.words; ++k)
        pw.blocked.data()[((o / kOutBlock * taps + t) * pw.words + k) * kOutBlock + o % kOutBlock] =
            bits[(o * taps + t) * pw.words + k];
  pw.finish();
  return pw;
}

void PackedWeights::finish() {
  const int64_t taps = KH * KW;
  {
    const int64_t K = taps * words, nblocks = (O + kOutBlock - 1) / kOutBlock;
    pair_blocked = WordBuffer(blocked.size());
    const uint64_t* src = blocked.data();
    uint64_t* dst = pair_blocked.data();
    for (int64_t b = 0; b < nblocks; ++b)
      for (int64_t i = 0; i < K; ++i)
        for (int64_t j = 0; j < kOutBlock; ++j) {
          const int64_t at = (b * K + i) * kOutBlock + j;
          // channel order inside the block: the AVX2 kernel's ymm v holds channels
          // {0,2,4,6}, {1,3,5,7}, {8,10,12,14}, {9,11,13,15} for v = 0..3
          const int64_t from = (b * K + i) * kOutBlock + (j & 8) + (j & 3) * 2 + ((j >> 2) & 1);
          const bool second = i >= K % 2 && (i - K % 2) % 2 == 1;
          dst[at] = second ? src[from] ^ src[from - kOutBlock] : src[from];
        }
  }
  tap_sums.assign(static_cast<size_t>(O * taps), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      int64_t neg = 0;
      for (int64_t k = 0; k < words; ++k)
        neg += __builtin_popcountll(blocked.data()[((o / kOutBlock * taps + t) * words + k) * kOutBlock + o % kOutBlock]);
      tap_sums[o * taps + t] = static_cast<int32_t>(C - 2 * neg);
    }
  const int64_t blocks = (O + kOutBlock - 1) / kOutBlock;
  tap_sums_blocked.assign(static_cast<size_t>(blocks * taps * kOutBlock), 0);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t)
      tap_sums_blocked[(o / kOutBlock * taps + t) * kOutBlock + o % kOutBlock] = tap_sums[o * taps + t];
}

void PackedWeights::to_canonical(uint64_t* bits) const {
  const int64_t taps = KH * KW;
  for (int64_t o = 0; o < O; ++o)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t k = 0; k < words; ++k)
        bits[(o * taps + t) * words + k] = blocked.data()[((o / kOutBlock * taps + t) * words + k) * kOutBlock + o % kOutBlock];
}

std::shared_ptr<const CorrectionTable> PackedWeights::correction(const ConvShape& s) const {
  const std::array<int64_t, 10> key{s.H, s.W, s.ph, s.pw, s.sh, s.sw, s.dh, s.dw, s.pad_value, s.OH()};
  {
    std::lock_guard<std::mutex> lock(*cache_mutex_);
    for (const auto& e : cache_)
      if (e->key == key) return e;
  }
  auto t = std::make_shared<CorrectionTable>();
  t->key = key;
  // Which kernel rows (columns) fall outside the input, per output row (column). Tap positions
  // grow with the tap index, so those taps are a prefix (before the input) and a suffix (past
  // it): a class is a pair (prefix, suffix), at most 2k + 1 of them along an axis as the prefix
  // only shrinks and the suffix only grows; class 0 = none outside.
  using Outside = std::pair<int64_t, int64_t>;
  auto classify = [](int64_t n_out, int64_t stride, int64_t pad, int64_t k, int64_t dil, int64_t size,
                     std::vector<int32_t>& cls, std::vector<Outside>& sets) {
    std::map<Outside, int32_t> ids{{Outside{0, 0}, 0}};
    sets.assign(1, Outside{0, 0});
    cls.resize(static_cast<size_t>(n_out));
    for (int64_t o = 0; o < n_out; ++o) {
      const int64_t first = o * stride - pad;  // input position of tap 0
      int64_t before = first < 0 ? std::min(k, (-first + dil - 1) / dil) : 0;
      const int64_t before_end = size - first <= 0 ? 0 : std::min(k, (size - first + dil - 1) / dil);
      int64_t after = k - before_end;
      if (before + after == k) before = k, after = 0;  // all outside: one class however it splits
      auto it = ids.find(Outside{before, after});
      if (it == ids.end()) {
        it = ids.emplace(Outside{before, after}, static_cast<int32_t>(sets.size())).first;
        sets.emplace_back(before, after);
      }
      cls[o] = it->second;
    }
  };
  std::vector<Outside> rsets, csets;
  classify(s.OH(), s.sh, s.ph, s.KH, s.dh, s.H, t->row_class, rsets);
  classify(s.OW(), s.sw, s.pw, s.KW, s.dw, s.W, t->col_class, csets);
  const int64_t nrc = static_cast<int64_t>(rsets.size()), ncc = static_cast<int64_t>(csets.size());
  const int64_t blocks = (O + kOutBlock - 1) / kOutBlock;
  {  // the longest run of class-0 columns
    int64_t best_lo = 0, best_len = 0;
    for (int64_t a = 0; a < static_cast<int64_t>(t->col_class.size());) {
      if (t->col_class[a] != 0) { ++a; continue; }
      int64_t b = a;
      while (b < static_cast<int64_t>(t->col_class.size()) && t->col_class[b] == 0) ++b;
      if (b - a > best_len) best_lo = a, best_len = b - a;
      a = b;
    }
    t->col_inner_lo = best_lo, t->col_inner_hi = best_lo + best_len;
  }
  t->nrc = nrc, t->ncc = ncc;
  t->table.assign(static_cast<size_t>(blocks * nrc * ncc * kOutBlock), 0);
  const int32_t factor = s.pad_value - 1;
  // sums[(a * (KW + 1) + b) * 16 + j]: channel j's tap sums over kernel rows < a and columns < b,
  // so the taps inside a class's rectangle sum in four look-ups (outside = all - inside) and the
  // table costs O(taps + class pairs), not O(taps x class pairs). |partial sums| <= C * KH * KW <= 2^24.
  const int64_t KW1 = KW + 1;
  std::vector<int32_t> sums(static_cast<size_t>((KH + 1) * KW1 * kOutBlock), 0);
  auto at = [&](int64_t a, int64_t b) { return sums.data() + (a * KW1 + b) * kOutBlock; };
  for (int64_t ob = 0; ob < blocks; ++ob) {
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw) {
        const int32_t* ts = tap_sums_blocked.data() + (ob * KH * KW + kh * KW + kw) * kOutBlock;
        for (int64_t j = 0; j < kOutBlock; ++j)
          at(kh + 1, kw + 1)[j] = ts[j] + at(kh, kw + 1)[j] + at(kh + 1, kw)[j] - at(kh, kw)[j];
      }
    const int32_t* all = at(KH, KW);
    for (int64_t rc = 0; rc < nrc; ++rc)
      for (int64_t cc = 0; cc < ncc; ++cc) {
        const int64_t r0 = rsets[rc].first, r1 = KH - rsets[rc].second;
        const int64_t c0 = csets[cc].first, c1 = KW - csets[cc].second;
        int32_t* dst = t->table.data() + ((ob * nrc + rc) * ncc + cc) * kOutBlock;
        for (int64_t j = 0; j < kOutBlock; ++j) {
          const int32_t inside = at(r1, c1)[j] - at(r0, c1)[j] - at(r1, c0)[j] + at(r0, c0)[j];
          dst[j] = factor * (all[j] - inside);
        }
      }
  }
  std::lock_guard<std::mutex> lock(*cache_mutex_);
  if (cache_.size() >= 8) cache_.erase(cache_.begin());
  cache_.push_back(t);
  return t;
}

// ---- activations --------------------------------------------------------------------------

namespace {

// Packs x into `out`, whose geometry and zeroed buffer are set.
void pack_into(const float* x, bool channels_last, PackedActivations& out, ThreadPool& pool) {
  const int64_t N = out.N, C = out.C, H = out.H, W = out.W, ph = out.ph, pw = out.pw;
  const KernelTable& kt = active_kernels();
  const int64_t words = out.words, Wp = out.Wp(), HW = H * W;
  uint64_t* dst = out.data.data();
  auto pixel_word = [&](int64_t n, int64_t p) { return dst + ((n * out.Hp() + p / W + ph) * Wp + p % W + pw) * words; };

  if (channels_last) {
    // Each pixel's channels are contiguous: 64 floats -> one word.
    const int64_t rows = N * H;
    pool.parallel_for(rows, [&](int64_t r) {
      const int64_t n = r / H, h = r % H;
      if (kt.pack_nhwc_row) {
        kt.pack_nhwc_row(x + (n * H + h) * W * C, W, C, words, pixel_word(n, h * W));
        return;
      }
      for (int64_t w = 0; w < W; ++w) {
        const float* src = x + ((n * H + h) * W + w) * C;
        uint64_t* d = pixel_word(n, h * W + w);
        for (int64_t k = 0; k < words; ++k) d[k] = kt.sign_mask64(src + k * 64, std::min<int64_t>(64, C - k * 64));
      }
    });
    return;
  }
  if (kt.pack_nchw_row) {
    pool.parallel_for(N * H, [&](int64_t r) {
      const int64_t n = r / H, h = r % H;
      kt.pack_nchw_row(x + n * C * HW + h * W, HW, W, C, words, pixel_word(n, h * W));
    });
    return;
  }
  // NCHW: sign masks of 64 pixels for each of 64 channels, then a 64x64 bit transpose.
  const int64_t pblocks = (HW + 63) / 64;
  pool.parallel_for(N * pblocks, [&](int64_t job) {
    const int64_t n = job / pblocks, p0 = (job % pblocks) * 64, np = std::min<int64_t>(64, HW - p0);
    alignas(64) uint64_t m[64];
    for (int64_t k = 0; k < words; ++k) {
      const int64_t c0 = k * 64, nc = std::min<int64_t>(64, C - c0);
      for (int64_t c = 0; c < nc; ++c) m[c] = kt.sign_mask64(x + (n * C + c0 + c) * HW + p0, np);
      for (int64_t c = nc; c < 64; ++c) m[c] = 0;
      transpose64(m);
      // Walk the block's pixels in row order (no division per pixel: it cost more than the
      // transpose); a block may wrap onto the next rows.
      int64_t h = p0 / W, w = p0 % W;
      uint64_t* d = pixel_word(n, p0) + k;
      for (int64_t p = 0; p < np; ++p) {
        *d = m[p];
        d += words;
        if (++w == W && p + 1 < np) {
          w = 0;
          d = pixel_word(n, ++h * W) + k;
        }
      }
    }
  });
}

}  // namespace

void pack_activations(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last,
                      int64_t ph, int64_t pw, PackedActivations& out, ThreadPool& pool) {
  ConvShape s;
  s.N = N, s.C = C, s.H = H, s.W = W, s.ph = ph, s.pw = pw, s.KH = 1, s.KW = 1;
  s.validate();
  // Built aside and moved into `out` only when complete (a cancelled pack leaves `out` as it was).
  PackedActivations packed;
  packed.N = N, packed.C = C, packed.H = H, packed.W = W, packed.ph = ph, packed.pw = pw, packed.words = words_for(C);
  packed.data = WordBuffer(static_cast<size_t>(N * packed.Hp() * packed.Wp() * packed.words));
  pack_into(x, channels_last, packed, pool);
  out = std::move(packed);
}

// ---- convolution --------------------------------------------------------------------------

namespace {

// The shared driver: `job` carries the output (floats, or packed bits in job.out_bits).
void run_conv(const PackedActivations& x, const PackedWeights& w, const ConvShape& s, ConvJob& job,
              ThreadPool& pool) {
  s.validate();
  if (x.N != s.N || x.C != s.C || x.H != s.H || x.W != s.W || x.ph != s.ph || x.pw != s.pw)
    invalid("packed activations do not match the convolution shape");
  if (w.O != s.O || w.C != s.C || w.KH != s.KH || w.KW != s.KW)
    invalid("packed weights do not match the convolution shape");
  job.x = &x, job.w = &w, job.s = &s;
  job.OH = s.OH(), job.OW = s.OW();
  // Reduction word i = (kh * KW + kw) * words + k, in the order of the blocked weights.
  std::vector<int64_t> offs(static_cast<size_t>(s.KH * s.KW * x.words));
  for (int64_t kh = 0; kh < s.KH; ++kh)
    for (int64_t kw = 0; kw < s.KW; ++kw)
      for (int64_t k = 0; k < x.words; ++k)
        offs[(kh * s.KW + kw) * x.words + k] = (kh * s.dh * x.Wp() + kw * s.dw) * x.words + k;
  job.word_offsets = offs.data();
  job.k_total = s.C * s.KH * s.KW;
  std::shared_ptr<const CorrectionTable> corr;
  if (s.pad_value != 1 && (s.ph > 0 || s.pw > 0)) {
    corr = w.correction(s);
    job.row_class = corr->row_class.data();
    job.col_class = corr->col_class.data();
    job.corr_table = corr->table.data();
    job.nrc = corr->nrc, job.ncc = corr->ncc;
    job.col_inner_lo = corr->col_inner_lo, job.col_inner_hi = corr->col_inner_hi;
  }
  const KernelTable& kt = active_kernels();
  job.weights = kt.pair_weights ? w.pair_blocked.data() : w.blocked.data();
  const int64_t blocks = (s.O + kOutBlock - 1) / kOutBlock;
  const int64_t rows = s.N * job.OH;
  if ((job.channels_last_out || job.out_bits) && pool.num_threads() > 1) {
    // Block-major: threads claim consecutive items, and the items of one output row would write
    // neighbouring (possibly shared) cache lines of the same NHWC pixels; adjacent rows of one
    // block do not.
    pool.parallel_for(rows * blocks, [&](int64_t i) {
      const int64_t ob = i / rows, row = i % rows;
      kt.conv_row(job, row / job.OH, row % job.OH, ob);
    });
    return;
  }
  pool.parallel_for(rows * blocks, [&](int64_t i) {
    const int64_t row = i / blocks, ob = i % blocks;
    kt.conv_row(job, row / job.OH, row % job.OH, ob);
  });
}

}  // namespace

void binary_conv2d(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                   const OutputTransform& t, float* out, ThreadPool& pool, bool channels_last_out) {
  ConvJob job;
  job.t = t, job.out = out, job.channels_last_out = channels_last_out;
  run_conv(x, w, s, job, pool);
}

void binary_conv2d_sign(const PackedActivations& x, const PackedWeights& w, const ConvShape& s,
                        const OutputTransform& t, int64_t out_ph, int64_t out_pw, PackedActivations& out,
                        ThreadPool& pool) {
  s.validate();
  require_geometry("output padding height", out_ph, 0);
  require_geometry("output padding width", out_pw, 0);
  // Built aside and moved into `out` only when complete (a cancelled conv leaves `out` as it was).
  PackedActivations bits;
  bits.N = s.N, bits.C = s.O, bits.H = s.OH(), bits.W = s.OW(), bits.ph = out_ph, bits.pw = out_pw;
  bits.words = words_for(s.O);
  check_buffer("packed output", {bits.N, bits.Hp(), bits.Wp(), bits.words}, sizeof(uint64_t));
  bits.data = WordBuffer(static_cast<size_t>(bits.N * bits.Hp() * bits.Wp() * bits.words));  // zeroed: border = +1, tail bits = 0
  ConvJob job;
  job.t = t, job.out_bits = &bits;
  run_conv(x, w, s, job, pool);
  out = std::move(bits);
}

}  // namespace bnn
