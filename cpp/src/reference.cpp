// The host oracles every fused kernel is tested against, forward and backward. They evaluate the spec
// literally, one query row at a time, in double precision, and deliberately do not use the kernels' bias
// traits: a bug in a trait must show up as a mismatch, not be reproduced on both sides. The backward
// recomputes each row's softmax with the forward's own helpers, so the two oracles cannot disagree on P.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "reference_varlen.hpp"
#include "sdpa/sdpa.hpp"

namespace sdpa {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

Status invalid(std::string message) { return Status::error(StatusCode::kInvalidArgument, std::move(message)); }

// The checks validate() cannot make: the oracle reads plain floats, so everything must be fp32 (or a byte
// mask), while validate() accepts any dtype a kernel could read. `caller` names the entry point refusing.
Status check_reference_dtypes(const AttentionProblem& p, const BiasDesc& bias, const std::string& caller) {
  if (p.dtype != DType::kFloat32) {
    return invalid(caller + " needs dtype float32 for every tensor; got " + dtype_name(p.dtype));
  }
  if (bias.kind == BiasKind::kDense && bias.dense.dtype != DType::kFloat32 && bias.dense.dtype != DType::kBool) {
    return invalid(caller + " needs bias.dense.dtype float32 or bool; got " + dtype_name(bias.dense.dtype));
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

// The softmax of one row of scores: a weight per key (0 for removed keys) and the log-sum-exp. A row with
// no kept key has no softmax: its weights stay 0 and its LSE is -inf, so its output and gradients are 0,
// as the kernels promise.
struct RowSoftmax {
  std::vector<double> weights;
  double lse = kNegInf;
};

RowSoftmax row_softmax(const std::vector<double>& scores) {
  RowSoftmax row;
  row.weights.assign(scores.size(), 0.0);
  const double m = max_of(scores);
  if (m == kNegInf) return row;
  double sum = 0.0;
  for (size_t j = 0; j < scores.size(); ++j) {
    if (scores[j] == kNegInf) continue;
    row.weights[j] = std::exp(scores[j] - m);  // shifted by the max so nothing overflows
    sum += row.weights[j];
  }
  for (double& w : row.weights) w /= sum;
  row.lse = m + std::log(sum);
  return row;
}

// sum_j weights[j] * v[b, kv_head, j]: one output row, in fp64.
std::vector<double> weighted_values(const AttentionProblem& p, const std::vector<double>& weights, int b, int kv_head) {
  std::vector<double> out(p.head_dim, 0.0);
  for (int j = 0; j < p.seqlen_kv; ++j) {
    if (weights[j] == 0.0) continue;
    const float* v = row_of(p.v, b, kv_head, j);
    for (int d = 0; d < p.head_dim; ++d) out[d] += weights[j] * v[d];
  }
  return out;
}

// Writes output row (b, h, i); returns its log-sum-exp.
double attend_row(const AttentionProblem& p, const RowSoftmax& softmax, int b, int h, int i) {
  const std::vector<double> out = weighted_values(p, softmax.weights, b, h / p.group_size());
  float* o = writable_row_of(p.o, b, h, i);
  for (int d = 0; d < p.head_dim; ++d) o[d] = static_cast<float>(out[d]);
  return softmax.lse;
}

// fp64 sums for grad_k and grad_v, (B, heads_kv, Skv, D) contiguous: every query row of every head in a
// kv head's group adds to them, so they are stored only once all rows are done.
class KvGradientSums {
 public:
  explicit KvGradientSums(const AttentionProblem& p)
      : p_(p), k_(static_cast<size_t>(p.batch) * p.heads_kv * p.seqlen_kv * p.head_dim, 0.0), v_(k_.size(), 0.0) {}

  double* k_row(int b, int kv_head, int j) { return &k_[index(b, kv_head, j)]; }
  double* v_row(int b, int kv_head, int j) { return &v_[index(b, kv_head, j)]; }

  void store(const TensorView& grad_k, const TensorView& grad_v) const {
    for (int b = 0; b < p_.batch; ++b)
      for (int h = 0; h < p_.heads_kv; ++h)
        for (int j = 0; j < p_.seqlen_kv; ++j) {
          float* dk = writable_row_of(grad_k, b, h, j);
          float* dv = writable_row_of(grad_v, b, h, j);
          for (int d = 0; d < p_.head_dim; ++d) {
            dk[d] = static_cast<float>(k_[index(b, h, j) + d]);
            dv[d] = static_cast<float>(v_[index(b, h, j) + d]);
          }
        }
  }

 private:
  size_t index(int b, int kv_head, int j) const {
    return ((static_cast<size_t>(b) * p_.heads_kv + kv_head) * p_.seqlen_kv + j) * p_.head_dim;
  }

  const AttentionProblem& p_;
  std::vector<double> k_, v_;
};

// Query row (b, h, i)'s part of the backward, with P its softmax and O = P V recomputed in fp64:
//   dP_j = dO . v_j,  dS_j = P_j (dP_j - dO . O),  dQ = scale * sum_j dS_j k_j,
//   dK_j += scale * dS_j q,  dV_j += P_j dO.
// Writes the dQ row (0 for a row with no kept key, whose P is 0) and adds to the dK and dV sums.
void backprop_row(const BackwardProblem& problem, const RowSoftmax& softmax, int b, int h, int i,
                  KvGradientSums& sums) {
  const AttentionProblem& p = problem.forward;
  const int kv_head = h / p.group_size();
  const float* q = row_of(p.q, b, h, i);
  const float* d_o = row_of(problem.grad_o, b, h, i);
  const std::vector<double> o = weighted_values(p, softmax.weights, b, kv_head);
  double d_o_dot_o = 0.0;
  for (int d = 0; d < p.head_dim; ++d) d_o_dot_o += d_o[d] * o[d];
  std::vector<double> dq(p.head_dim, 0.0);
  // The bias adds to the logit, so its gradient is dS itself (0 for a removed key).
  float* grad_bias = problem.grad_bias.data != nullptr ? writable_row_of(problem.grad_bias, b, h, i) : nullptr;
  for (int j = 0; j < p.seqlen_kv; ++j) {
    const double weight = softmax.weights[j];
    if (grad_bias != nullptr) grad_bias[j] = 0.0f;
    if (weight == 0.0) continue;  // a removed key: no gradient flows through it
    const float* k = row_of(p.k, b, kv_head, j);
    const double ds = weight * (dot(d_o, row_of(p.v, b, kv_head, j), p.head_dim) - d_o_dot_o);
    if (grad_bias != nullptr) grad_bias[j] = static_cast<float>(ds);
    double* dk = sums.k_row(b, kv_head, j);
    double* dv = sums.v_row(b, kv_head, j);
    for (int d = 0; d < p.head_dim; ++d) {
      dq[d] += p.scale * ds * k[d];
      dk[d] += p.scale * ds * q[d];
      dv[d] += weight * d_o[d];
    }
  }
  float* grad_q = writable_row_of(problem.grad_q, b, h, i);
  for (int d = 0; d < p.head_dim; ++d) grad_q[d] = static_cast<float>(dq[d]);
}

}  // namespace

Status reference_forward(const AttentionProblem& problem, const BiasDesc& bias) {
  if (Status s = validate(problem, bias); !s.ok()) return s;
  if (Status s = check_reference_dtypes(problem, bias, "reference_forward"); !s.ok()) return s;
  if (problem.is_varlen()) return reference_forward_varlen(problem, bias);
  for (int b = 0; b < problem.batch; ++b) {
    for (int h = 0; h < problem.heads_q; ++h) {
      for (int i = 0; i < problem.seqlen_q; ++i) {
        const double lse = attend_row(problem, row_softmax(row_scores(problem, bias, b, h, i)), b, h, i);
        if (problem.lse != nullptr) {
          problem.lse[(static_cast<int64_t>(b) * problem.heads_q + h) * problem.seqlen_q + i] = static_cast<float>(lse);
        }
      }
    }
  }
  return Status::success();
}

Status reference_backward(const BackwardProblem& problem, const BiasDesc& bias) {
  // The kernels' preconditions, lse included although the oracle recomputes the softmax: a problem the
  // oracle accepts is one backward() accepts too.
  if (Status s = validate_backward(problem, bias); !s.ok()) return s;
  const AttentionProblem& p = problem.forward;
  if (Status s = check_reference_dtypes(p, bias, "reference_backward"); !s.ok()) return s;
  KvGradientSums sums(p);
  for (int b = 0; b < p.batch; ++b) {
    for (int h = 0; h < p.heads_q; ++h) {
      for (int i = 0; i < p.seqlen_q; ++i) {
        backprop_row(problem, row_softmax(row_scores(p, bias, b, h, i)), b, h, i, sums);
      }
    }
  }
  sums.store(problem.grad_k, problem.grad_v);
  return Status::success();
}

}  // namespace sdpa
