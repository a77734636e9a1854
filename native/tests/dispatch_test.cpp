// The dispatcher: names round-trip, the best supported path is active from the start, and a path
// this build has no kernels for is refused, on whichever architecture the tests were built for.
#include <gtest/gtest.h>

#include <stdexcept>

#include "bnn.h"

namespace {

using bnn::Isa;

TEST(DispatchTest, NamesRoundTrip) {
  for (Isa isa : {Isa::portable, Isa::avx2, Isa::avx512, Isa::neon})
    EXPECT_EQ(bnn::isa_from_name(bnn::isa_name(isa)), isa);
  EXPECT_THROW(bnn::isa_from_name("sse9"), std::invalid_argument);
}

TEST(DispatchTest, TheBestSupportedPathIsFirstAndTheArchitecturesPathsOnly) {
  const auto isas = bnn::supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), Isa::portable);
#if defined(__aarch64__)
  EXPECT_EQ(isas.front(), Isa::neon);  // NEON is baseline AArch64: never left to the portable path
  EXPECT_FALSE(bnn::isa_supported(Isa::avx2));
  EXPECT_FALSE(bnn::isa_supported(Isa::avx512));
  EXPECT_THROW(bnn::set_active_isa(Isa::avx2), std::invalid_argument);
#else
  EXPECT_FALSE(bnn::isa_supported(Isa::neon));
  EXPECT_THROW(bnn::set_active_isa(Isa::neon), std::invalid_argument);
#endif
  for (Isa isa : isas) {
    bnn::set_active_isa(isa);
    EXPECT_EQ(bnn::active_isa(), isa);
  }
  bnn::set_active_isa(isas.front());
}

}  // namespace
