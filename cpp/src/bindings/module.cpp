// sdpa_core._C: the thin layer between Python bias objects and libsdpa's descriptions.
//
// It sees integers only (pointers, shapes, strides, enum values), so it needs no torch headers; the Python
// side (python/sdpa_core/_kernels.py) turns tensors into those integers. The flat layouts below are the
// one contract between the two files: _kernels.problem_args(), _kernels.bias_args() and
// _kernels.grad_args() build them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "sdpa/sdpa.hpp"

namespace py = pybind11;

namespace {

// problem: dtype, batch, heads_q, heads_kv, seqlen_q, seqlen_kv, head_dim, then for q, k, v, o each
// (data_ptr, stride_batch, stride_head, stride_seq), then lse_ptr (0 = none), stream, num_splits, and the
// variable-length batch (AttentionProblem; all 0 for a dense batch): cu_seqlens_q, cu_seqlens_kv,
// seqused_kv and page_table pointers, page_table_stride, page_size.
constexpr size_t kProblemFields = 7 + 4 * 4 + 3 + 6;
// bias: kind, causal, slopes_ptr, slopes_stride_batch, slopes_stride_head,
//       dense_ptr, dense_dtype, dense_stride_batch, dense_stride_head, dense_stride_q, dense_stride_kv
constexpr size_t kBiasFields = 11;
// grads (backward only): for grad_o, grad_q, grad_k, grad_v, grad_bias each (data_ptr, stride_batch,
// stride_head, stride_seq). grad_bias is optional (data_ptr 0: not wanted; only for a dense additive bias):
// a full (B, heads_q, Sq, Skv) tensor whose key stride is 1, the seq stride being its row stride. The
// backward's problem is the forward's layout with o = the forward's output and lse_ptr = the log-sum-exp
// that forward wrote.
constexpr size_t kGradFields = 5 * 4;

sdpa::TensorView view_at(const std::vector<int64_t>& f, size_t i) {
  return {reinterpret_cast<const void*>(f[i]), f[i + 1], f[i + 2], f[i + 3]};
}

sdpa::AttentionProblem make_problem(const std::vector<int64_t>& f, float scale) {
  if (f.size() != kProblemFields) throw std::invalid_argument("problem: wrong number of fields");
  sdpa::AttentionProblem p;
  p.dtype = static_cast<sdpa::DType>(f[0]);
  p.batch = static_cast<int>(f[1]);
  p.heads_q = static_cast<int>(f[2]);
  p.heads_kv = static_cast<int>(f[3]);
  p.seqlen_q = static_cast<int>(f[4]);
  p.seqlen_kv = static_cast<int>(f[5]);
  p.head_dim = static_cast<int>(f[6]);
  p.q = view_at(f, 7);
  p.k = view_at(f, 11);
  p.v = view_at(f, 15);
  p.o = view_at(f, 19);
  p.lse = reinterpret_cast<float*>(f[23]);
  p.stream = reinterpret_cast<void*>(f[24]);
  p.num_splits = static_cast<int>(f[25]);
  p.cu_seqlens_q = reinterpret_cast<const int*>(f[26]);
  p.cu_seqlens_kv = reinterpret_cast<const int*>(f[27]);
  p.seqused_kv = reinterpret_cast<const int*>(f[28]);
  p.page_table = reinterpret_cast<const int*>(f[29]);
  p.page_table_stride = static_cast<int>(f[30]);
  p.page_size = static_cast<int>(f[31]);
  p.scale = scale;
  return p;
}

sdpa::BiasDesc make_bias(const std::vector<int64_t>& f) {
  if (f.size() != kBiasFields) throw std::invalid_argument("bias: wrong number of fields");
  sdpa::BiasDesc b;
  b.kind = static_cast<sdpa::BiasKind>(f[0]);
  b.causal = static_cast<sdpa::CausalVariant>(f[1]);
  b.alibi = {reinterpret_cast<const float*>(f[2]), f[3], f[4]};
  b.dense = {reinterpret_cast<const void*>(f[5]), static_cast<sdpa::DType>(f[6]), f[7], f[8], f[9], f[10]};
  return b;
}

sdpa::BackwardProblem make_backward(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& g,
                                   bool deterministic) {
  if (g.size() != kGradFields) throw std::invalid_argument("grads: wrong number of fields");
  sdpa::BackwardProblem p;
  p.forward = make_problem(problem, scale);
  p.grad_o = view_at(g, 0);
  p.grad_q = view_at(g, 4);
  p.grad_k = view_at(g, 8);
  p.grad_v = view_at(g, 12);
  p.grad_bias = view_at(g, 16);
  p.deterministic = deterministic;
  return p;
}

// "" when the kernel ran, or the reason no kernel covers the problem (the caller falls back or says why).
// Broken preconditions and CUDA errors raise: those must never turn into a silent fallback.
std::string ran_or_reason(const sdpa::Status& status) {
  switch (status.code) {
    case sdpa::StatusCode::kOk: return "";
    case sdpa::StatusCode::kNotCompiled:
    case sdpa::StatusCode::kUnsupported: return status.message;
    case sdpa::StatusCode::kInvalidArgument: throw std::invalid_argument("sdpa: " + status.message);
    default: throw std::runtime_error("sdpa: " + status.message);
  }
}

// The forward into the caller's workspace (forward_workspace_size() bytes; 0 and a null pointer where
// that size is 0).
std::string forward(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias,
                    int64_t workspace_ptr, int64_t workspace_bytes) {
  if (workspace_bytes < 0) throw std::invalid_argument("sdpa: workspace_bytes must be >= 0");
  return ran_or_reason(sdpa::forward(make_problem(problem, scale), make_bias(bias),
                                     reinterpret_cast<void*>(workspace_ptr), static_cast<std::size_t>(workspace_bytes)));
}

// forward() into a workspace the caller keeps between calls: ("", 0) ran, (reason, 0) no kernel fits, ("", n)
// nothing ran because the kernel needs n bytes, more than workspace_bytes (the caller grows it and retries).
py::tuple forward_in_workspace(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias,
                               int64_t workspace_ptr, int64_t workspace_bytes) {
  if (workspace_bytes < 0) throw std::invalid_argument("sdpa: workspace_bytes must be >= 0");
  std::size_t needed = 0;
  const sdpa::Status status = sdpa::forward(make_problem(problem, scale), make_bias(bias),
                                            reinterpret_cast<void*>(workspace_ptr),
                                            static_cast<std::size_t>(workspace_bytes), &needed);
  if (needed > static_cast<std::size_t>(workspace_bytes)) return py::make_tuple(std::string(), needed);
  return py::make_tuple(ran_or_reason(status), std::size_t{0});
}

std::size_t forward_workspace_size(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias) {
  return sdpa::forward_workspace_size(make_problem(problem, scale), make_bias(bias));
}

// (kernel name or "", reason or "") without launching anything.
py::tuple select_forward(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias) {
  sdpa::KernelChoice choice = sdpa::select_forward(make_problem(problem, scale), make_bias(bias));
  return py::make_tuple(choice.kernel, choice.status.message);
}

// What the chosen forward kernel does for this problem beyond its name ("" when its family says nothing).
std::string describe_forward(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias) {
  return sdpa::select_forward(make_problem(problem, scale), make_bias(bias)).details;
}

// The backward of a forward() call; the workspace (backward_workspace_size() bytes) belongs to the caller.
std::string backward(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias,
                     const std::vector<int64_t>& grads, bool deterministic, int64_t workspace_ptr,
                     int64_t workspace_bytes) {
  if (workspace_bytes < 0) throw std::invalid_argument("sdpa: workspace_bytes must be >= 0");
  const sdpa::BackwardProblem p = make_backward(problem, scale, grads, deterministic);
  return ran_or_reason(sdpa::backward(p, make_bias(bias), reinterpret_cast<void*>(workspace_ptr),
                                      static_cast<std::size_t>(workspace_bytes)));
}

py::tuple select_backward(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias,
                          const std::vector<int64_t>& grads, bool deterministic) {
  sdpa::KernelChoice choice =
      sdpa::select_backward(make_backward(problem, scale, grads, deterministic), make_bias(bias));
  return py::make_tuple(choice.kernel, choice.status.message);
}

std::size_t backward_workspace_size(const std::vector<int64_t>& problem, float scale, const std::vector<int64_t>& bias,
                                    const std::vector<int64_t>& grads, bool deterministic) {
  return sdpa::backward_workspace_size(make_backward(problem, scale, grads, deterministic), make_bias(bias));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Bindings of libsdpa: integers in, fused attention kernels out.";
  m.def("forward", &forward, "Run the fused forward kernel; returns \"\" or the reason none fits");
  m.def("forward_in_workspace", &forward_in_workspace,
        "Run the fused forward kernel in a kept workspace; returns (reason or \"\", bytes needed when too small)");
  m.def("forward_workspace_size", &forward_workspace_size,
        "Bytes of device workspace the forward kernel needs (0 when none would run or it needs none)");
  m.def("describe_forward", &describe_forward,
        "What the chosen forward kernel does for these inputs beyond its name (split count, packing, layout)");
  m.def("select_forward", &select_forward, "Name the fused kernel forward would run, or the reason none would");
  m.def("backward", &backward, "Run the fused backward kernel; returns \"\" or the reason none fits");
  m.def("select_backward", &select_backward,
        "Name the fused kernel backward would run, or the reason none would");
  m.def("backward_workspace_size", &backward_workspace_size,
        "Bytes of device workspace the backward kernel needs (0 when none would run)");
  m.def("compiled_kernels", &sdpa::compiled_kernels);
  m.def("built_with_cuda", &sdpa::built_with_cuda);

  m.attr("DTYPE_FLOAT16") = static_cast<int>(sdpa::DType::kFloat16);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(sdpa::DType::kBFloat16);
  m.attr("DTYPE_FLOAT32") = static_cast<int>(sdpa::DType::kFloat32);
  m.attr("DTYPE_BOOL") = static_cast<int>(sdpa::DType::kBool);
  m.attr("BIAS_NONE") = static_cast<int>(sdpa::BiasKind::kNone);
  m.attr("BIAS_ALIBI") = static_cast<int>(sdpa::BiasKind::kAlibi);
  m.attr("BIAS_DENSE") = static_cast<int>(sdpa::BiasKind::kDense);
  m.attr("CAUSAL_NONE") = static_cast<int>(sdpa::CausalVariant::kNone);
  m.attr("CAUSAL_UPPER_LEFT") = static_cast<int>(sdpa::CausalVariant::kUpperLeft);
  m.attr("CAUSAL_LOWER_RIGHT") = static_cast<int>(sdpa::CausalVariant::kLowerRight);
  // Query rows up to which a forward may pick a split-KV decode kernel, which needs a workspace.
  m.attr("SPLIT_KV_MAX_SEQLEN_Q") = sdpa::kSplitKvMaxSeqlenQ;
  m.attr("PROBLEM_FIELDS") = static_cast<int>(kProblemFields);  // python/sdpa_core/_kernels.py checks these
  m.attr("BIAS_FIELDS") = static_cast<int>(kBiasFields);
  m.attr("GRAD_FIELDS") = static_cast<int>(kGradFields);
}
