// Runtime CPU dispatch: detect once and start on the best supported kernel table; set_active_isa
// switches to another (the caller's settings choose it; tests run every supported path). Nothing
// here reads the environment: the core takes its choices as arguments.
#include <atomic>

#include "kernels.h"

namespace bnn {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::neon: return "neon";
    default: return "portable";
  }
}

Isa isa_from_name(const std::string& name) {
  if (name == "avx512") return Isa::avx512;
  if (name == "avx2") return Isa::avx2;
  if (name == "neon") return Isa::neon;
  if (name == "portable") return Isa::portable;
  throw std::invalid_argument("unknown instruction set '" + name + "' (expected avx512, avx2, neon or portable)");
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::portable: return true;
#if BNN_HAVE_X86
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if BNN_HAVE_NEON
    case Isa::neon: return true;  // Advanced SIMD is mandatory on AArch64
#endif
    default: return false;
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::avx512, Isa::avx2, Isa::neon, Isa::portable})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

static const KernelTable& table_for(Isa isa) {
  switch (isa) {
#if BNN_HAVE_X86
    case Isa::avx512: return avx512_kernels();
    case Isa::avx2: return avx2_kernels();
#endif
#if BNN_HAVE_NEON
    case Isa::neon: return neon_kernels();
#endif
    default: return portable_kernels();
  }
}

static std::atomic<const KernelTable*>& active_table() {
  static std::atomic<const KernelTable*> table{&table_for(supported_isas().front())};
  return table;
}

const KernelTable& active_kernels() { return *active_table().load(std::memory_order_acquire); }
Isa active_isa() { return active_kernels().isa; }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("instruction set '") + isa_name(isa) + "' is not supported by this CPU/build");
  active_table().store(&table_for(isa), std::memory_order_release);
}

}  // namespace bnn
