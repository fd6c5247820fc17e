// What the current CUDA device is, cached per device so the dispatcher's hot path asks the driver once.
#pragma once

namespace sdpa {

// Compute capability of the current device as 10 * major + minor (90 for H100), or 0 when this build has
// no CUDA or no device is visible.
int current_compute_capability();

// Streaming multiprocessors of the current device (132 on an H100 SXM), or 1 when none is visible; the
// split-KV decode kernel sizes its split count from it.
int current_sm_count();

}  // namespace sdpa
