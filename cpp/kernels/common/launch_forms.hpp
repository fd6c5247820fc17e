// Which instantiation of a forward kernel a launch takes: the BiasForm select_bias_form() chose for the
// problem, and whether the batch is variable-length. One rule for every forward family (sm80, sm90), so
// which forms and layouts are compiled cannot drift between them. Host-only, CUDA-free.
#pragma once

#include "common/params.hpp"
#include "sdpa/bias.hpp"
#include "sdpa/status.hpp"

namespace sdpa {

// Calls launcher.template launch<kForm, kVarlen>(). Variable-length batches compile the elementwise and
// split forms only (select_bias_form() never picks staging for them), and never for dense biases, which
// validate() keeps off them.
template <class Bias, class Launcher>
Status launch_in_form(const AttentionProblem& problem, BiasForm form, const Launcher& launcher) {
  if constexpr (Bias::kKind != BiasKind::kDense) {
    if (problem.is_varlen()) {
      if constexpr (Bias::kSplittable) {
        if (form == BiasForm::kSplit) return launcher.template launch<BiasForm::kSplit, true>();
      }
      return launcher.template launch<BiasForm::kElementwise, true>();
    }
  }
  if constexpr (Bias::kSplittable) {
    if (form == BiasForm::kSplit) return launcher.template launch<BiasForm::kSplit, false>();
  }
  if constexpr (Bias::kStagesTile) {
    if (form == BiasForm::kStaged) return launcher.template launch<BiasForm::kStaged, false>();
  }
  return launcher.template launch<BiasForm::kElementwise, false>();
}

}  // namespace sdpa
