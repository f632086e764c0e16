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

// The instruction set used: "avx512", "avx2" or "generic". VSML_ES_FUSED_ISA names a lower one
// (the tests run every variant on one machine); a higher one than the CPU has is not taken.
inline const char* isa() {
  const char* want = std::getenv("VSML_ES_FUSED_ISA");
  const bool any = !want || !*want;
#if VSML_X86
  __builtin_cpu_init();
  const bool has512 = __builtin_cpu_supports("avx512f");
  const bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (has512 && (any || !std::strcmp(want, "avx512"))) return "avx512";
  if (has2 && (any || !std::strcmp(want, "avx512") || !std::strcmp(want, "avx2"))) return "avx2";
#endif
  (void)any;
  return "generic";
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
