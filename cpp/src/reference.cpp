// The host oracle every fused kernel is tested against. It evaluates the spec literally, one query row at
// a time, in double precision, and deliberately does not use the kernels' bias traits: a bug in a trait
// must show up as a mismatch, not be reproduced on both sides.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "sdpa/sdpa.hpp"

namespace sdpa {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

Status invalid(std::string message) { return Status::error(StatusCode::kInvalidArgument, std::move(message)); }

// The checks validate() cannot make: the oracle reads plain floats, so everything must be fp32 (or a byte
// mask), while validate() accepts any dtype a kernel could read.
Status check_reference_dtypes(const AttentionProblem& p, const BiasDesc& bias) {
  if (p.dtype != DType::kFloat32) {
    return invalid(std::string("reference_forward needs dtype float32 for q, k, v and o; got ") + dtype_name(p.dtype));
  }
  if (bias.kind == BiasKind::kDense && bias.dense.dtype != DType::kFloat32 && bias.dense.dtype != DType::kBool) {
    return invalid(std::string("reference_forward needs bias.dense.dtype float32 or bool; got ") +
                   dtype_name(bias.dense.dtype));
  }
  return Status::success();
}

// Element offset of row `seq` of head `head` in batch `batch`; the dim stride is 1 by contract.
int64_t row_offset(const TensorView& view, int batch, int head, int seq) {
  return batch * view.stride_batch + head * view.stride_head + seq * view.stride_seq;
}

const float* row_of(const TensorView& view, int batch, int head, int seq) {
  return static_cast<const float*>(view.data) + row_offset(view, batch, head, seq);
}

// o is declared const in TensorView so one type serves inputs and output; it is the caller's writable buffer.
float* writable_row_of(const TensorView& view, int batch, int head, int seq) {
  return const_cast<float*>(row_of(view, batch, head, seq));
}

double dot(const float* a, const float* b, int n) {
  double sum = 0.0;
  for (int d = 0; d < n; ++d) sum += static_cast<double>(a[d]) * static_cast<double>(b[d]);
  return sum;
}

bool causally_kept(CausalVariant causal, int i, int j, int seqlen_q, int seqlen_kv) {
  switch (causal) {
    case CausalVariant::kNone: return true;
    case CausalVariant::kUpperLeft: return j <= i;
    case CausalVariant::kLowerRight: return j <= i + (seqlen_kv - seqlen_q);
  }
  return true;
}

// -slope[b, h] * |i + (Skv - Sq) - j|: distance measured from the lower-right diagonal.
double alibi_value(const AlibiDesc& alibi, int b, int h, int i, int j, int seqlen_q, int seqlen_kv) {
  const double slope = alibi.slopes[b * alibi.stride_batch + h * alibi.stride_head];
  const double distance = std::fabs(static_cast<double>(i) + (seqlen_kv - seqlen_q) - j);
  return -slope * distance;
}

// A dense additive value, or -inf where a bool mask removes the key or the value is below kMaskedBelow.
double dense_value(const DenseDesc& dense, int b, int h, int i, int j) {
  const int64_t index = b * dense.stride_batch + h * dense.stride_head + i * dense.stride_q + j * dense.stride_kv;
  if (dense.is_mask()) return static_cast<const unsigned char*>(dense.data)[index] != 0 ? 0.0 : kNegInf;
  const double value = static_cast<const float*>(dense.data)[index];
  return value < kMaskedBelow ? kNegInf : value;
}

// What the bias adds to score (i, j); -inf means the key is removed.
double bias_value(const AttentionProblem& p, const BiasDesc& bias, int b, int h, int i, int j) {
  if (!causally_kept(bias.causal, i, j, p.seqlen_q, p.seqlen_kv)) return kNegInf;
  switch (bias.kind) {
    case BiasKind::kNone: return 0.0;
    case BiasKind::kAlibi: return alibi_value(bias.alibi, b, h, i, j, p.seqlen_q, p.seqlen_kv);
    case BiasKind::kDense: return dense_value(bias.dense, b, h, i, j);
  }
  return 0.0;
}

// Biased scores of query row (b, h, i) against every key; -inf for removed keys.
std::vector<double> row_scores(const AttentionProblem& p, const BiasDesc& bias, int b, int h, int i) {
  const int kv_head = h / p.group_size();
  const float* q = row_of(p.q, b, h, i);
  std::vector<double> scores(p.seqlen_kv);
  for (int j = 0; j < p.seqlen_kv; ++j) {
    const double added = bias_value(p, bias, b, h, i, j);
    // Skip the dot product for removed keys so that inf * 0 can never turn a removal into NaN.
    scores[j] = std::isinf(added) && added < 0 ? kNegInf
                                               : p.scale * dot(q, row_of(p.k, b, kv_head, j), p.head_dim) + added;
  }
  return scores;
}

double max_of(const std::vector<double>& values) {
  double m = kNegInf;
  for (double x : values) m = x > m ? x : m;
  return m;
}

// Softmax over the row, applied to v, written to o; returns the row's log-sum-exp. A row with no kept key
// has no softmax: its output is 0 and its LSE -inf, as the kernels promise.
double attend_row(const AttentionProblem& p, const std::vector<double>& scores, int b, int h, int i) {
  const int kv_head = h / p.group_size();
  float* o = writable_row_of(p.o, b, h, i);
  const double m = max_of(scores);
  if (m == kNegInf) {
    for (int d = 0; d < p.head_dim; ++d) o[d] = 0.0f;
    return kNegInf;
  }
  std::vector<double> acc(p.head_dim, 0.0);
  double sum = 0.0;
  for (int j = 0; j < p.seqlen_kv; ++j) {
    if (scores[j] == kNegInf) continue;
    const double weight = std::exp(scores[j] - m);  // shifted by the max so nothing overflows
    const float* v = row_of(p.v, b, kv_head, j);
    for (int d = 0; d < p.head_dim; ++d) acc[d] += weight * v[d];
    sum += weight;
  }
  for (int d = 0; d < p.head_dim; ++d) o[d] = static_cast<float>(acc[d] / sum);
  return m + std::log(sum);
}

}  // namespace

Status reference_forward(const AttentionProblem& problem, const BiasDesc& bias) {
  if (Status s = validate(problem, bias); !s.ok()) return s;
  if (Status s = check_reference_dtypes(problem, bias); !s.ok()) return s;
  for (int b = 0; b < problem.batch; ++b) {
    for (int h = 0; h < problem.heads_q; ++h) {
      for (int i = 0; i < problem.seqlen_q; ++i) {
        const double lse = attend_row(problem, row_scores(problem, bias, b, h, i), b, h, i);
        if (problem.lse != nullptr) {
          problem.lse[(static_cast<int64_t>(b) * problem.heads_q + h) * problem.seqlen_q + i] = static_cast<float>(lse);
        }
      }
    }
  }
  return Status::success();
}

}  // namespace sdpa
