// Host side of the sm80 split-KV decode family: AttentionProblem + BiasDesc -> a plan (packed row blocks,
// split count, workspace layout) -> DecodeParams -> the split kernel, then the combine kernel.
//
// Included only by the generated explicit-instantiation translation units.
#pragma once

#include <atomic>
#include <cstddef>
#include <string>

#include <cuda_runtime.h>

#include "bias/bias_trait.cuh"
#include "common/launch_checks.hpp"
#include "common/params_decode.hpp"
#include "common/problem_checks.hpp"
#include "common/split_combine.cuh"
#include "common/split_kv.hpp"
#include "common/tile_range.hpp"
#include "sm80/cute_element.hpp"
#include "sm80/decode_sm80.hpp"
#include "sm80/flash_decode_kernel_sm80.cuh"
#include "sm80/kernel_traits_decode_sm80.cuh"
#include "device_info.hpp"

namespace sdpa {

namespace sm80 {

constexpr const char* kDecodeFamily = "decode_sm80";

// What one launch does: blocks of packed rows, the split count, and the workspace that follows from them.
struct DecodePlan {
  int m_blocks = 0;
  SplitKvLayout layout;  // layout.partials is the split count
};

template <class Traits, class Bias>
struct DecodeLaunch {
  static constexpr int kSmem = Traits::kSmemBytes;

  static auto kernel() { return flash_decode_kernel_sm80<Traits, Bias>; }

  // Blocks of this kernel one SM holds at once, asked once per process (the first device's answer; every
  // sm80+ device has at least the shared memory and registers that answer assumed).
  static int blocks_per_sm() {
    static std::atomic<int> cached{0};
    if (int n = cached.load(std::memory_order_relaxed)) return n;
    int n = 1;
    if (cudaFuncSetAttribute(kernel(), cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel(), Traits::kNThreads, kSmem) != cudaSuccess ||
        n < 1) {
      cudaGetLastError();
      n = 1;
    }
    cached.store(n, std::memory_order_relaxed);
    return n;
  }

  static DecodePlan plan(const AttentionProblem& problem) {
    DecodePlan plan;
    const int group = problem.group_size();
    const int packed_rows = group * problem.seqlen_q;
    const int batch_heads = problem.batch * problem.heads_kv;
    plan.m_blocks = (packed_rows + Traits::kBlockM - 1) / Traits::kBlockM;
    const TileRange all = Bias::kv_tiles(PositionSpan{0, problem.seqlen_q - 1}, Traits::kBlockN, problem.seqlen_q,
                                         problem.seqlen_kv);
    // One block per SM, though two fit: fewer, longer parts measured faster (less pipeline fill and fewer
    // partials to combine; H100, 2026-11-26, GB/s with forced split counts: B=1 Skv=32k 16 parts 2118 vs 33
    // parts 2051, B=8 Sq=4 2 parts 2501 vs 4 parts 2446, the rest level). Not for a dense bias or a paged
    // cache, whose blocks also wait on the bias tile or the page table tile by tile and want the second
    // block per SM to hide it (B=8 key-padding mask: 2 parts 2303 vs 4 parts 2512; page_size 16 at one
    // block per SM: 0.90x the contiguous cache, against 0.96x at two).
    const bool latency_bound = Bias::kKind == BiasKind::kDense || problem.page_table != nullptr;
    const int per_sm = latency_bound ? blocks_per_sm() : 1;
    const int slots = current_sm_count() * per_sm;
    const int splits = choose_num_splits(plan.m_blocks * batch_heads, all.end - all.begin, slots, problem.num_splits);
    plan.layout = {splits, batch_heads, packed_rows, Traits::kHeadDim};
    return plan;
  }

