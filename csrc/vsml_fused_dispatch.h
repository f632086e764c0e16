// Runtime dispatch of the fused kernel. The build uses no -march flag, so one binary runs on any
// CPU of its architecture: the kernel is compiled three times, under target pragmas for AVX-512
// and for AVX2+FMA and for the baseline (SSE2 on x86-64, the base ISA elsewhere), each in its
// own namespace, and the CPU it runs on picks one at run time.
#pragma once

#include <cstdlib>
#include <cstring>

#include "vsml_fused_args.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VSML_X86 1
#include <immintrin.h>
#else
#define VSML_X86 0
#endif

// Each variant's entry point, for state size 16 (the default and the paper's) only: every
// further size would add about as much compile time to the install again.
#define VSML_ENTRY_POINTS \
  inline void layer_16(const LayerArgs& a) { layer<VSML_WIDTH, 16>(a); }

namespace vsml_fused {
namespace generic {
#define VSML_WIDTH 4
#include "vsml_fused_kernel.h"
VSML_ENTRY_POINTS
#undef VSML_WIDTH
}  // namespace generic
}  // namespace vsml_fused

#if VSML_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace vsml_fused {
namespace avx2 {
#define VSML_WIDTH 8
#include "vsml_fused_kernel.h"
VSML_ENTRY_POINTS
#undef VSML_WIDTH
}  // namespace avx2
}  // namespace vsml_fused
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
namespace vsml_fused {
namespace avx512 {
#define VSML_WIDTH 16
#include "vsml_fused_kernel.h"
VSML_ENTRY_POINTS
#undef VSML_WIDTH
}  // namespace avx512
}  // namespace vsml_fused
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // VSML_X86

namespace vsml_fused {

// The best instruction set this CPU runs: "avx512", "avx2" or "generic".
inline const char* cpu_isa() {
#if VSML_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "generic";
}

// The instruction set used: the CPU's best, or the one VSML_ES_FUSED_ISA names (the tests and
// CI run every variant the machine can run). vsml_es/fused.py refuses a name that is not one
// of the three or that this CPU cannot run before any call reaches here; should one arrive
// anyway, the CPU's best is used (never an instruction the CPU lacks).
inline const char* isa() {
  const char* want = std::getenv("VSML_ES_FUSED_ISA");
  const char* best = cpu_isa();
  if (!want || !*want) return best;
  const int rank_best = !std::strcmp(best, "avx512") ? 2 : !std::strcmp(best, "avx2") ? 1 : 0;
  if (!std::strcmp(want, "avx512") && rank_best >= 2) return "avx512";
  if (!std::strcmp(want, "avx2") && rank_best >= 1) return "avx2";
  if (!std::strcmp(want, "generic")) return "generic";
  return best;
}

// The variant for state size s and instruction set isa_name, or nullptr for an unsupported s.
inline LayerFn select(int64_t s, const char* isa_name) {
#if VSML_X86
  const bool a512 = !std::strcmp(isa_name, "avx512"), a2 = !std::strcmp(isa_name, "avx2");
#define VSML_PICK(S) \
  if (s == S) return a512 ? avx512::layer_##S : a2 ? avx2::layer_##S : generic::layer_##S;
#else
#define VSML_PICK(S) \
  if (s == S) return generic::layer_##S;
#endif
  VSML_PICK(16)
#undef VSML_PICK
  return nullptr;
}

}  // namespace vsml_fused
