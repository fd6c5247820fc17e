// select_forward()'s and select_backward()'s answers: which kernel, or why none, and validate_backward()'s
// refusals. Host-only: no tensor is ever read, so the problems point at a small aligned buffer. Checks that need a CUDA build or a visible device skip
// themselves elsewhere, so each machine checks what it can reach.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "device_info.hpp"
#include "kernel_registry.hpp"
#include "sdpa/sdpa.hpp"

namespace {

using sdpa::BiasDesc;
using sdpa::BiasKind;
using sdpa::CausalVariant;
using sdpa::DType;
using sdpa::StatusCode;

alignas(16) unsigned char g_storage[256];  // stands in for every device pointer; never dereferenced

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A valid bf16 problem whose pointers and strides satisfy the kernels' 16-byte alignment rule.
sdpa::AttentionProblem aligned_problem(DType dtype = DType::kBFloat16, int head_dim = 64) {
  sdpa::AttentionProblem p;
  p.dtype = dtype;
  p.batch = 2;
  p.heads_q = 4;
  p.heads_kv = 2;
  p.seqlen_q = 33;
  p.seqlen_kv = 65;
  p.head_dim = head_dim;
  auto view = [&](int heads, int seqlen) {
    const int64_t seq = head_dim, head = int64_t{seqlen} * head_dim;
    return sdpa::TensorView{g_storage, heads * head, head, seq};
  };
  p.q = view(p.heads_q, p.seqlen_q);
  p.k = view(p.heads_kv, p.seqlen_kv);
  p.v = view(p.heads_kv, p.seqlen_kv);
  p.o = view(p.heads_q, p.seqlen_q);
  p.scale = 0.125f;
  return p;
}

// The backward of aligned_problem(): every gradient aliases the operand of its shape (never read here).
sdpa::BackwardProblem aligned_backward_problem(DType dtype = DType::kBFloat16, int head_dim = 64) {
  sdpa::BackwardProblem p;
  p.forward = aligned_problem(dtype, head_dim);
  p.forward.lse = reinterpret_cast<float*>(g_storage);
  p.grad_o = p.grad_q = p.forward.q;
  p.grad_k = p.forward.k;
  p.grad_v = p.forward.v;
  return p;
}

bool device_visible() { return sdpa::current_compute_capability() > 0; }

// The forward family dispatch prefers on this device: the Hopper kernels where they are compiled
// (SDPA_BUILD_SM90, the same traits, dtypes and head dims as the sm80 ones) and the device is sm90.
std::string prefill_family();

// How many compiled kernels belong to `family` ("fwd_sm80", "bwd_sm80").
int count_family(const std::string& family) {
  const std::vector<std::string> names = sdpa::compiled_kernels();
  return static_cast<int>(std::count_if(names.begin(), names.end(),
                                        [&](const std::string& name) { return name.rfind(family + "<", 0) == 0; }));
}

std::string prefill_family() {
  return sdpa::current_compute_capability() >= 90 && count_family("fwd_sm90") > 0 ? "fwd_sm90" : "fwd_sm80";
}

// Every bias the API can express, with the parameters validate() wants present.
std::vector<BiasDesc> all_biases(DType dtype) {
  std::vector<BiasDesc> biases;
  for (BiasKind kind : {BiasKind::kNone, BiasKind::kAlibi, BiasKind::kDense}) {
    for (CausalVariant causal : {CausalVariant::kNone, CausalVariant::kUpperLeft, CausalVariant::kLowerRight}) {
      BiasDesc bias;
      bias.kind = kind;
      bias.causal = causal;
      bias.alibi.slopes = reinterpret_cast<const float*>(g_storage);
      bias.dense.data = g_storage;
      bias.dense.dtype = dtype;
      biases.push_back(bias);
    }
  }
  return biases;
}

TEST(Dispatch, CompiledKernelsMatchTheBuild) {
  const std::vector<std::string> names = sdpa::compiled_kernels();
  if (!sdpa::built_with_cuda()) {
    EXPECT_TRUE(names.empty()) << "a build without CUDA lists " << names.size() << " kernels";
    return;
  }
  EXPECT_FALSE(names.empty()) << "a CUDA build with no kernel in SDPA_KERNEL_* lists";
  std::set<std::string> trait_names;
  for (const BiasDesc& bias : all_biases(DType::kBFloat16)) trait_names.insert(sdpa::bias_trait_name(bias));
  const std::regex pattern(R"((?:(?:fwd|decode|bwd)_sm80|(?:fwd|bwd)_sm90)<(\w+), (bfloat16|float16), hd(\d+)>)");
  std::set<std::string> seen;
  for (const std::string& name : names) {
    std::smatch match;
    ASSERT_TRUE(std::regex_match(name, match, pattern)) << name;
    EXPECT_TRUE(trait_names.count(match[1])) << name << " names an unknown bias trait";
    EXPECT_TRUE(seen.insert(name).second) << name << " is listed twice";
  }
  // A Hopper kernel always has its sm80 twin, the fallback on older GPUs and on any refusal.
  for (const std::string& name : names) {
    for (const std::string family : {"fwd", "bwd"}) {
      if (name.rfind(family + "_sm90<", 0) == 0) {
        EXPECT_TRUE(seen.count(family + "_sm80" + name.substr(8))) << name << " has no " << family << "_sm80 twin";
      }
    }
  }
}

// validate() runs before anything else, so a bad argument is reported as such on every build.
TEST(Dispatch, InvalidArgumentsComeFirst) {
  sdpa::AttentionProblem p = aligned_problem();
  p.k.data = nullptr;
  const sdpa::KernelChoice choice = sdpa::select_forward(p, {});
  EXPECT_EQ(choice.status.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(choice.status.message, "k.data")) << choice.status.message;
  EXPECT_TRUE(choice.kernel.empty());
  EXPECT_EQ(sdpa::forward(p, {}).code, StatusCode::kInvalidArgument);
}

TEST(Dispatch, BuildWithoutCudaSaysSo) {
  if (sdpa::built_with_cuda()) GTEST_SKIP() << "this build has CUDA kernels";
  for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (const BiasDesc& bias : all_biases(dtype)) {
      const sdpa::KernelChoice choice = sdpa::select_forward(aligned_problem(dtype), bias);
      EXPECT_EQ(choice.status.code, StatusCode::kNotCompiled) << sdpa::bias_trait_name(bias);
      EXPECT_TRUE(contains(choice.status.message, "CUDA")) << choice.status.message;
      EXPECT_TRUE(choice.kernel.empty());
      // forward() never falls back: it gives the same refusal instead of computing anything.
      EXPECT_EQ(sdpa::forward(aligned_problem(dtype), bias).code, StatusCode::kNotCompiled);
    }
  }
}

