// reference_kv_cache_append (host) against positions computed here from the page-table rule, and
// validate_kv_cache_append's messages. The device version is compared with this reference in
// test_varlen_gpu.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "sdpa/sdpa.hpp"

namespace {

constexpr int kHeads = 2, kDim = 4, kPage = 3, kPages = 8, kMaxPages = 3;
constexpr int kRow = kHeads * kDim;

struct Pool {
  std::vector<float> keys = std::vector<float>(kPages * kPage * kRow, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> values = keys;
};

sdpa::KvCacheAppend append_problem(Pool& pool, const std::vector<int>& table, const std::vector<int>& lengths,
                                   const std::vector<int>& cu_new, const std::vector<float>& k,
                                   const std::vector<float>& v, int* new_lengths) {
  sdpa::KvCacheAppend a;
  a.dtype = sdpa::DType::kFloat32;
  a.batch = static_cast<int>(lengths.size());
  a.heads_kv = kHeads;
  a.head_dim = kDim;
  a.total_new = cu_new.back();
  a.key_cache = {pool.keys.data(), kPage * kRow, kDim, kRow};
  a.value_cache = {pool.values.data(), kPage * kRow, kDim, kRow};
  a.key = {k.data(), 0, kDim, kRow};
  a.value = {v.data(), 0, kDim, kRow};
  a.page_table = table.data();
  a.page_table_stride = kMaxPages;
  a.page_size = kPage;
  a.cache_seqlens = lengths.data();
  a.cu_seqlens_new = cu_new.data();
  a.new_seqlens = new_lengths;
  return a;
}

TEST(KvCacheAppend, WritesEachTokenToItsPageSlot) {
  Pool pool;
  // Sequence 0 holds 2 tokens and gets 3 (crossing into its second page), sequence 1 gets none, sequence
  // 2 holds 0 and gets 4.
  const std::vector<int> table = {5, 1, 7, 2, 2, 2, 0, 6, 3};
  const std::vector<int> lengths = {2, 1, 0}, cu_new = {0, 3, 3, 7};
  std::vector<float> k(7 * kRow), v(7 * kRow);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<float>(i);
    v[i] = -static_cast<float>(i);
  }
  std::vector<int> new_lengths(3, -1);
  const sdpa::Status status = sdpa::reference_kv_cache_append(append_problem(pool, table, lengths, cu_new, k, v,
                                                                              new_lengths.data()));
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(new_lengths, (std::vector<int>{5, 1, 4}));
  int written = 0;
  for (int b = 0; b < 3; ++b) {
    for (int t = 0; t < cu_new[b + 1] - cu_new[b]; ++t, ++written) {
      const int position = lengths[b] + t;
      const int page = table[b * kMaxPages + position / kPage];
      for (int e = 0; e < kRow; ++e) {
        const size_t at = (static_cast<size_t>(page) * kPage + position % kPage) * kRow + e;
        EXPECT_EQ(pool.keys[at], k[(cu_new[b] + t) * kRow + e]) << "b=" << b << " t=" << t;
        EXPECT_EQ(pool.values[at], v[(cu_new[b] + t) * kRow + e]) << "b=" << b << " t=" << t;
      }
    }
  }
  // Nothing else was touched: exactly the 7 tokens' rows are numbers.
  int numbers = 0;
  for (float x : pool.keys) numbers += std::isnan(x) ? 0 : 1;
  EXPECT_EQ(numbers, written * kRow);
}

TEST(KvCacheAppend, BrokenArgumentsNameTheirField) {
  Pool pool;
  const std::vector<int> table(kMaxPages, 0), lengths = {0}, cu_new = {0, 1};
  const std::vector<float> k(kRow), v(kRow);
  int out = 0;
  const sdpa::KvCacheAppend good = append_problem(pool, table, lengths, cu_new, k, v, &out);
  ASSERT_TRUE(sdpa::validate_kv_cache_append(good).ok());
  struct Broken {
    const char* field;
    void (*apply)(sdpa::KvCacheAppend&);
  };
  const Broken cases[] = {
      {"page_size", [](sdpa::KvCacheAppend& a) { a.page_size = 0; }},
      {"head_dim", [](sdpa::KvCacheAppend& a) { a.head_dim = 0; }},
      {"cu_seqlens_new", [](sdpa::KvCacheAppend& a) { a.cu_seqlens_new = nullptr; }},
      {"key_cache", [](sdpa::KvCacheAppend& a) { a.key_cache.data = nullptr; }},
      {"new_seqlens", [](sdpa::KvCacheAppend& a) { a.new_seqlens = const_cast<int*>(a.cache_seqlens); }},
  };
  for (const Broken& broken : cases) {
    sdpa::KvCacheAppend a = good;
    broken.apply(a);
    const sdpa::Status s = sdpa::validate_kv_cache_append(a);
    EXPECT_EQ(s.code, sdpa::StatusCode::kInvalidArgument) << broken.field;
    EXPECT_NE(s.message.find(broken.field), std::string::npos) << s.message;
  }
  if (!sdpa::built_with_cuda()) {
    EXPECT_EQ(sdpa::kv_cache_append(good).code, sdpa::StatusCode::kNotCompiled);
  }
}

}  // namespace
