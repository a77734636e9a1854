// Python binding of the core: numpy buffers in, numpy buffers out; the GIL is released while
// packing and convolving (in the calling thread, so its cancel token stays the one bound).
// Errors from the core: std::invalid_argument -> ValueError, std::bad_alloc -> MemoryError,
// bnn::Cancelled -> _core.Cancelled (a RuntimeError).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdlib>
#include <optional>

#include "bnn.h"
#include "cancel.h"
#include "checks.h"
#include "kernels.h"
#include "pooling.h"
#include "thread_pool.h"

namespace py = pybind11;
using bnn::ConvShape;
using bnn::PackedActivations;
using bnn::PackedWeights;

using FloatArray = py::array_t<float, py::array::c_style>;
using WordArray = py::array_t<uint64_t, py::array::c_style>;
using Pair = std::pair<int64_t, int64_t>;

namespace {

void require_ndim(const py::array& a, py::ssize_t ndim, const char* what) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(what) + " must have " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
}

const float* optional_vector(const std::optional<FloatArray>& v, int64_t n, const char* what) {
  if (!v) return nullptr;
  if (v->ndim() != 1 || v->shape(0) != n)
    throw py::value_error(std::string(what) + " must be a vector of " + std::to_string(n) + " values");
  return v->data();
}

