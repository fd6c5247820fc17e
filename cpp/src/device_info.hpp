// What the current CUDA device is, cached per device so the dispatcher's hot path asks the driver once.
#pragma once

namespace sdpa {

// Compute capability of the current device as 10 * major + minor (90 for H100), or 0 when this build has
// no CUDA or no device is visible.
int current_compute_capability();

// Streaming multiprocessors of the current device (132 on an H100 SXM), or 1 when none is visible; the
// split-KV decode kernel sizes its split count from it.
int current_sm_count();

// Bytes of L2 cache of the current device (50 MB on an H100), or 0 when none is visible; the persistent
// forward sizes the groups of heads whose keys and values it keeps in flight together from it.
int current_l2_bytes();

}  // namespace sdpa
