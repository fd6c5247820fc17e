// The device side of kv_cache_append (kv_cache_append.cu), compiled only with CUDA.
#pragma once

#include "sdpa/kv_cache.hpp"

namespace sdpa {

// Launches the append on append.stream; assumes validate_kv_cache_append() passed.
Status launch_kv_cache_append(const KvCacheAppend& append);

}  // namespace sdpa
