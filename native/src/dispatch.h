// Runtime dispatch between the instruction sets the core is compiled for. The best supported one
// is active from the start; set_active_isa switches (the caller's settings choose).
#pragma once
#include <string>
#include <vector>

namespace bnn {

enum class Isa { portable = 0, avx2 = 1, avx512 = 2, neon = 3 };
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument
bool isa_supported(Isa isa);                 // compiled in and supported by this CPU
std::vector<Isa> supported_isas();           // best first
Isa active_isa();
void set_active_isa(Isa isa);  // throws if unsupported

}  // namespace bnn
