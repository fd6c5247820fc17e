// kv_cache_append's checks and host reference; the device version is in kv_cache_append.cu.
#include "sdpa/kv_cache.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#if SDPA_WITH_CUDA
#include "kv_cache_launch.hpp"
#endif

namespace sdpa {

namespace {

Status invalid(const std::string& message) {
  return Status::error(StatusCode::kInvalidArgument, "kv_cache_append: " + message);
}

}  // namespace

Status validate_kv_cache_append(const KvCacheAppend& a) {
  if (a.batch < 0 || a.heads_kv < 1 || a.head_dim < 1 || a.total_new < 0) {
    return invalid("batch and total_new must be >= 0, heads_kv and head_dim >= 1; got batch=" + std::to_string(a.batch) +
                   " heads_kv=" + std::to_string(a.heads_kv) + " head_dim=" + std::to_string(a.head_dim) +
                   " total_new=" + std::to_string(a.total_new));
  }
  if (a.dtype == DType::kBool) return invalid("dtype must be float16, bfloat16 or float32, not bool");
  if (a.page_size < 1) return invalid("page_size must be >= 1; got " + std::to_string(a.page_size));
  if (a.batch > 0 && (a.page_table == nullptr || a.cache_seqlens == nullptr || a.cu_seqlens_new == nullptr)) {
    return invalid("page_table, cache_seqlens and cu_seqlens_new must be set");
  }
  if (a.page_table_stride < 0) return invalid("page_table_stride must be >= 0");
  if (a.new_seqlens != nullptr && a.new_seqlens == a.cache_seqlens) {
    return invalid("new_seqlens must not alias cache_seqlens (blocks still read it)");
  }
  if (a.total_new > 0) {
    const std::pair<const TensorView*, const char*> views[] = {
        {&a.key_cache, "key_cache"}, {&a.value_cache, "value_cache"}, {&a.key, "key"}, {&a.value, "value"}};
    for (const auto& [view, name] : views) {
      if (view->data == nullptr) return invalid(std::string(name) + ".data is null");
    }
  }
  return Status::success();
}

Status reference_kv_cache_append(const KvCacheAppend& a) {
  if (Status s = validate_kv_cache_append(a); !s.ok()) return s;
  const std::size_t elem = dtype_size(a.dtype);
  for (int b = 0; b < a.batch; ++b) {
    const int first = a.cu_seqlens_new[b], count = a.cu_seqlens_new[b + 1] - first;
    for (int t = 0; t < count; ++t) {
      const int position = a.cache_seqlens[b] + t;
      const int64_t page = a.page_table[int64_t(b) * a.page_table_stride + position / a.page_size];
      for (int h = 0; h < a.heads_kv; ++h) {
        const std::pair<const TensorView*, const TensorView*> pairs[] = {{&a.key, &a.key_cache},
                                                                         {&a.value, &a.value_cache}};
        for (const auto& [src, dst] : pairs) {
          const char* from = static_cast<const char*>(src->data) +
                             ((first + t) * src->stride_seq + h * src->stride_head) * int64_t(elem);
          char* to = static_cast<char*>(const_cast<void*>(dst->data)) +
                     (page * dst->stride_batch + (position % a.page_size) * dst->stride_seq + h * dst->stride_head) *
                         int64_t(elem);
          std::memcpy(to, from, a.head_dim * elem);
        }
      }
    }
    if (a.new_seqlens != nullptr) a.new_seqlens[b] = a.cache_seqlens[b] + count;
  }
  return Status::success();
}

Status kv_cache_append(const KvCacheAppend& a) {
  if (Status s = validate_kv_cache_append(a); !s.ok()) return s;
#if SDPA_WITH_CUDA
  return launch_kv_cache_append(a);
#else
  return Status::error(StatusCode::kNotCompiled, "kv_cache_append: this libsdpa was built without CUDA");
#endif
}

}  // namespace sdpa