// libsdpa allocates nothing: the caller asks how much workspace the chosen kernel needs. For a prefill
// problem that is none, or the Hopper forward's optional tile counter.
TEST(Dispatch, PrefillWorkspaceIsNoneOrTheHopperTileCounter) {
  for (const BiasDesc& bias : all_biases(DType::kBFloat16)) {
    const std::string kernel = sdpa::select_forward(aligned_problem(), bias).kernel;
    const std::size_t bytes = sdpa::forward_workspace_size(aligned_problem(), bias);
    if (kernel.rfind("fwd_sm90", 0) == 0) {
      EXPECT_LE(bytes, 16u) << kernel;
    } else {
      EXPECT_EQ(bytes, 0u) << kernel;
    }
  }
  if (sdpa::built_with_cuda()) return;  // the overload's refusals below are the no-CUDA build's
  EXPECT_EQ(sdpa::forward(aligned_problem(), {}, nullptr, 0).code, StatusCode::kNotCompiled);
  // The kept-workspace overload reports the size it would need (none: no kernel) with the same refusal.
  std::size_t needed = 7;
  EXPECT_EQ(sdpa::forward(aligned_problem(), {}, nullptr, 0, &needed).code, StatusCode::kNotCompiled);
  EXPECT_EQ(needed, 0u);
}

TEST(Dispatch, Float32HasNoFusedKernel) {
  if (!sdpa::built_with_cuda()) GTEST_SKIP() << "built without CUDA: every problem is not_compiled";
  const sdpa::KernelChoice choice = sdpa::select_forward(aligned_problem(DType::kFloat32), {});
  EXPECT_EQ(choice.status.code, StatusCode::kUnsupported);
  EXPECT_TRUE(contains(choice.status.message, "float32")) << choice.status.message;
  EXPECT_TRUE(choice.kernel.empty());
}

TEST(Dispatch, MissingDeviceIsReported) {
  if (!sdpa::built_with_cuda()) GTEST_SKIP() << "built without CUDA";
  if (device_visible()) GTEST_SKIP() << "a CUDA device is visible";
  std::vector<sdpa::KernelChoice> choices = {sdpa::select_forward(aligned_problem(), {})};
  if (count_family("bwd_sm80") > 0) choices.push_back(sdpa::select_backward(aligned_backward_problem(), {}));
  for (const sdpa::KernelChoice& choice : choices) {
    EXPECT_EQ(choice.status.code, StatusCode::kUnsupported);
    EXPECT_TRUE(contains(choice.status.message, "device")) << choice.status.message;
  }
}