  static Status run(const AttentionProblem& problem, const typename Bias::Params& bias_params, void* workspace) {
    const DecodePlan plan = DecodeLaunch::plan(problem);
    DecodeParams<typename Bias::Params> params;
    static_cast<FwdParams<typename Bias::Params>&>(params) =
        make_fwd_params<Bias>(problem, bias_params, BiasForm::kElementwise);
    params.o_partial = static_cast<float*>(workspace);
    params.lse_partial = reinterpret_cast<float*>(static_cast<char*>(workspace) + plan.layout.o_bytes());
    params.layout = plan.layout;
    params.heads_kv = problem.heads_kv;
    const auto stream = static_cast<cudaStream_t>(problem.stream);

    if (Status s = allow_smem(kernel(), kSmem, kDecodeFamily); !s.ok()) return s;
    kernel()<<<dim3(plan.layout.batch_heads, plan.m_blocks, plan.layout.partials), Traits::kNThreads, kSmem, stream>>>(
        params);
    if (Status s = launch_status(kDecodeFamily, "split kernel"); !s.ok()) return s;
    if (plan.layout.partials == 1) return Status::success();  // the split kernel wrote O and the LSE itself

    CombineParams combine;
    combine.o = problem.o;
    combine.lse = problem.lse;
    combine.seq = params.seq;
    combine.o_partial = params.o_partial;
    combine.lse_partial = params.lse_partial;
    combine.layout = plan.layout;
    combine.heads_kv = problem.heads_kv;
    combine.group = problem.group_size();
    combine.seqlen_q = problem.seqlen_q;
    // On sm90+ the combine is a programmatic dependent launch: its blocks start while the split kernel's
    // last blocks finish and wait in the kernel (griddepcontrol.wait) for its results, so the launch gap
    // between the two kernels leaves the critical path.
    cudaLaunchAttribute dependent;
    dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    dependent.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(plan.layout.batch_heads, plan.layout.packed_rows);
    config.blockDim = dim3(kCombineWarps * 32);
    config.stream = stream;
    config.attrs = &dependent;
    config.numAttrs = current_compute_capability() >= 90 ? 1 : 0;
    cudaLaunchKernelEx(&config, split_kv_combine_kernel<typename Traits::Element, Traits::kHeadDim>, combine);
    return launch_status(kDecodeFamily, "combine kernel");
  }
};

}  // namespace sm80

template <class Bias, DType kDType, int kHeadDim>
Status DecodeSm80<Bias, kDType, kHeadDim>::can_implement(const AttentionProblem& problem, const BiasDesc&) {
  if (problem.dtype != kDType || problem.head_dim != kHeadDim) {
    return Status::error(StatusCode::kUnsupported, "decode_sm80: the problem's dtype or head dim is not the kernel's");
  }
  if (problem.is_varlen() && Bias::kKind == BiasKind::kDense) {
    return Status::error(StatusCode::kUnsupported, "decode_sm80: a dense bias has no variable-length layout");
  }
  if (problem.seqlen_q > kSplitKvMaxSeqlenQ) {
    return Status::error(StatusCode::kUnsupported, "decode_sm80: seqlen_q " + std::to_string(problem.seqlen_q) +
                                                       " is above " + std::to_string(kSplitKvMaxSeqlenQ));
  }
  return check_rows_16b_aligned(problem);
}

template <class Bias, DType kDType, int kHeadDim>
std::size_t DecodeSm80<Bias, kDType, kHeadDim>::workspace_size(const AttentionProblem& problem, const BiasDesc&) {
  using Traits = KernelTraitsDecodeSm80<typename CuteElement<kDType>::type, kHeadDim>;
  return sm80::DecodeLaunch<Traits, Bias>::plan(problem).layout.bytes();
}

template <class Bias, DType kDType, int kHeadDim>
std::string DecodeSm80<Bias, kDType, kHeadDim>::describe(const AttentionProblem& problem, const BiasDesc&) {
  using Traits = KernelTraitsDecodeSm80<typename CuteElement<kDType>::type, kHeadDim>;
  const sm80::DecodePlan plan = sm80::DecodeLaunch<Traits, Bias>::plan(problem);
  const std::string keys = problem.page_table != nullptr ? "paged (page_size " + std::to_string(problem.page_size) + ")"
                           : problem.is_varlen()         ? "packed, variable length"
                                                         : "dense (B, H, S, D)";
  const std::string why = problem.num_splits > 0 ? "num_splits " + std::to_string(problem.num_splits)
                                                 : "one wave on " + std::to_string(current_sm_count()) + " SMs";
  return "split-KV decode: " + std::to_string(problem.group_size()) + " query heads per kv head packed with " +
         std::to_string(problem.seqlen_q) + " queries into " + std::to_string(plan.layout.packed_rows) +
         " rows per (batch, kv head), " + std::to_string(plan.m_blocks) + " tiles of " +
         std::to_string(Traits::kBlockM) + "; key range in " + std::to_string(plan.layout.partials) + " parts (" + why +
         "); keys " + keys + "; workspace " + std::to_string(plan.layout.bytes()) + " bytes";
}

template <class Bias, DType kDType, int kHeadDim>
Status DecodeSm80<Bias, kDType, kHeadDim>::run(const AttentionProblem& problem, const BiasDesc& bias, void* workspace,
                                               std::size_t) {
  using Traits = KernelTraitsDecodeSm80<typename CuteElement<kDType>::type, kHeadDim>;
  return sm80::DecodeLaunch<Traits, Bias>::run(problem, Bias::make_params(bias), workspace);
}

}  // namespace sdpa
