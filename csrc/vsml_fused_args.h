// The arguments of one fused VSML layer call (see vsml_fused_kernel.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vsml_fused {

struct LayerArgs {
  int64_t batch;   // members (all leading dimensions)
  int64_t n_out;
  int64_t n_in;
  int64_t ticks;   // LSTM steps with fixed messages
  const float* w;     // [batch][4S][S]   W_h^T, rows i, g, f, o (i, f, o halved)
  const float* fwd;   // [batch][4S][n_in]  W_f^T fwd_in^T (i, f, o rows halved)
  const float* bwd;   // [batch][4S][n_out] W_g^T bwd_in^T + bias + offsets (halved likewise)
  const float* mask;  // [batch][n_out]  weight of each output in sum_b
  const float* h_in;  // [batch][S][n_out][n_in]
  const float* c_in;
  float* h_out;       // may alias h_in
  float* c_out;       // may alias c_in
  float* sum_a;       // [batch][S][n_out]  sum over inputs a of the new h
  float* sum_b;       // [batch][S][n_in]   sum over outputs b of mask[b] * new h
};

typedef void (*LayerFn)(const LayerArgs&);

}  // namespace vsml_fused
