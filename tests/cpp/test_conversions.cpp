// The hand-written float <-> bf16/fp16 conversions of test_util.hpp. The GPU suite compares kernels with a
// reference fed the rounded inputs, so a wrong rounding here would read as a kernel error there.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "test_util.hpp"

namespace {

using sdpa::DType;
using sdpa_test::from_half_bits;
using sdpa_test::to_half_bits;

bool is_nan_bits(DType dtype, uint16_t h) { return std::isnan(from_half_bits(dtype, h)); }

class Conversions : public ::testing::TestWithParam<DType> {};

// Every representable value survives a round trip, infinities and subnormals included.
TEST_P(Conversions, EveryValueRoundTrips) {
  const DType dtype = GetParam();
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = from_half_bits(dtype, h);
    if (is_nan_bits(dtype, h)) {
      EXPECT_TRUE(is_nan_bits(dtype, to_half_bits(dtype, f))) << std::hex << bits;
    } else {
      ASSERT_EQ(to_half_bits(dtype, f), h) << std::hex << bits << " = " << f;
    }
  }
}

// Between two neighbours a and b: the midpoint goes to the one with an even last bit, anything off the
// midpoint to the nearer one. Midpoints of 16-bit floats are exact in fp32.
TEST_P(Conversions, RoundsToNearestEven) {
  const DType dtype = GetParam();
  for (uint32_t bits = 0; bits < 0x7fff; ++bits) {
    const uint16_t a = static_cast<uint16_t>(bits), b = static_cast<uint16_t>(bits + 1);
    const float fa = from_half_bits(dtype, a), fb = from_half_bits(dtype, b);
    if (std::isinf(fa) || std::isnan(fa) || std::isinf(fb) || std::isnan(fb)) continue;
    const float mid = fa + (fb - fa) / 2;
    ASSERT_EQ(to_half_bits(dtype, mid), (a & 1u) ? b : a) << std::hex << bits;
    ASSERT_EQ(to_half_bits(dtype, std::nextafter(mid, fa)), a) << std::hex << bits;
    ASSERT_EQ(to_half_bits(dtype, std::nextafter(mid, fb)), b) << std::hex << bits;
    ASSERT_EQ(to_half_bits(dtype, -mid), static_cast<uint16_t>(((a & 1u) ? b : a) | 0x8000u)) << std::hex << bits;
  }
}

// Past the largest finite value by half an ulp or more, the result is inf.
TEST_P(Conversions, OverflowsToInfinity) {
  const DType dtype = GetParam();
  const uint16_t max_finite = dtype == DType::kBFloat16 ? 0x7f7f : 0x7bff;
  const float largest = from_half_bits(dtype, max_finite);
  const float ulp = largest - from_half_bits(dtype, max_finite - 1);
  EXPECT_EQ(from_half_bits(dtype, to_half_bits(dtype, largest + ulp / 2)), std::numeric_limits<float>::infinity());
  EXPECT_EQ(from_half_bits(dtype, to_half_bits(dtype, std::nextafter(largest + ulp / 2, 0.0f))), largest);
}

INSTANTIATE_TEST_SUITE_P(Half, Conversions, ::testing::Values(DType::kBFloat16, DType::kFloat16),
                         [](const auto& info) { return std::string(sdpa::dtype_name(info.param)); });

}  // namespace
