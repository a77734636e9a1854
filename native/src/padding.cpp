// PackedWeights::correction: the border classes of a geometry and the correction amount of each
// (row class, column class, output channel), cached per geometry (see padding.h).
#include <algorithm>
#include <map>
#include <utility>

#include "padding.h"
#include "weights.h"

namespace bnn {

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
  const int64_t blocks = out_blocks(O);
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

}  // namespace bnn