// The views of a problem by operand name, so each can be broken in turn.
sdpa::TensorView& operand(sdpa::AttentionProblem& p, const std::string& name) {
  return name == "q" ? p.q : name == "k" ? p.k : name == "v" ? p.v : p.o;
}

TEST(Dispatch, MisalignedOperandIsNamed) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  for (const std::string name : {"q", "k", "v", "o"}) {
    sdpa::AttentionProblem p = aligned_problem();
    operand(p, name).data = g_storage + 2;  // one bf16 element off
    sdpa::KernelChoice choice = sdpa::select_forward(p, {});
    EXPECT_EQ(choice.status.code, StatusCode::kUnsupported) << name;
    // one kernel's refusal, or each kernel's after its name (sm90 and sm80 kernels both refuse)
    EXPECT_TRUE(choice.status.message.rfind(name + " is not", 0) == 0 ||
                contains(choice.status.message, ">: " + name + " is not"))
        << choice.status.message;

    p = aligned_problem();
    operand(p, name).stride_seq += 1;  // rows no longer start on 16 bytes
    choice = sdpa::select_forward(p, {});
    EXPECT_EQ(choice.status.code, StatusCode::kUnsupported) << name;
    // one kernel's refusal, or each kernel's after its name (sm90 and sm80 kernels both refuse)
    EXPECT_TRUE(choice.status.message.rfind(name + " is not", 0) == 0 ||
                contains(choice.status.message, ">: " + name + " is not"))
        << choice.status.message;
  }
}

// A stride of an extent-1 dimension is never multiplied by a nonzero index, so it may be anything.
TEST(Dispatch, StrideOfSizeOneDimensionIsIgnored) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  sdpa::AttentionProblem p = aligned_problem();
  p.batch = 1;
  p.seqlen_q = 1;
  p.q.stride_batch = p.o.stride_batch = 3;
  p.q.stride_seq = p.o.stride_seq = 5;
  const sdpa::KernelChoice choice = sdpa::select_forward(p, {});
  EXPECT_NE(choice.status.code, StatusCode::kUnsupported) << choice.status.message;
}

// A K whose heads are one tensor broadcast (head stride 0) cannot be a TMA dim: the Hopper kernel refuses it
// and the sm80 kernel, which reads rows by address, takes it.
TEST(Dispatch, BroadcastStrideFallsThroughToTheSm80Kernel) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  sdpa::AttentionProblem p = aligned_problem(DType::kBFloat16, 128);
  p.k.stride_head = 0;
  const sdpa::KernelChoice choice = sdpa::select_forward(p, {});
  ASSERT_TRUE(choice.status.ok()) << choice.status.message;
  EXPECT_EQ(choice.kernel.rfind("fwd_sm80<", 0), 0u) << choice.kernel;
  if (prefill_family() == "fwd_sm90") {
    p.k.stride_head = p.v.stride_head;  // the same problem with real heads runs on the Hopper kernel
    EXPECT_EQ(sdpa::select_forward(p, {}).kernel.rfind("fwd_sm90<", 0), 0u);
  }
}

// Walks every dtype, head dim and bias: `select(dtype, head_dim, bias)` must name the kernel of family
// `family_of(dtype, head_dim)` exactly where the build compiled it, and say "not compiled" elsewhere.
// Returns how many compiled ones it met.
template <class FamilyOf, class Select>
int expect_each_compiled_kernel_selected(FamilyOf family_of, Select select) {
  const std::vector<std::string> names = sdpa::compiled_kernels();
  int checked = 0;
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (int head_dim : {32, 64, 96, 128, 192, 256}) {
      const std::string family = family_of(dtype, head_dim);
      for (const BiasDesc& bias : all_biases(dtype)) {
        const std::string expected = family + "<" + sdpa::bias_trait_name(bias) + ", " + sdpa::dtype_name(dtype) +
                                     ", hd" + std::to_string(head_dim) + ">";
        const bool compiled = std::find(names.begin(), names.end(), expected) != names.end();
        const sdpa::KernelChoice choice = select(dtype, head_dim, bias);
        if (compiled) {
          ++checked;
          EXPECT_TRUE(choice.status.ok()) << expected << ": " << choice.status.message;
          EXPECT_EQ(choice.kernel, expected);
        } else {
          EXPECT_EQ(choice.status.code, StatusCode::kNotCompiled) << expected;
          // A family left out of the build says so instead of listing head dims.
          EXPECT_TRUE(contains(choice.status.message, "head_dim " + std::to_string(head_dim)) ||
                      count_family(family) == 0)
              << choice.status.message;
        }
      }
    }
  }
  return checked;
}

