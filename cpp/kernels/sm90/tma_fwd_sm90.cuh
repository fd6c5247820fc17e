// TMA descriptors of Q, K and V for the sm90 forward on the (batch, head, seq, dim) layouts of a dense problem:
// the producer then issues one bulk copy per tile from one thread instead of 128 threads' cp.async, and the
// hardware zero-fills rows past the sequence. Variable-length batches (packed or paged keys) keep cp.async.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/tensor.hpp>

#include "common/params.hpp"  // BiasForm
#include "common/tile_scheduler.hpp"
#include "sm90/bias_tile_sm90.cuh"

#include "sdpa/problem.hpp"
#include "sdpa/status.hpp"

namespace sdpa {
namespace sm90 {

template <class Traits>
struct TmaFwd {
  using Element = typename Traits::Element;
  static constexpr int kHeadDim = Traits::kHeadDim;
  using Shape4 = cute::Shape<int32_t, int32_t, int32_t, int32_t>;  // (seq, dim, head, batch)
  using Stride4 = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;
  using GTensor = decltype(cute::make_tensor(cute::make_gmem_ptr(static_cast<const Element*>(nullptr)),
                                             std::declval<Shape4>(), std::declval<Stride4>()));
  template <class SmemLayout, int kRows>
  using Copy = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, std::declval<GTensor>(), SmemLayout{},
                                            cute::Shape<cute::Int<kRows>, cute::Int<kHeadDim>>{}, cute::_1{}));
  using CopyQ = Copy<typename Traits::SmemLayoutQ, Traits::kBlockM>;
  using CopyKV = Copy<typename Traits::SmemLayoutKV, Traits::kBlockN>;

  CopyQ q;
  CopyKV k, v;
  Shape4 shape_q, shape_kv;

  static constexpr uint32_t kBytesQ = Traits::kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kBytesKV = Traits::kBlockN * kHeadDim * sizeof(Element);

  // Host: the descriptors of `problem` (dense layout, rows 16-byte aligned: can_implement checked both).
  static TmaFwd make(const AttentionProblem& problem) {
    using namespace cute;
    TmaFwd t;
    // Extents of at least 1 (the descriptor has no empty dims; empty ranges are never loaded); the stride of
    // an extent-1 dim is never multiplied by a nonzero index, so it takes any value TMA accepts.
    t.shape_q = Shape4{std::max(problem.seqlen_q, 1), kHeadDim, problem.heads_q, problem.batch};
    t.shape_kv = Shape4{std::max(problem.seqlen_kv, 1), kHeadDim, problem.heads_kv, problem.batch};
    t.q = make_tma_copy(SM90_TMA_LOAD{}, tensor(problem.q, t.shape_q), typename Traits::SmemLayoutQ{},
                        Shape<Int<Traits::kBlockM>, Int<kHeadDim>>{}, _1{});
    t.k = make_tma_copy(SM90_TMA_LOAD{}, tensor(problem.k, t.shape_kv), typename Traits::SmemLayoutKV{},
                        Shape<Int<Traits::kBlockN>, Int<kHeadDim>>{}, _1{});
    t.v = make_tma_copy(SM90_TMA_LOAD{}, tensor(problem.v, t.shape_kv), typename Traits::SmemLayoutKV{},
                        Shape<Int<Traits::kBlockN>, Int<kHeadDim>>{}, _1{});
    return t;
  }

 private:
  static GTensor tensor(const TensorView& view, const Shape4& shape) {
    using namespace cute;
    const int64_t seq = get<0>(shape) > 1 ? view.stride_seq : kHeadDim;
    const int64_t head = get<2>(shape) > 1 ? view.stride_head : seq * get<0>(shape);
    const int64_t batch = get<3>(shape) > 1 ? view.stride_batch : head * get<2>(shape);
    return make_tensor(make_gmem_ptr(static_cast<const Element*>(view.data)), shape,
                       Stride4{seq, _1{}, head, batch});
  }
};

// Whether TMA can describe the dense problem's Q, K and V: every dim that has more than one index needs a
// positive stride below 2^40 bytes (a broadcast dim, stride 0, cannot be a TMA dim). Rows 16-byte aligned are
// checked apart (check_rows_16b_aligned). A variable-length batch needs no TMA.
inline Status check_tma_layout(const AttentionProblem& problem) {
  if (problem.cu_seqlens_q != nullptr) return Status::success();
  constexpr int64_t kLimit = int64_t(1) << 39;  // elements of 2 bytes: 2^40 bytes
  auto bad = [&](const TensorView& view, int seqlen, int heads) {
    auto dim_bad = [&](int extent, int64_t stride) { return extent > 1 && (stride <= 0 || stride >= kLimit); };
    return dim_bad(seqlen, view.stride_seq) || dim_bad(heads, view.stride_head) ||
           dim_bad(problem.batch, view.stride_batch);
  };
  for (auto [name, view, seqlen, heads] : {std::tuple{"q", problem.q, problem.seqlen_q, problem.heads_q},
                                           std::tuple{"k", problem.k, problem.seqlen_kv, problem.heads_kv},
                                           std::tuple{"v", problem.v, problem.seqlen_kv, problem.heads_kv}}) {
    if (bad(view, seqlen, heads)) {
      return Status::error(StatusCode::kUnsupported, std::string(name) +
                           " has a zero, negative or huge stride, which a TMA descriptor cannot hold (fwd_sm90)");
    }
  }
  return Status::success();
}

// What a TMA-less launch (a variable-length batch) carries in its place.
struct NoTma {};

template <class Traits, bool kVarlen>
using TmaFor = std::conditional_t<kVarlen, NoTma, TmaFwd<Traits>>;
// The bias tile's descriptor, in the staged form (dense biases only, never variable-length: launch_in_form).
template <class Traits, BiasForm kForm>
using BiasTmaFor = std::conditional_t<kForm == BiasForm::kStaged,
                                      typename BiasTileSm90<Traits::kBlockM, Traits::kBlockN>::Tma, NoTma>;

// The sm90 kernel's parameters: the forward's, plus the TMA descriptors where the launch uses them (they live
// in the kernel's parameter space, as TMA wants: __grid_constant__) and a persistent launch's schedule.
template <class Base, class Tma, class BiasTma>
struct FwdParamsSm90 : Base {
  Tma tma;
  BiasTma bias_tile;  // staged form only
  PersistentTileSchedulerFwd::Params sched;
};

}  // namespace sm90
}  // namespace sdpa
