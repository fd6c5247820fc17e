// The forward kernels' parameters, arch-free: what every forward mainloop and epilogue reads, built once
// on the host from an AttentionProblem and a BiasDesc.
//
// Host-compilable (no CUDA headers); kernels receive FwdParams by value as a __grid_constant__.
#pragma once

#include <cmath>

#include "common/seq_info.hpp"
#include "sdpa/bias.hpp"
#include "sdpa/problem.hpp"

namespace sdpa {

// How a kernel evaluates the bias in one launch (a template argument of the kernel, so a launch pays only
// for its own form), chosen on the host per problem by select_bias_form():
//   kElementwise  the trait's score() / value() per element;
//   kSplit        the split form: the row part goes to the LSE, the column part into the accumulator's
//                 initial value (BiasTrait::split_holds, a positive finite scale);
//   kStaged       values read from a tile staged in shared memory with each K tile (BiasTrait::stageable).
enum class BiasForm : int { kElementwise, kSplit, kStaged };

// Whether the split form holds whatever the sequence's lengths: a variable-length batch's lengths live on
// the device, so the host can only pick a form that is right for all of them (lower-right causal ALiBi,
// whose mask and additive part share one diagonal; upper-left needs Skv >= Sq, which fails at (1, 0)).
template <class Bias>
bool split_holds_for_any_lengths() {
  if constexpr (Bias::kSplittable) return Bias::split_holds(1, 0) && Bias::split_holds(0, 1);
  return false;
}

// Whether the scale can be folded into the exponent (softmax_c): a positive finite scale. The split and staged
// forms put a bias into the accumulator divided by the scale, so they need it too.
inline bool scale_folds(float scale) { return scale > 0.0f && std::isfinite(scale); }

template <class Bias>
BiasForm select_bias_form(const AttentionProblem& problem, const typename Bias::Params& bias_params) {
  if (problem.is_varlen()) {
    // The varlen kernels compile the elementwise and split forms only (staging needs the dense layout's
    // row count to bound its reads).
    const bool split = split_holds_for_any_lengths<Bias>() && scale_folds(problem.scale);
    return split ? BiasForm::kSplit : BiasForm::kElementwise;
  }
  if constexpr (Bias::kSplittable) {
    if (Bias::split_holds(problem.seqlen_q, problem.seqlen_kv) && scale_folds(problem.scale)) return BiasForm::kSplit;
  }
  if constexpr (Bias::kStagesTile) {
    // The sm90 kernel folds the scale into the exponent in the staged form too (make_fwd_params).
    if (Bias::stageable(bias_params) && scale_folds(problem.scale)) return BiasForm::kStaged;
  }
  return BiasForm::kElementwise;
}

template <class BiasParams>
struct FwdParams {
  TensorView q, k, v;
  TensorView o;          // written: its data is the caller's writable buffer
  float* lse = nullptr;  // optional, (B, Hq, Sq) contiguous
  int seqlen_q, seqlen_kv, heads_q, group_size;
  float scale;      // applied to Q K^T before any bias
  float inv_scale;  // 1 / scale, for the split form's column parts
  float softmax_c;  // the softmax sees x with logit * log2(e) = x * softmax_c, softmax_c > 0
  bool prescale;    // x = S * scale; otherwise (bias-free, scale > 0) x = S and the scale is in softmax_c
  SeqLayout seq;    // variable-length batches and paged keys (SeqInfo); null pointers: the dense layout
  BiasParams bias;
};

// staged_in_accumulator: the kernel adds a staged bias tile to the accumulator before Q K^T (sm90) rather than
// to the scaled scores (sm80), so that form may fold the scale as the split form does.
template <class Bias>
FwdParams<typename Bias::Params> make_fwd_params(const AttentionProblem& problem,
                                                 const typename Bias::Params& bias_params, BiasForm form,
                                                 bool staged_in_accumulator = false) {
  constexpr float kLog2e = 1.4426950408889634f;
  FwdParams<typename Bias::Params> p;
  p.q = problem.q;
  p.k = problem.k;
  p.v = problem.v;
  p.o = problem.o;
  p.lse = problem.lse;
  p.seqlen_q = problem.seqlen_q;
  p.seqlen_kv = problem.seqlen_kv;
  p.heads_q = problem.heads_q;
  p.group_size = problem.group_size();
  p.scale = problem.scale;
  p.inv_scale = 1.0f / problem.scale;
  // Folding the scale into the exponent (one FMA per score) is only valid for a positive finite scale,
  // and only without an additive bias, which must be added to the scaled score, or where the bias went into
  // the accumulator divided by the scale (the split form; the staged form of some kernels).
  const bool in_accumulator = form == BiasForm::kSplit || (form == BiasForm::kStaged && staged_in_accumulator);
  const bool fold = (!Bias::kHasValue || in_accumulator) && scale_folds(problem.scale);
  p.prescale = !fold;
  p.softmax_c = fold ? problem.scale * kLog2e : kLog2e;
  p.seq = SeqLayout::of(problem);
  p.bias = bias_params;
  return p;
}

}  // namespace sdpa
