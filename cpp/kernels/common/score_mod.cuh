// ScoreMod: the one policy through which a kernel applies a bias to a score tile, for every BiasForm.
//
// Arch-free: it sees a (row, col) view of the score accumulator and a same-shaped tensor of coordinates
// inside the tile (any MMA whose C fragment can be viewed that way: mma.sync, wgmma), plus the trait.
// The hooks, in the order a mainloop calls them per key tile:
//   init(acc_s, ...)            the accumulator's value before Q K^T (0; the column parts in the split form)
//   stage<...>(smem, ...)       issue the async copy of the bias tile with K (staged form, unmasked tiles)
//   apply<kMasked, ...>(s, ...) turn raw scores S into the softmax input x
//   init_from_tile / apply_mask the staged form of a kernel that stages tiles itself (sm90's TMA)
// and once per block, after the softmax:
//   adjust_lse(lse, ...)        add what the form left out of the scores (the split form's row parts).
// The backward pass recomputes P with the same hooks, so forward and backward cannot drift apart.
#pragma once

#include <cute/tensor.hpp>
#include <math_constants.h>

#include "common/params.hpp"
#include "common/tile_range.hpp"
#include "softmax.cuh"

namespace sdpa {

template <class Bias, BiasForm kForm>
struct ScoreMod {
  static constexpr bool kSplit = kForm == BiasForm::kSplit;
  static constexpr bool kStaged = kForm == BiasForm::kStaged;
  static_assert(!kSplit || Bias::kSplittable, "the split form needs a splittable trait");
  static_assert(!kStaged || Bias::kStagesTile, "the staged form needs a trait that stages tiles");

  Bias bias;
  int row0;  // the tile's first row: rows of the coordinate tensors are relative to it
  // The lengths of the block's sequence (a variable-length batch's own, not the problem's longest).
  int seqlen_q;
  int seqlen_kv;

  // Shared memory the staged form needs beside the kernel's own, for a (kRows x kCols) tile.
  template <class Element, int kRows, int kCols>
  static constexpr int smem_bytes() {
    if constexpr (kStaged) return Bias::template staged_tile_bytes<Element, kRows, kCols>();
    return 0;
  }

  // Split form: the tile's accumulator starts at column_part(j) / scale instead of 0, so the tensor cores
  // add Q K^T onto it and x = acc * scale comes out of the exponent's FMA as for a bias-free trait: ALiBi
  // then costs nothing per score. The row parts are added to the LSE by adjust_lse().
  template <class TensorAcc, class TensorC, class Params>
  __device__ __forceinline__ void init(TensorAcc& acc_s, TensorC const& coord, Params const& p, int col0) const {
    using namespace cute;
    if constexpr (kSplit) {
      Tensor s = acc_rowcol(acc_s);
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) {
        const float column = bias.column_part(col0 + get<1>(coord(0, k)), row0) * p.inv_scale;
#pragma unroll
        for (int r = 0; r < size<0>(s); ++r) s(r, k) = column;
      }
    } else {
      clear(acc_s);
    }
  }

  // Staged form: the bias tile of key tile n travels with K; unmasked tiles only (they lie inside the key
  // range, and apply() reads the staged values for them alone).
  template <class Element, int kRows, int kCols, int kThreads>
  __device__ __forceinline__ void stage(char* smem, TileRange const& range, int n, int seqlen_q, int thread) const {
    if constexpr (kStaged) {
      if (!range.needs_mask(n)) {
        bias.template stage_tile<Element, kRows, kCols, kThreads>(smem, row0, n * kCols, seqlen_q, thread);
      }
    }
  }

  // Turns raw scores S of the key tile starting at column col0 into the softmax input x.
  template <bool kMasked, class Element, int kCols, class TensorS, class TensorC, class Params>
  __device__ __forceinline__ void apply(TensorS& s, TensorC const& coord, Params const& p, int col0,
                                        const char* staged) const {
    if constexpr (kSplit) {
      if constexpr (kMasked) apply_mask(s, coord, p, col0);
    } else if constexpr (kStaged && !kMasked) {
      apply_staged<Element, kCols>(s, coord, p, staged);
    } else {
      apply_elementwise<kMasked, Element>(s, coord, p, col0);
    }
  }