// A C-contiguous float32 array whose data starts on a 64-byte boundary (numpy's own allocations
// are only 16-byte aligned, and a misaligned 64-byte store splits two cache lines).
FloatArray aligned_floats(const std::vector<py::ssize_t>& shape) {
  size_t n = 1;
  for (auto d : shape) n *= static_cast<size_t>(d);
  const size_t bytes = std::max<size_t>(64, (n * sizeof(float) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  py::capsule owner(p, [](void* q) { std::free(q); });
  return FloatArray(shape, static_cast<float*>(p), owner);
}

// shift: [C] or none; with it, the signs of x + shift[c] (an RSign folded into the packing).
std::shared_ptr<PackedActivations> pack(const FloatArray& x, bool channels_last, Pair padding,
                                        const std::optional<FloatArray>& shift) {
  require_ndim(x, 4, "input");
  auto out = std::make_shared<PackedActivations>();
  const int64_t N = x.shape(0);
  const int64_t C = channels_last ? x.shape(3) : x.shape(1);
  const int64_t H = channels_last ? x.shape(1) : x.shape(2);
  const int64_t W = channels_last ? x.shape(2) : x.shape(3);
  const float* shift_data = optional_vector(shift, C, "input shift");
  py::gil_scoped_release release;
  bnn::pack_activations(x.data(), N, C, H, W, channels_last, padding.first, padding.second, *out,
                        bnn::ThreadPool::global(), shift_data);
  return out;
}

ConvShape conv_shape(const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation, int pad_value) {
  ConvShape s;
  s.N = x.N, s.C = x.C, s.H = x.H, s.W = x.W, s.ph = x.ph, s.pw = x.pw;
  s.O = w.O, s.KH = w.KH, s.KW = w.KW;
  s.sh = stride.first, s.sw = stride.second, s.dh = dilation.first, s.dw = dilation.second;
  s.pad_value = pad_value;
  if (w.C != x.C)
    throw py::value_error("channel mismatch: input has " + std::to_string(x.C) + " channels, weights expect " +
                          std::to_string(w.C));
  s.validate();
  return s;
}

// The float steps after the affine one (OutputTransform): each vector [O] or none; the clamp's
// (lo, hi) or none.
struct PostVectors {
  std::optional<FloatArray> shift_in, slope, shift_out;
  std::optional<std::pair<float, float>> clamp;
};

// The epilogue from the Python arguments: scale and bias [O]; for the fused residual sum, a float32
// NHWC [N, OH, OW, O] array; for PReLU, slopes [O]; for RPReLU, shifts before and after it [O].
bnn::OutputTransform output_transform(const ConvShape& s, const std::optional<FloatArray>& scale,
                                      const std::optional<FloatArray>& bias,
                                      const std::optional<FloatArray>& residual = std::nullopt,
                                      const PostVectors& post = {}) {
  bnn::OutputTransform t{optional_vector(scale, s.O, "scale"), optional_vector(bias, s.O, "bias")};
  if (residual) {
    const std::vector<py::ssize_t> want{s.N, s.OH(), s.OW(), s.O};
    if (std::vector<py::ssize_t>(residual->shape(), residual->shape() + residual->ndim()) != want)
      throw py::value_error("residual must have the output's NHWC shape [" + std::to_string(s.N) + ", " +
                            std::to_string(s.OH()) + ", " + std::to_string(s.OW()) + ", " + std::to_string(s.O) + "]");
    t.residual = residual->data();
  }
  t.shift_in = optional_vector(post.shift_in, s.O, "shift_in");
  t.slope = optional_vector(post.slope, s.O, "slope");
  t.shift_out = optional_vector(post.shift_out, s.O, "shift_out");
  if (post.clamp) {
    const auto [lo, hi] = *post.clamp;
    if (!(lo <= hi)) throw py::value_error("clamp needs lo <= hi, got (" + std::to_string(lo) + ", " + std::to_string(hi) + ")");
    t.clamp = true, t.clamp_lo = lo, t.clamp_hi = hi;
  }
  return t;
}

FloatArray float_output(const ConvShape& s, bool channels_last_out) {
  return aligned_floats(channels_last_out ? std::vector<py::ssize_t>{s.N, s.OH(), s.OW(), s.O}
                                          : std::vector<py::ssize_t>{s.N, s.O, s.OH(), s.OW()});
}

// Where a conv writes into a caller's NHWC array: channels [offset, offset + O) of `out`
// [N, OH, OW, C_total] (a channel concat built in place). Returns the first float to write.
float* output_slice(const ConvShape& s, FloatArray& out, int64_t offset) {
  require_ndim(out, 4, "out");
  if (!out.writeable()) throw py::value_error("out must be writeable");
  if (out.shape(0) != s.N || out.shape(1) != s.OH() || out.shape(2) != s.OW())
    throw py::value_error("out must be NHWC [" + std::to_string(s.N) + ", " + std::to_string(s.OH()) + ", " +
                          std::to_string(s.OW()) + ", C], got a different batch or image size");
  if (offset < 0 || offset + s.O > out.shape(3))
    throw py::value_error("out_channel_offset " + std::to_string(offset) + " + " + std::to_string(s.O) +
                          " output channels do not fit in out's " + std::to_string(out.shape(3)) + " channels");
  return out.mutable_data() + offset;
}

FloatArray conv_packed(const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation,
                       int pad_value, const std::optional<FloatArray>& scale, const std::optional<FloatArray>& bias,
                       bool channels_last_out, const std::optional<FloatArray>& residual, const PostVectors& post,
                       std::optional<FloatArray> into = std::nullopt, int64_t channel_offset = 0) {
  const ConvShape s = conv_shape(x, w, stride, dilation, pad_value);
  const bnn::OutputTransform t = output_transform(s, scale, bias, residual, post);
  if (into && !channels_last_out) throw py::value_error("out needs channels_last_out=True");
  FloatArray out = into ? *into : float_output(s, channels_last_out);
  float* dst = into ? output_slice(s, out, channel_offset) : out.mutable_data();
  const int64_t ld = into ? out.shape(3) : 0;
  {
    py::gil_scoped_release release;
    bnn::binary_conv2d(x, w, s, t, dst, bnn::ThreadPool::global(), channels_last_out, ld);
  }
  return out;
}

std::pair<FloatArray, std::shared_ptr<PackedActivations>> conv_packed_dual(
    const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation, int pad_value,
    const std::optional<FloatArray>& scale, const std::optional<FloatArray>& bias,
    const std::optional<FloatArray>& residual, const PostVectors& post, Pair out_padding,
    const std::optional<FloatArray>& out_shift) {
  const ConvShape s = conv_shape(x, w, stride, dilation, pad_value);
  bnn::OutputTransform t = output_transform(s, scale, bias, residual, post);
  t.sign_shift = optional_vector(out_shift, s.O, "out_shift");
  FloatArray out = float_output(s, true);
  float* dst = out.mutable_data();
  auto bits = std::make_shared<PackedActivations>();
  {
    py::gil_scoped_release release;
    bnn::binary_conv2d_dual(x, w, s, t, dst, out_padding.first, out_padding.second, *bits, bnn::ThreadPool::global());
  }
  return {out, bits};
}

// The dual output into parts of a concat: channels [out_offset, out_offset + O) of `out` and of `bits`.
void conv_packed_dual_into(const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation,
                           int pad_value, const std::optional<FloatArray>& scale,
                           const std::optional<FloatArray>& bias, const std::optional<FloatArray>& residual,
                           const PostVectors& post, const std::optional<FloatArray>& out_shift, FloatArray out,
                           PackedActivations& bits, int64_t out_offset) {
  const ConvShape s = conv_shape(x, w, stride, dilation, pad_value);
  bnn::OutputTransform t = output_transform(s, scale, bias, residual, post);
  t.sign_shift = optional_vector(out_shift, s.O, "out_shift");
  float* dst = output_slice(s, out, out_offset);
  const int64_t ld = out.shape(3);
  if (bits.C != ld) throw py::value_error("bits must have out's " + std::to_string(ld) + " channels");
  py::gil_scoped_release release;
  bnn::binary_conv2d_dual_into(x, w, s, t, dst, ld, bits, out_offset, bnn::ThreadPool::global());
}

std::shared_ptr<PackedActivations> conv_packed_sign(const PackedActivations& x, const PackedWeights& w, Pair stride,
                                                    Pair dilation, int pad_value, const std::optional<FloatArray>& scale,
                                                    const std::optional<FloatArray>& bias, Pair out_padding) {
  const ConvShape s = conv_shape(x, w, stride, dilation, pad_value);
  const bnn::OutputTransform t = output_transform(s, scale, bias);
  auto out = std::make_shared<PackedActivations>();
  py::gil_scoped_release release;
  bnn::binary_conv2d_sign(x, w, s, t, out_padding.first, out_padding.second, *out, bnn::ThreadPool::global());
  return out;
}

std::shared_ptr<bnn::CancelToken> make_cancel_token(std::optional<double> timeout_s) {
  if (!timeout_s) return std::make_shared<bnn::CancelToken>();
  constexpr double kMaxTimeout = 1e9;  // ~31 years: the steady clock's nanoseconds cannot overflow
  if (!(*timeout_s >= 0.0 && *timeout_s <= kMaxTimeout))
    throw py::value_error("timeout_s must be a number of seconds between 0 and 1e9, got " + std::to_string(*timeout_s));
  const auto timeout = std::chrono::duration_cast<bnn::CancelToken::Clock::duration>(std::chrono::duration<double>(*timeout_s));
  return std::make_shared<bnn::CancelToken>(timeout);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "XNOR-popcount binary convolution (bit-packed, SIMD with runtime dispatch, multi-threaded)";
  m.attr("MAX_BUFFER_BYTES") = bnn::kMaxBufferBytes;
  m.attr("MAX_GEOMETRY") = bnn::kMaxGeometry;

  py::register_exception<bnn::Cancelled>(m, "Cancelled", PyExc_RuntimeError);
  py::class_<bnn::CancelToken, std::shared_ptr<bnn::CancelToken>>(
      m, "CancelToken",
      "Stops the packing and convolutions of the thread it is bound to (set_cancel_token) within one work "
      "item of cancel() or of its timeout passing; they then raise Cancelled.")
      .def(py::init(&make_cancel_token), py::arg("timeout_s") = py::none())
      .def("cancel", &bnn::CancelToken::cancel, "Cancel: safe from any thread, takes effect at once.")
      .def_property_readonly("cancelled", &bnn::CancelToken::cancelled, "cancel() was called or the timeout passed.")
      .def("__repr__", [](const bnn::CancelToken& t) {
        return std::string("CancelToken(cancelled=") + (t.cancelled() ? "True" : "False") +
               (t.has_deadline() ? ", with a deadline)" : ")");
      });
  m.def("set_cancel_token", [](std::shared_ptr<bnn::CancelToken> token) { return bnn::set_cancel_token(std::move(token)); },
        py::arg("token").none(true),
        "Binds a CancelToken (or None) to the calling thread's kernel calls; returns the previous one.");

  m.def("available_isas", [] {
    std::vector<std::string> names;
    for (auto isa : bnn::supported_isas()) names.emplace_back(bnn::isa_name(isa));
    return names;
  }, "Instruction-set paths this CPU and build support, best first.");
  m.def("active_isa", [] { return std::string(bnn::isa_name(bnn::active_isa())); });
  m.def("set_isa", [](const std::string& name) { bnn::set_active_isa(bnn::isa_from_name(name)); }, py::arg("name"));
  m.def("set_num_threads", [](int n) {
    py::gil_scoped_release release;
    bnn::ThreadPool::global().set_num_threads(n);
  }, py::arg("n"));
  m.def("popcount_peak", [](int64_t iters, int repeats) {
    // Benchmark helper: best-of-`repeats` rate, in binary MACs per second, of the active path's
    // register-resident XOR + popcount + add loop (one thread, the calling one).
    const bnn::KernelTable& kt = bnn::active_kernels();
    py::gil_scoped_release release;
    double best = 1e30;
    volatile uint64_t sink = 0;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      sink = sink + kt.peak_loop(iters);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return static_cast<double>(iters) * static_cast<double>(kt.peak_macs_per_iter) / best;
  }, py::arg("iters") = 200000, py::arg("repeats") = 20,
     "Binary MAC/s of the active path's register-resident XOR+popcount+add loop (benchmark helper).");
  m.def("get_num_threads", [] { return bnn::ThreadPool::global().num_threads(); });
  m.def("set_thread_pool", [](const std::string& name) {
    if (name != "openmp" && name != "own") throw py::value_error("thread pool must be 'openmp' or 'own', got '" + name + "'");
    py::gil_scoped_release release;
    return bnn::ThreadPool::global().set_backend(name == "openmp" ? bnn::ThreadPool::Backend::openmp
                                                                  : bnn::ThreadPool::Backend::own);
  }, py::arg("name"),
     "Runs the kernel's parallel work on the process's OpenMP team ('openmp', torch's) or on its own workers "
     "('own'); returns False (and changes nothing) for 'openmp' when no OpenMP runtime is loaded.");
  m.def("thread_pool", [] {
    return std::string(bnn::ThreadPool::global().backend() == bnn::ThreadPool::Backend::openmp ? "openmp" : "own");
  });
  m.def("max_pool2d_nhwc", [](const FloatArray& x, Pair kernel, Pair stride, Pair padding, Pair dilation,
                              bool ceil_mode, bool relu) {
    require_ndim(x, 4, "input");
    bnn::PoolShape s;
    s.N = x.shape(0), s.H = x.shape(1), s.W = x.shape(2), s.C = x.shape(3);
    s.KH = kernel.first, s.KW = kernel.second, s.SH = stride.first, s.SW = stride.second;
    s.PH = padding.first, s.PW = padding.second, s.DH = dilation.first, s.DW = dilation.second;
    s.ceil_mode = ceil_mode;
    bnn::require_positive("batch", s.N);
    bnn::require_positive("channels", s.C);
    const int64_t OH = bnn::pool_output_size(s.H, s.KH, s.SH, s.PH, s.DH, ceil_mode, "height");
    const int64_t OW = bnn::pool_output_size(s.W, s.KW, s.SW, s.PW, s.DW, ceil_mode, "width");
    bnn::check_buffer("pooled output", {s.N, OH, OW, s.C}, sizeof(float));
    FloatArray out = aligned_floats({s.N, OH, OW, s.C});
    float* dst = out.mutable_data();
    {
      py::gil_scoped_release release;
      bnn::max_pool2d_nhwc(x.data(), s, relu, dst, bnn::ThreadPool::global());
    }
    return out;
  }, py::arg("x"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
     py::arg("ceil_mode") = false, py::arg("relu") = false,
     "F.max_pool2d (after F.relu with relu=True) of NHWC float32 x, bit for bit: [N, OH, OW, C].");
  m.def("openmp_loaded", &bnn::ThreadPool::openmp_loaded,
        "Whether an OpenMP runtime (GOMP_parallel) is loaded in the process.");

  py::class_<PackedWeights, std::shared_ptr<PackedWeights>>(m, "PackedWeights")
      .def_static("from_float", [](const FloatArray& w) {
        require_ndim(w, 4, "weight");
        py::gil_scoped_release release;
        return std::make_shared<PackedWeights>(PackedWeights::from_float(w.data(), w.shape(0), w.shape(1), w.shape(2), w.shape(3)));
      }, py::arg("weight"))
      .def_static("from_bits", [](const WordArray& bits, int64_t in_channels) {
        require_ndim(bits, 4, "packed bits");
        if (in_channels < 1) throw py::value_error("in_channels must be >= 1");
        if (bits.shape(3) != bnn::words_for(in_channels))
          throw py::value_error("packed bits have " + std::to_string(bits.shape(3)) + " words per tap, in_channels=" +
                                std::to_string(in_channels) + " needs " + std::to_string(bnn::words_for(in_channels)));
        return std::make_shared<PackedWeights>(
            PackedWeights::from_canonical(bits.data(), bits.shape(0), in_channels, bits.shape(1), bits.shape(2)));
      }, py::arg("bits"), py::arg("in_channels"))
      .def("bits", [](const PackedWeights& w) {
        WordArray out({w.O, w.KH, w.KW, w.words});
        w.to_canonical(out.mutable_data());
        return out;
      }, "Canonical packing [O][KH][KW][words] uint64; bit c%64 of word c//64 is set where the weight is negative.")
      .def_readonly("out_channels", &PackedWeights::O)
      .def_readonly("in_channels", &PackedWeights::C)
      .def_property_readonly("kernel_size", [](const PackedWeights& w) { return Pair{w.KH, w.KW}; })
      .def_readonly("words", &PackedWeights::words)
      .def_property_readonly("nbytes", [](const PackedWeights& w) { return w.O * w.KH * w.KW * w.words * 8; });

  py::class_<PackedActivations, std::shared_ptr<PackedActivations>>(m, "PackedActivations")
      .def_static("blank", [](int64_t n, int64_t c, int64_t h, int64_t w, Pair padding) {
        for (auto [name, v] : {std::pair{"batch", n}, {"channels", c}, {"height", h}, {"width", w}})
          bnn::require_positive(name, v);
        return std::make_shared<PackedActivations>(bnn::blank_activations(n, c, h, w, padding.first, padding.second));
      }, py::arg("n"), py::arg("c"), py::arg("h"), py::arg("w"), py::arg("padding"),
         "Packed activations [n, c, h, w] with border `padding`, every value +1 (all words zero): what "
         "conv2d_packed_dual_into writes into.")
      .def_property_readonly("shape", [](const PackedActivations& a) { return std::vector<int64_t>{a.N, a.C, a.H, a.W}; })
      .def_property_readonly("padding", [](const PackedActivations& a) { return Pair{a.ph, a.pw}; })
      .def_property_readonly("nbytes", [](const PackedActivations& a) { return static_cast<int64_t>(a.data.size() * 8); })
      .def("words", [](const PackedActivations& a) {
        WordArray out({a.N, a.Hp(), a.Wp(), a.words});
        std::copy(a.data.data(), a.data.data() + out.size(), out.mutable_data());
        return out;
      }, "A copy of the packed words [N][H + 2*ph][W + 2*pw][words] uint64; bit c%64 of word c//64 is set where "
         "the value is negative (or NaN); the border and the channel tail bits are zero.");

  m.def("pack_activations", &pack, py::arg("x"), py::arg("channels_last"), py::arg("padding"),
        py::arg("shift") = py::none(),
        "Sign bits of x (float32 NCHW, or NHWC with channels_last) with a +1 border `padding`; with `shift` (one "
        "per channel), of x + shift.");
  m.def("conv2d_packed", [](const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation,
                            int pad_value, const std::optional<FloatArray>& scale,
                            const std::optional<FloatArray>& bias, bool channels_last_out,
                            const std::optional<FloatArray>& residual, std::optional<FloatArray> slope,
                            std::optional<FloatArray> shift_in, std::optional<FloatArray> shift_out,
                            std::optional<std::pair<float, float>> clamp, std::optional<FloatArray> out,
                            int64_t out_channel_offset) {
    return conv_packed(x, w, stride, dilation, pad_value, scale, bias, channels_last_out, residual,
                       {std::move(shift_in), std::move(slope), std::move(shift_out), clamp}, std::move(out),
                       out_channel_offset);
  }, py::arg("x"), py::arg("weights"), py::arg("stride"), py::arg("dilation"),
        py::arg("pad_value"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
        py::arg("channels_last_out") = false, py::arg("residual") = py::none(), py::arg("slope") = py::none(),
        py::arg("shift_in") = py::none(), py::arg("shift_out") = py::none(), py::arg("clamp") = py::none(),
        py::arg("out").noconvert() = py::none(), py::arg("out_channel_offset") = 0,
        "Output float32 NCHW [N, O, OH, OW], or NHWC [N, OH, OW, O] with channels_last_out=True. With "
        "channels_last_out, the epilogue also adds `residual` (float32 NHWC, the output's shape), then `shift_in`, "
        "applies PReLU with `slope` (y > 0 ? y : slope * y), then adds `shift_out` (each one per output channel; "
        "the three together are RPReLU), then clamps to `clamp` = (lo, hi) as torch.clamp (relu: (0, inf)). "
        "With `out` (float32 C-contiguous NHWC [N, OH, OW, C], channels_last_out=True), writes channels "
        "[out_channel_offset, out_channel_offset + O) of it instead of a new array, and returns it.");
  m.def("conv2d_packed_dual", [](const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation,
                                 int pad_value, const std::optional<FloatArray>& scale,
                                 const std::optional<FloatArray>& bias, const std::optional<FloatArray>& residual,
                                 std::optional<FloatArray> slope, Pair out_padding, std::optional<FloatArray> shift_in,
                                 std::optional<FloatArray> shift_out, const std::optional<FloatArray>& out_shift,
                                 std::optional<std::pair<float, float>> clamp) {
    return conv_packed_dual(x, w, stride, dilation, pad_value, scale, bias, residual,
                            {std::move(shift_in), std::move(slope), std::move(shift_out), clamp}, out_padding, out_shift);
  }, py::arg("x"), py::arg("weights"), py::arg("stride"),
        py::arg("dilation"), py::arg("pad_value"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
        py::arg("residual") = py::none(), py::arg("slope") = py::none(), py::arg("out_padding") = Pair{0, 0},
        py::arg("shift_in") = py::none(), py::arg("shift_out") = py::none(), py::arg("out_shift") = py::none(),
        py::arg("clamp") = py::none(),
        "conv2d_packed's NHWC float output (channels_last_out=True, residual, shifts, slope and clamp as there) and, from "
        "the same pass, the PackedActivations pack_activations would make of it with padding out_padding (with "
        "`out_shift`, one per output channel: of the output + out_shift, as pack_activations' shift).");
  m.def("conv2d_packed_dual_into", [](const PackedActivations& x, const PackedWeights& w, Pair stride, Pair dilation,
                                      int pad_value, FloatArray out, PackedActivations& bits, int64_t out_channel_offset,
                                      const std::optional<FloatArray>& scale, const std::optional<FloatArray>& bias,
                                      const std::optional<FloatArray>& residual, std::optional<FloatArray> slope,
                                      std::optional<FloatArray> shift_in, std::optional<FloatArray> shift_out,
                                      const std::optional<FloatArray>& out_shift,
                                      std::optional<std::pair<float, float>> clamp) {
    conv_packed_dual_into(x, w, stride, dilation, pad_value, scale, bias, residual,
                          {std::move(shift_in), std::move(slope), std::move(shift_out), clamp}, out_shift,
                          std::move(out), bits, out_channel_offset);
  }, py::arg("x"), py::arg("weights"), py::arg("stride"), py::arg("dilation"), py::arg("pad_value"),
        py::arg("out").noconvert(), py::arg("bits"), py::arg("out_channel_offset"), py::arg("scale") = py::none(),
        py::arg("bias") = py::none(), py::arg("residual") = py::none(), py::arg("slope") = py::none(),
        py::arg("shift_in") = py::none(), py::arg("shift_out") = py::none(), py::arg("out_shift") = py::none(),
        py::arg("clamp") = py::none(),
        "conv2d_packed_dual into parts of a channel concat: the floats into channels [out_channel_offset, "
        "out_channel_offset + O) of `out` (float32 C-contiguous NHWC [N, OH, OW, C]) and their sign bits (of the "
        "output + out_shift, with out_shift) into the same channels of `bits` (PackedActivations.blank with C "
        "channels). out_channel_offset is a multiple of 16, and O too unless these are the last channels.");
  m.def("conv2d_packed_sign", &conv_packed_sign, py::arg("x"), py::arg("weights"), py::arg("stride"),
        py::arg("dilation"), py::arg("pad_value"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
        py::arg("out_padding") = Pair{0, 0},
        "The convolution with a binarised output: PackedActivations of sign(conv * scale + bias) with padding "
        "out_padding, bit for bit what pack_activations would make of conv2d_packed's float output, without "
        "writing or reading the floats.");
  m.def("conv2d", [](const FloatArray& x, bool channels_last, const PackedWeights& w, Pair stride, Pair padding,
                     Pair dilation, int pad_value, const std::optional<FloatArray>& scale,
                     const std::optional<FloatArray>& bias, bool channels_last_out,
                     const std::optional<FloatArray>& residual, std::optional<FloatArray> slope,
                     const std::optional<FloatArray>& input_shift, std::optional<FloatArray> shift_in,
                     std::optional<FloatArray> shift_out, std::optional<std::pair<float, float>> clamp) {
    auto packed = pack(x, channels_last, padding, input_shift);
    return conv_packed(*packed, w, stride, dilation, pad_value, scale, bias, channels_last_out, residual,
                       {std::move(shift_in), std::move(slope), std::move(shift_out), clamp});
  }, py::arg("x"), py::arg("channels_last"), py::arg("weights"), py::arg("stride"), py::arg("padding"),
     py::arg("dilation"), py::arg("pad_value"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
     py::arg("channels_last_out") = false, py::arg("residual") = py::none(), py::arg("slope") = py::none(),
     py::arg("input_shift") = py::none(), py::arg("shift_in") = py::none(), py::arg("shift_out") = py::none(),
     py::arg("clamp") = py::none(),
     "Pack (the signs of x, or of x + input_shift per input channel) and convolve. Output float32 NCHW "
     "[N, O, OH, OW], or NHWC [N, OH, OW, O] with channels_last_out=True; the epilogue as conv2d_packed's.");
}