// Each listed kernel is reachable: the problem it names selects exactly it.
TEST(Dispatch, EveryCompiledKernelIsSelected) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  if (sdpa::current_compute_capability() < 80) GTEST_SKIP() << "the kernels need sm80";
  const std::string family = prefill_family();
  const int checked = expect_each_compiled_kernel_selected(
      [&](DType, int) { return family; },
      [](DType dtype, int head_dim, const BiasDesc& bias) {
        return sdpa::select_forward(aligned_problem(dtype, head_dim), bias);
      });
  EXPECT_EQ(checked, count_family(family)) << "some compiled kernel has a head dim outside the list this test walks";
}

// A decode problem (Sq = 1) takes the split-KV family wherever it is compiled for the trait, and the
// prefill family otherwise; Sq above kSplitKvMaxSeqlenQ never takes it.
TEST(Dispatch, EveryCompiledDecodeKernelIsSelected) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  if (sdpa::current_compute_capability() < 80) GTEST_SKIP() << "the kernels need sm80";
  const std::vector<std::string> names = sdpa::compiled_kernels();
  int checked = 0;
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (int head_dim : {64, 128, 256}) {
      for (const BiasDesc& bias : all_biases(dtype)) {
        sdpa::AttentionProblem problem = aligned_problem(dtype, head_dim);
        problem.seqlen_q = 1;
        const std::string suffix =
            "<" + std::string(sdpa::bias_trait_name(bias)) + ", " + sdpa::dtype_name(dtype) + ", hd" + std::to_string(head_dim) + ">";
        const bool compiled = std::find(names.begin(), names.end(), "decode_sm80" + suffix) != names.end();
        const sdpa::KernelChoice choice = sdpa::select_forward(problem, bias);
        if (compiled) {
          ++checked;
          EXPECT_EQ(choice.kernel, "decode_sm80" + suffix) << choice.status.message;
          EXPECT_GT(sdpa::forward_workspace_size(problem, bias), 0u) << suffix;
        } else if (choice.status.ok()) {
          EXPECT_EQ(choice.kernel, prefill_family() + suffix);
        }
        problem.seqlen_q = sdpa::kSplitKvMaxSeqlenQ + 1;
        EXPECT_NE(sdpa::select_forward(problem, bias).kernel.rfind("decode_sm80", 0), 0u) << suffix;
      }
    }
  }
  EXPECT_EQ(checked, count_family("decode_sm80"));
}

// The Hopper backward (hd128 only) takes a problem on sm90 wherever it is compiled; the sm80 one elsewhere.
std::string backward_family(DType dtype, int head_dim) {
  const std::string suffix = std::string("<NoBias, ") + sdpa::dtype_name(dtype) + ", hd" + std::to_string(head_dim) + ">";
  const std::vector<std::string> names = sdpa::compiled_kernels();
  const bool hopper = sdpa::current_compute_capability() >= 90 &&
                      std::find(names.begin(), names.end(), "bwd_sm90" + suffix) != names.end();
  return hopper ? "bwd_sm90" : "bwd_sm80";
}

TEST(Dispatch, EveryCompiledBackwardKernelIsSelected) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  if (sdpa::current_compute_capability() < 80) GTEST_SKIP() << "the kernels need sm80";
  const int checked = expect_each_compiled_kernel_selected(backward_family, [](DType dtype, int head_dim, const BiasDesc& bias) {
    return sdpa::select_backward(aligned_backward_problem(dtype, head_dim), bias);
  });
  const int hopper_kernels = sdpa::current_compute_capability() >= 90 ? count_family("bwd_sm90") : 0;
  EXPECT_GT(checked, 0);
  EXPECT_LE(checked, count_family("bwd_sm80") + hopper_kernels) << "some compiled kernel has a head dim outside the list this test walks";
}