  // Staged form, for a kernel that stages every key tile as raw bytes itself (sm90, by TMA; Tile says where a
  // byte of a staged row lies): as in the split form, the accumulator starts at the tile's values / scale, so
  // that Q K^T lands on them and x = acc * scale comes out of the exponent's FMA (the family folds the scale:
  // FwdParams::prescale is false, and select_bias_form() staged only for scale > 0). Nothing is added after the
  // GEMM, and the registers that will hold S are free while the values are read. Masked tiles then take
  // apply_mask(). Branches on a mask's one-byte elements once per tile.
  template <class Element, class Tile, class TensorAcc, class TensorC, class Params>
  __device__ __forceinline__ void init_from_tile(TensorAcc& acc_s, TensorC const& coord, Params const& p,
                                                 uint32_t stage) const {
    if (bias.template staged_bytes<Element>() == 1) {
      init_pairs<Element, 1, Tile>(acc_s, coord, p, stage);
    } else {
      init_pairs<Element, int(sizeof(Element)), Tile>(acc_s, coord, p, stage);
    }
  }
  // The element mask alone (causal, keys past seqlen_kv), for masked tiles of the split form and of
  // init_from_tile.
  template <class TensorS, class TensorC, class Params>
  __device__ __forceinline__ void apply_mask(TensorS& s, TensorC const& coord, Params const& p, int col0) const {
    using namespace cute;
#pragma unroll
    for (int r = 0; r < size<0>(s); ++r) {
      const int i = row0 + get<0>(coord(r, 0));
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) {
        const int j = col0 + get<1>(coord(r, k));
        if (j >= seqlen_kv || bias.masked(i, j)) s(r, k) = -CUDART_INF_F;
      }
    }
  }

  // The row parts init() left out (-inf stays -inf).
  template <int kNRows, class TensorC>
  __device__ __forceinline__ void adjust_lse(float (&lse)[kNRows], TensorC const& coord) const {
    using namespace cute;
    if constexpr (kSplit) {
#pragma unroll
      for (int r = 0; r < kNRows; ++r) lse[r] += bias.row_part(row0 + get<0>(coord(r, 0)), row0);
    }
  }

  // The backward's inverse of adjust_lse: the LSE of the scores as this form computes them, so that
  // exp(x - lse) recomputes P exactly (-inf stays -inf).
  template <int kNRows, class TensorC>
  __device__ __forceinline__ void unadjust_lse(float (&lse)[kNRows], TensorC const& coord) const {
    using namespace cute;
    if constexpr (kSplit) {
#pragma unroll
      for (int r = 0; r < kNRows; ++r) lse[r] -= bias.row_part(row0 + get<0>(coord(r, 0)), row0);
    }
  }

 private:
  // Masked tiles evaluate the trait's score (causal mask and keys past seqlen_kv become -inf); unmasked
  // tiles are known fully valid, so a bias-free trait does nothing there and an additive one only adds
  // its value.
  template <bool kMasked, class Element, class TensorS, class TensorC, class Params>
  __device__ __forceinline__ void apply_elementwise(TensorS& s, TensorC const& coord, Params const& p,
                                                    int col0) const {
    using namespace cute;
    const bool prescale = Bias::kHasValue || p.prescale;  // additive biases need the true scaled score
    if (!kMasked && !prescale) return;
#pragma unroll
    for (int r = 0; r < size<0>(s); ++r) {
      const int i = row0 + get<0>(coord(r, 0));
      // Rows past seqlen_q are computed but never stored; clamping keeps a dense bias read in bounds.
      const int i_read = i < seqlen_q ? i : seqlen_q - 1;
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) {
        const int j = col0 + get<1>(coord(r, k));
        const float scaled = prescale ? s(r, k) * p.scale : s(r, k);
        if constexpr (kMasked) {
          s(r, k) = j >= seqlen_kv ? -CUDART_INF_F : bias.template score<Element>(scaled, i_read, j);
        } else if constexpr (Bias::kHasValue) {
          s(r, k) = scaled + bias.template value<Element>(i_read, j);
        } else {
          s(r, k) = scaled;
        }
      }
    }
  }

  // Staged form, unmasked tiles: x = S * scale + the value read from the staged tile.
  template <class Element, int kCols, class TensorS, class TensorC, class Params>
  __device__ __forceinline__ void apply_staged(TensorS& s, TensorC const& coord, Params const& p,
                                               const char* staged) const {
    using namespace cute;
#pragma unroll
    for (int r = 0; r < size<0>(s); ++r) {
      const int row = get<0>(coord(r, 0));
#pragma unroll
      for (int k = 0; k < size<1>(s); ++k) {
        s(r, k) = fmaf(s(r, k), p.scale, bias.template staged_value<Element, kCols>(staged, row, get<1>(coord(r, k))));
      }
    }
  }

  // init_from_tile's loop. An MMA accumulator fragment (mma.sync and wgmma alike) holds each row's columns in
  // adjacent pairs (k even: columns c and c + 1), so one load brings both values; a thread's columns are its
  // first one plus compile-time offsets (Tile::row, Tile::load_pair).
  template <class Element, int kBytes, class Tile, class TensorAcc, class TensorC, class Params>
  __device__ __forceinline__ void init_pairs(TensorAcc& acc_s, TensorC const& coord, Params const& p,
                                             uint32_t stage) const {
    using namespace cute;
    Tensor s = acc_rowcol(acc_s);
    static_assert(decltype(size<1>(s))::value % 2 == 0, "columns come in pairs");
    const int first_col = get<1>(coord(0, 0));
#pragma unroll
    for (int r = 0; r < size<0>(s); ++r) {
      const auto row = Tile::row(stage, bias.staged_row(get<0>(coord(r, 0))), first_col * kBytes);
#pragma unroll
      for (int k = 0; k < size<1>(s); k += 2) {
        const int offset = (get<1>(coord(r, k)) - first_col) * kBytes;
        const float2 v = bias.template staged_pair<Element, kBytes>(Tile::template load_pair<kBytes>(row, offset));
        s(r, k) = v.x * p.inv_scale;
        s(r, k + 1) = v.y * p.inv_scale;
      }
    }
  }
};

}  // namespace sdpa
