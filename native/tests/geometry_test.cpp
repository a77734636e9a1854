// ConvShape::validate: shapes it must refuse with std::invalid_argument (never a crash or an
// overflow), each a mutation of a base shape it accepts. tests/native/test_geometry_fuzz.py fuzzes
// the same rules with extreme values through bnn_geomcheck.
#include <gtest/gtest.h>

#include <stdexcept>

#include "bnn.h"

namespace {

using bnn::ConvShape;

ConvShape base_shape() {
  ConvShape s;
  s.C = 3, s.H = 5, s.W = 5, s.KH = 3, s.KW = 3;
  return s;
}

struct Mutation {
  const char* name;
  void (*apply)(ConvShape&);
};

const Mutation kMutations[] = {
    {"no_channels", [](ConvShape& s) { s.C = 0; }},
    {"zero_stride", [](ConvShape& s) { s.sh = 0; }},
    {"kernel_larger_than_input", [](ConvShape& s) { s.KH = 50; }},
    {"negative_padding", [](ConvShape& s) { s.ph = -1; }},
    {"pad_value_3", [](ConvShape& s) { s.pad_value = 3; }},
    {"batch_2_pow_62", [](ConvShape& s) { s.N = int64_t{1} << 62; }},
    {"dilation_2_pow_40", [](ConvShape& s) { s.dh = int64_t{1} << 40; }},
    // (1 + 2 - 4) / 3 truncates to 0 in C++: the output size must still come out as 0.
    {"negative_span_truncating_to_zero", [](ConvShape& s) { s.H = 1, s.ph = 1, s.KH = 4, s.sh = 3; }},
};

TEST(ShapeValidation, TheBaseShapeIsValid) { EXPECT_NO_THROW(base_shape().validate()); }

class RefusedShapeTest : public ::testing::TestWithParam<Mutation> {};

TEST_P(RefusedShapeTest, ValidateThrowsInvalidArgument) {
  ConvShape s = base_shape();
  GetParam().apply(s);
  EXPECT_THROW(s.validate(), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(Mutations, RefusedShapeTest, ::testing::ValuesIn(kMutations),
                         [](const ::testing::TestParamInfo<Mutation>& info) { return std::string(info.param.name); });

}  // namespace