// The Hopper backward adds dQ with atomics: a deterministic problem falls through to the sm80 family, and the
// refusal says why.
TEST(Dispatch, DeterministicBackwardTakesTheSm80Kernel) {
  if (!sdpa::built_with_cuda() || !device_visible()) GTEST_SKIP() << "needs a CUDA build and a device";
  if (backward_family(DType::kBFloat16, 128) != "bwd_sm90") GTEST_SKIP() << "no Hopper backward here";
  sdpa::BackwardProblem problem = aligned_backward_problem(DType::kBFloat16, 128);
  EXPECT_EQ(sdpa::select_backward(problem, {}).kernel, "bwd_sm90<NoBias, bfloat16, hd128>");
  problem.deterministic = true;
  const sdpa::KernelChoice choice = sdpa::select_backward(problem, {});
  EXPECT_EQ(choice.kernel, "bwd_sm80<NoBias, bfloat16, hd128>") << choice.status.message;
}

// ---- the backward's own arguments and refusals ---------------------------------------------------------

// The fields validate_backward() adds to validate()'s, each nulled in turn by name.
const char* const kBackwardFields[] = {"lse", "grad_o", "grad_q", "grad_k", "grad_v"};

void null_field(sdpa::BackwardProblem& p, const std::string& name) {
  if (name == "lse") p.forward.lse = nullptr;
  if (name == "grad_o") p.grad_o.data = nullptr;
  if (name == "grad_q") p.grad_q.data = nullptr;
  if (name == "grad_k") p.grad_k.data = nullptr;
  if (name == "grad_v") p.grad_v.data = nullptr;
}

TEST(ValidateBackward, AcceptsAValidProblem) {
  for (const BiasDesc& bias : all_biases(DType::kBFloat16)) {
    const sdpa::Status s = sdpa::validate_backward(aligned_backward_problem(), bias);
    EXPECT_TRUE(s.ok()) << sdpa::bias_trait_name(bias) << ": " << s.message;
  }
}

TEST(ValidateBackward, NullOperandIsNamed) {
  for (const std::string name : kBackwardFields) {
    sdpa::BackwardProblem p = aligned_backward_problem();
    null_field(p, name);
    const sdpa::Status s = sdpa::validate_backward(p, {});
    EXPECT_EQ(s.code, StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message.rfind(name, 0), 0u) << "message should start with " << name << ": " << s.message;
  }
}

// Everything validate() checks on the forward call is checked again: shapes, operands, dtype and bias.
TEST(ValidateBackward, ForwardChecksStillApply) {
  sdpa::BackwardProblem p = aligned_backward_problem();
  p.forward.v.data = nullptr;
  sdpa::Status s = sdpa::validate_backward(p, {});
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message, "v.data")) << s.message;

  p = aligned_backward_problem();
  p.forward.heads_kv = 3;
  s = sdpa::validate_backward(p, {});
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message, "heads_kv")) << s.message;

  p = aligned_backward_problem();
  p.forward.dtype = DType::kBool;
  s = sdpa::validate_backward(p, {});
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message, "dtype")) << s.message;

  BiasDesc dense;
  dense.kind = BiasKind::kDense;
  dense.dense = {g_storage, DType::kFloat16, 0, 0, 0, 1};  // neither bool nor the problem's bf16
  s = sdpa::validate_backward(aligned_backward_problem(), dense);
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message, "bias.dense.dtype")) << s.message;
}

