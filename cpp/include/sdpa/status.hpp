// Result of every libsdpa entry point: a code callers can branch on and a message a person can read.
#pragma once

#include <string>
#include <utility>

namespace sdpa {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // the caller broke a documented precondition
  kNotCompiled = 2,      // valid, but this build holds no kernel for it (arch, dtype, head dim, bias)
  kUnsupported = 3,      // valid, but no kernel design covers it (e.g. no GPU of the right arch)
  kCudaError = 4,        // the CUDA runtime reported an error
};

struct Status {
  StatusCode code = StatusCode::kOk;
  std::string message;

  bool ok() const { return code == StatusCode::kOk; }
  static Status success() { return {}; }
  static Status error(StatusCode code, std::string message) { return {code, std::move(message)}; }
};

inline const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kNotCompiled: return "not_compiled";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kCudaError: return "cuda_error";
  }
  return "unknown";
}

}  // namespace sdpa
