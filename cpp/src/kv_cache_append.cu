// kv_cache_append on the device: one block per new token, its threads copying the token's key and value
// rows (every kv head) into the token's page slot, in the widest unit the pointers and strides allow.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kv_cache_launch.hpp"

namespace sdpa {

namespace {

struct AppendParams {
  KvCacheAppend a;
  int units_per_row;  // copy units of one head's row
};

// The sequence owning packed token t: the last b with cu[b] <= t (sequences with no new token have
// cu[b] == cu[b + 1] and are skipped past).
__device__ int owner_of(const int* cu, int batch, int t) {
  int lo = 0, hi = batch;  // cu[lo] <= t < cu[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (cu[mid] <= t) lo = mid; else hi = mid;
  }
  return lo;
}

template <class Unit>
__global__ void kv_cache_append_kernel(const __grid_constant__ AppendParams p) {
  const KvCacheAppend& a = p.a;
  if (blockIdx.x == 0 && a.new_seqlens != nullptr) {
    for (int b = threadIdx.x; b < a.batch; b += blockDim.x) {
      a.new_seqlens[b] = a.cache_seqlens[b] + a.cu_seqlens_new[b + 1] - a.cu_seqlens_new[b];
    }
  }
  const int t = blockIdx.x;
  if (t >= a.total_new) return;  // the one block of a call with no new token only writes the lengths
  const int b = owner_of(a.cu_seqlens_new, a.batch, t);
  const int position = a.cache_seqlens[b] + t - a.cu_seqlens_new[b];
  const int64_t page = a.page_table[int64_t(b) * a.page_table_stride + position / a.page_size];
  const int64_t slot = position % a.page_size;
  // Strides are in copy units here: the host divided them.
  for (int i = threadIdx.x; i < a.heads_kv * p.units_per_row; i += blockDim.x) {
    const int h = i / p.units_per_row, u = i % p.units_per_row;
    const Unit* k = static_cast<const Unit*>(a.key.data) + t * a.key.stride_seq + h * a.key.stride_head + u;
    const Unit* v = static_cast<const Unit*>(a.value.data) + t * a.value.stride_seq + h * a.value.stride_head + u;
    Unit* kc = static_cast<Unit*>(const_cast<void*>(a.key_cache.data)) + page * a.key_cache.stride_batch +
               slot * a.key_cache.stride_seq + h * a.key_cache.stride_head + u;
    Unit* vc = static_cast<Unit*>(const_cast<void*>(a.value_cache.data)) + page * a.value_cache.stride_batch +
               slot * a.value_cache.stride_seq + h * a.value_cache.stride_head + u;
    *kc = *k;
    *vc = *v;
  }
}

// Whether every pointer and row stride of the four views is a multiple of `bytes`.
bool aligned_to(const KvCacheAppend& a, std::size_t elem, std::size_t bytes) {
  if ((a.head_dim * elem) % bytes != 0) return false;
  for (const TensorView* v : {&a.key, &a.value, &a.key_cache, &a.value_cache}) {
    if (reinterpret_cast<std::uintptr_t>(v->data) % bytes != 0) return false;
    for (int64_t stride : {v->stride_batch, v->stride_head, v->stride_seq}) {
      if ((stride * int64_t(elem)) % int64_t(bytes) != 0) return false;
    }
  }
  return true;
}

template <class Unit>
Status launch_with(const KvCacheAppend& a, std::size_t elem) {
  // Strides in copy units instead of elements.
  const int64_t per_unit = int64_t(sizeof(Unit) / elem);
  AppendParams p{a, static_cast<int>(a.head_dim * elem / sizeof(Unit))};
  for (TensorView* v : {&p.a.key, &p.a.value, &p.a.key_cache, &p.a.value_cache}) {
    v->stride_batch /= per_unit;
    v->stride_head /= per_unit;
    v->stride_seq /= per_unit;
  }
  const int threads = 128;
  // A call with no new token still writes new_seqlens: one block.
  const int blocks = a.total_new > 0 ? a.total_new : (a.new_seqlens != nullptr && a.batch > 0 ? 1 : 0);
  if (blocks == 0) return Status::success();
  kv_cache_append_kernel<Unit><<<blocks, threads, 0, static_cast<cudaStream_t>(a.stream)>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return Status::error(StatusCode::kCudaError, std::string("kv_cache_append: ") + cudaGetErrorString(err));
  }
  return Status::success();
}

}  // namespace

Status launch_kv_cache_append(const KvCacheAppend& a) {
  const std::size_t elem = dtype_size(a.dtype);
  if (aligned_to(a, elem, 16)) return launch_with<uint4>(a, elem);
  if (aligned_to(a, elem, 4)) return launch_with<uint32_t>(a, elem);
  if (elem == 2) return launch_with<uint16_t>(a, elem);
  return launch_with<uint32_t>(a, elem);  // fp32 is always 4-byte aligned
}

}  // namespace sdpa