// select_backward() and backward() validate first, on every build.
TEST(Dispatch, BackwardInvalidArgumentsComeFirst) {
  for (const std::string name : kBackwardFields) {
    sdpa::BackwardProblem p = aligned_backward_problem();
    null_field(p, name);
    const sdpa::KernelChoice choice = sdpa::select_backward(p, {});
    EXPECT_EQ(choice.status.code, StatusCode::kInvalidArgument) << name;
    EXPECT_TRUE(contains(choice.status.message, name)) << choice.status.message;
    EXPECT_TRUE(choice.kernel.empty());
    EXPECT_EQ(sdpa::backward(p, {}, g_storage, sizeof g_storage).code, StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(sdpa::backward_workspace_size(p, {}), 0u) << name;
  }
}

TEST(Dispatch, BackwardBuildWithoutCudaSaysSo) {
  if (sdpa::built_with_cuda()) GTEST_SKIP() << "this build has CUDA kernels";
  for (DType dtype : {DType::kBFloat16, DType::kFloat16, DType::kFloat32}) {
    for (const BiasDesc& bias : all_biases(dtype)) {
      const sdpa::BackwardProblem p = aligned_backward_problem(dtype);
      const sdpa::KernelChoice choice = sdpa::select_backward(p, bias);
      EXPECT_EQ(choice.status.code, StatusCode::kNotCompiled) << sdpa::bias_trait_name(bias);
      EXPECT_TRUE(contains(choice.status.message, "CUDA")) << choice.status.message;
      EXPECT_TRUE(choice.kernel.empty());
      EXPECT_EQ(sdpa::backward_workspace_size(p, bias), 0u);
      EXPECT_EQ(sdpa::backward(p, bias, nullptr, 0).code, StatusCode::kNotCompiled);
    }
  }
}

TEST(Dispatch, BackwardFloat32HasNoFusedKernel) {
  if (!sdpa::built_with_cuda()) GTEST_SKIP() << "built without CUDA: every problem is not_compiled";
  if (count_family("bwd_sm80") == 0) GTEST_SKIP() << "built without backward kernels: every problem is not_compiled";
  const sdpa::KernelChoice choice = sdpa::select_backward(aligned_backward_problem(DType::kFloat32), {});
  EXPECT_EQ(choice.status.code, StatusCode::kUnsupported);
  EXPECT_TRUE(contains(choice.status.message, "float32")) << choice.status.message;
  EXPECT_TRUE(choice.kernel.empty());
}

// ---- the choice among archs, on a fake registry (no kernel runs) ---------------------------------------

sdpa::Status accept(const sdpa::AttentionProblem&, const BiasDesc&) { return sdpa::Status::success(); }
sdpa::Status refuse_layout(const sdpa::AttentionProblem&, const BiasDesc&) {
  return sdpa::Status::error(StatusCode::kUnsupported, "q rows are not laid out for TMA");
}
std::size_t no_workspace(const sdpa::AttentionProblem&, const BiasDesc&) { return 0; }
sdpa::Status never_run(const sdpa::AttentionProblem&, const BiasDesc&, void*, std::size_t) {
  return sdpa::Status::error(StatusCode::kCudaError, "a fake kernel never runs");
}

sdpa::KernelKey fake_key(int arch, int head_dim, sdpa::Direction direction = sdpa::Direction::kForward) {
  sdpa::KernelKey key;
  key.direction = direction;
  key.arch = arch;
  key.bias = sdpa::BiasId::kAlibiCausalUpperLeft;
  key.dtype = DType::kBFloat16;
  key.head_dim = head_dim;
  return key;
}

sdpa::KernelEntry fake_entry(int arch, const char* family, sdpa::CanImplementFn can_implement, int head_dim = 64) {
  return {fake_key(arch, head_dim), family, can_implement, &no_workspace, &never_run};
}

sdpa::KernelKey wanted_key() { return fake_entry(0, "", &accept).key; }

// sm80 is listed first on purpose: the choice must follow arch preference, not the table's order.
TEST(DispatchRegistry, Sm90RefusedByCapabilityFallsThroughToSm80) {
  const std::vector<sdpa::KernelEntry> registry = {fake_entry(80, "fwd_sm80", &accept),
                                                   fake_entry(90, "fwd_sm90", &accept)};
  const sdpa::AttentionProblem p = aligned_problem();
  sdpa::Selection a100 = sdpa::select_kernel(registry, wanted_key(), 80, p, {});
  ASSERT_TRUE(a100.status.ok()) << a100.status.message;
  ASSERT_NE(a100.kernel, nullptr);
  EXPECT_EQ(sdpa::kernel_name(*a100.kernel), "fwd_sm80<AlibiCausalUpperLeft, bfloat16, hd64>");
  ASSERT_EQ(a100.refusals.size(), 1u);
  EXPECT_EQ(a100.refusals[0], "fwd_sm90<AlibiCausalUpperLeft, bfloat16, hd64> needs compute capability 90, the device has 80");

  sdpa::Selection h100 = sdpa::select_kernel(registry, wanted_key(), 90, p, {});
  ASSERT_TRUE(h100.status.ok());
  EXPECT_EQ(h100.kernel->key.arch, 90);
  EXPECT_TRUE(h100.refusals.empty());
}

TEST(DispatchRegistry, Sm90RefusedByCanImplementFallsThroughToSm80) {
  const std::vector<sdpa::KernelEntry> registry = {fake_entry(90, "fwd_sm90", &refuse_layout),
                                                   fake_entry(80, "fwd_sm80", &accept)};
  sdpa::Selection s = sdpa::select_kernel(registry, wanted_key(), 90, aligned_problem(), {});
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.kernel->key.arch, 80);
  ASSERT_EQ(s.refusals.size(), 1u);
  EXPECT_EQ(s.refusals[0], "q rows are not laid out for TMA");
}

