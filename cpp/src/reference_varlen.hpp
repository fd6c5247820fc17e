// The host oracle of a variable-length batch (AttentionProblem::is_varlen), used by reference_forward().
#pragma once

#include "sdpa/sdpa.hpp"

namespace sdpa {

// Each sequence is cut out (its keys gathered from the packed tensor or the pages into a contiguous copy)
// and run as its own dense problem through reference_forward(), whose results are written back at the
// sequence's tokens. The length and page arrays are read on the host, like every tensor of the oracle.
Status reference_forward_varlen(const AttentionProblem& problem, const BiasDesc& bias);

}  // namespace sdpa