// When every arch holding the key refuses, the status is unsupported and names each kernel's reason.
TEST(DispatchRegistry, EveryRefusalIsReported) {
  const std::vector<sdpa::KernelEntry> registry = {fake_entry(90, "fwd_sm90", &refuse_layout),
                                                   fake_entry(80, "fwd_sm80", &refuse_layout)};
  sdpa::Selection s = sdpa::select_kernel(registry, wanted_key(), 75, aligned_problem(), {});
  EXPECT_EQ(s.status.code, StatusCode::kUnsupported);
  EXPECT_EQ(s.kernel, nullptr);
  EXPECT_EQ(s.refusals.size(), 2u);
  EXPECT_TRUE(contains(s.status.message, "fwd_sm90<AlibiCausalUpperLeft, bfloat16, hd64> needs compute capability 90"))
      << s.status.message;
  EXPECT_TRUE(contains(s.status.message, "fwd_sm80<AlibiCausalUpperLeft, bfloat16, hd64> needs compute capability 80"))
      << s.status.message;

  s = sdpa::select_kernel(registry, wanted_key(), 90, aligned_problem(), {});
  EXPECT_EQ(s.status.code, StatusCode::kUnsupported);
  EXPECT_EQ(s.status.message,
            "fwd_sm90<AlibiCausalUpperLeft, bfloat16, hd64>: q rows are not laid out for TMA; "
            "fwd_sm80<AlibiCausalUpperLeft, bfloat16, hd64>: q rows are not laid out for TMA");
}

// A key no arch holds is not compiled, whatever the device.
TEST(DispatchRegistry, MissingKeyIsNotCompiled) {
  const std::vector<sdpa::KernelEntry> registry = {fake_entry(90, "fwd_sm90", &accept, 128),
                                                   fake_entry(80, "fwd_sm80", &accept, 128)};
  const sdpa::Selection s = sdpa::select_kernel(registry, wanted_key(), 90, aligned_problem(), {});
  EXPECT_EQ(s.status.code, StatusCode::kNotCompiled);
  EXPECT_TRUE(contains(s.status.message, "AlibiCausalUpperLeft, bfloat16, head_dim 64")) << s.status.message;
  EXPECT_TRUE(s.refusals.empty());
}

// ---- the backward table: the same selection over BackwardProblem entries ------------------------------

sdpa::Status accept_backward(const sdpa::BackwardProblem&, const BiasDesc&) { return sdpa::Status::success(); }
sdpa::Status refuse_deterministic(const sdpa::BackwardProblem& p, const BiasDesc&) {
  if (!p.deterministic) return sdpa::Status::success();
  return sdpa::Status::error(StatusCode::kUnsupported, "no deterministic mode");
}
constexpr std::size_t kFakeBackwardWorkspace = 4096;
std::size_t fake_backward_workspace(const sdpa::BackwardProblem&, const BiasDesc&) { return kFakeBackwardWorkspace; }
int g_backward_runs = 0;
sdpa::Status count_backward_run(const sdpa::BackwardProblem&, const BiasDesc&, void*, std::size_t) {
  ++g_backward_runs;
  return sdpa::Status::success();
}

sdpa::BackwardKernelEntry fake_backward_entry(int arch, const char* family,
                                              sdpa::CanImplementFnFor<sdpa::BackwardProblem> can_implement,
                                              sdpa::Direction direction = sdpa::Direction::kBackward) {
  return {fake_key(arch, 64, direction), family, can_implement, &fake_backward_workspace, &count_backward_run};
}

sdpa::KernelKey wanted_backward_key() { return fake_key(0, 64, sdpa::Direction::kBackward); }

// The backward problem reaches can_implement: the sm90 entry refuses deterministic mode, sm80 takes it.
TEST(DispatchRegistry, BackwardRefusalFallsThroughToSm80) {
  const std::vector<sdpa::BackwardKernelEntry> registry = {fake_backward_entry(80, "bwd_sm80", &accept_backward),
                                                           fake_backward_entry(90, "bwd_sm90", &refuse_deterministic)};
  sdpa::BackwardProblem p = aligned_backward_problem();
  sdpa::BackwardSelection s = sdpa::select_kernel(registry, wanted_backward_key(), 90, p, {});
  ASSERT_TRUE(s.status.ok()) << s.status.message;
  EXPECT_EQ(sdpa::kernel_name(*s.kernel), "bwd_sm90<AlibiCausalUpperLeft, bfloat16, hd64>");
  EXPECT_TRUE(s.refusals.empty());

  p.deterministic = true;
  s = sdpa::select_kernel(registry, wanted_backward_key(), 90, p, {});
  ASSERT_TRUE(s.status.ok()) << s.status.message;
  EXPECT_EQ(sdpa::kernel_name(*s.kernel), "bwd_sm80<AlibiCausalUpperLeft, bfloat16, hd64>");
  ASSERT_EQ(s.refusals.size(), 1u);
  EXPECT_EQ(s.refusals[0], "no deterministic mode");
}

// A key's direction is part of it: a backward request never picks an entry keyed as a forward.
TEST(DispatchRegistry, DirectionIsPartOfTheKey) {
  const std::vector<sdpa::BackwardKernelEntry> registry = {
      fake_backward_entry(80, "fwd_sm80", &accept_backward, sdpa::Direction::kForward)};
  const sdpa::BackwardSelection s =
      sdpa::select_kernel(registry, wanted_backward_key(), 90, aligned_backward_problem(), {});
  EXPECT_EQ(s.status.code, StatusCode::kNotCompiled);
  EXPECT_EQ(s.kernel, nullptr);
}

// run_kernel() is where forward() and backward() check the caller's workspace before launching.
TEST(DispatchRegistry, RunKernelRefusesASmallWorkspace) {
  const sdpa::BackwardKernelEntry kernel = fake_backward_entry(80, "bwd_sm80", &accept_backward);
  const sdpa::BackwardProblem p = aligned_backward_problem();
  g_backward_runs = 0;
  sdpa::Status s = sdpa::run_kernel(kernel, p, {}, g_storage, kFakeBackwardWorkspace - 1);
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message, "backward_workspace_size()")) << s.message;
  EXPECT_TRUE(contains(s.message, std::to_string(kFakeBackwardWorkspace) + " bytes")) << s.message;
  s = sdpa::run_kernel(kernel, p, {}, nullptr, kFakeBackwardWorkspace);
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument) << "a null workspace of the right size";
  EXPECT_EQ(g_backward_runs, 0) << "a refused workspace must not launch";

  s = sdpa::run_kernel(kernel, p, {}, g_storage, kFakeBackwardWorkspace);
  EXPECT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(g_backward_runs, 1);
}

int g_forward_runs = 0;
sdpa::Status count_forward_run(const sdpa::AttentionProblem&, const BiasDesc&, void*, std::size_t) {
  ++g_forward_runs;
  return sdpa::Status::success();
}

// An optional workspace (the Hopper forward's tile counter): the kernel runs without one when the caller
// passes none and asks for no size; a buffer too small, or a size query, is refused as for any kernel.
TEST(DispatchRegistry, AnOptionalWorkspaceMayBeLeftOut) {
  sdpa::KernelEntry kernel = {fake_key(90, 64), "fwd_sm90", &accept,
                              [](const sdpa::AttentionProblem&, const BiasDesc&) -> std::size_t { return 16; },
                              &count_forward_run};
  kernel.workspace_optional = true;
  g_forward_runs = 0;
  EXPECT_TRUE(sdpa::run_kernel(kernel, aligned_problem(), {}, nullptr, 0).ok());
  EXPECT_EQ(g_forward_runs, 1);
  std::size_t needed = 0;
  EXPECT_EQ(sdpa::run_kernel(kernel, aligned_problem(), {}, nullptr, 0, &needed).code, StatusCode::kInvalidArgument);
  EXPECT_EQ(needed, 16u);
  EXPECT_EQ(sdpa::run_kernel(kernel, aligned_problem(), {}, g_storage, 8).code, StatusCode::kInvalidArgument);
  EXPECT_EQ(g_forward_runs, 1) << "a refused workspace must not launch";
  EXPECT_TRUE(sdpa::run_kernel(kernel, aligned_problem(), {}, g_storage, 16).ok());
  EXPECT_EQ(g_forward_runs, 2);
}

TEST(DispatchRegistry, ForwardWorkspaceRefusalNamesTheForwardQuery) {
  const sdpa::KernelEntry kernel = {fake_key(80, 64), "fwd_sm80", &accept,
                                    [](const sdpa::AttentionProblem&, const BiasDesc&) -> std::size_t { return 16; },
                                    &never_run};
  const sdpa::Status s = sdpa::run_kernel(kernel, aligned_problem(), {}, nullptr, 0);
  EXPECT_EQ(s.code, StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(s.message, "forward_workspace_size()")) << s.message;
}

}  // namespace
