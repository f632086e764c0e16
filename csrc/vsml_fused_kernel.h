// The fused VSML layer tick: every connection's LSTM step(s) of one dense VSML layer in one
// pass over its state, vectorised over connections. No XLA or Python here, so the kernel can be
// built and timed on its own; vsml_fused.cc binds it to the XLA FFI.
//
// Layout (the fast layout of vsml_es/vsml.py): h, c [S][n_out][n_in], connections contiguous.
// The caller folds the sigmoid-as-tanh scaling into the inputs: the rows of the gates i, f, o
// of w [4S][S], fwd [4S][n_in] and bwd [4S][n_out] (with the gate offsets and the LSTM bias)
// are multiplied by 0.5, so each gate is tanh(z) and sigmoid = 0.5 * tanh + 0.5. Scaling by 0.5
// is exact in binary floating point, so this changes no rounding.
// Included once per instruction set by vsml_fused_dispatch.h, inside a namespace of its own and
// under that instruction set's target pragma, with VSML_WIDTH the vector width in floats.

#ifndef VSML_INLINE
#define VSML_INLINE inline __attribute__((always_inline))
#endif

template <int W>
struct Vec {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
};

template <class T>
VSML_INLINE T splat(float x) {
  return T{} + x;
}

template <class T>
VSML_INLINE T load(const float* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <class T>
VSML_INLINE void store(float* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

// Clamp to [lo, hi]; a NaN stays NaN, as with XLA's selects (max(lo, x) and min(hi, x) return
// their second operand when either is NaN). One instruction each on x86, where compilers do not
// find them in the selects.
template <class T>
VSML_INLINE T clamp(T x, T lo, T hi) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 64)
    return (T)_mm512_min_ps((__m512)hi, _mm512_max_ps((__m512)lo, (__m512)x));
#endif
#if defined(__AVX__)
  if constexpr (sizeof(T) == 32)
    return (T)_mm256_min_ps((__m256)hi, _mm256_max_ps((__m256)lo, (__m256)x));
#endif
#if defined(__SSE__)
  if constexpr (sizeof(T) == 16) return (T)_mm_min_ps((__m128)hi, _mm_max_ps((__m128)lo, (__m128)x));
#endif
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

// tanh as XLA:CPU computes it (and Eigen's float tanh): an odd 13/6 rational on x clamped to
// +-7.9988..., where the rational is exactly +-1, with the polynomials in Horner form (fused
// multiply-adds where the target has them). Within a few ulp of tanh over the whole line;
// XLA's select of x itself for |x| < 4e-4 is left out: the rational is within 1 ulp of x there.
template <class T>
VSML_INLINE T tanh_approx(T x) {
  const T hi = splat<T>(7.99881172180175781f);
  x = clamp(x, -hi, hi);
  const T x2 = x * x;
  T p = splat<T>(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  T q = splat<T>(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// One block of W connections (a0..a0+W-1 of row b) for all ticks. h/c pointers address unit 0;
// unit u is at + u * stride. fwd rows at + k * fstride; bwd_b[k] is bwd[k][b].
//
// Each tick runs in two phases so that both keep the vector units busy: (A) the recurrent
// matmul, eight gate rows at a time (eight independent multiply-add chains, h in registers),
// into a scratch z in L1; (B) the gates, unit by unit (units are independent, so the CPU
// overlaps one unit's tanh chain with the next one's). Done as one loop per unit, the matmul's
// four chains and the tanh chain behind them leave the vector units idle half of the time.
template <int W, int S>
VSML_INLINE void block(const float* __restrict w, const float* fwd, std::ptrdiff_t fstride,
                       const float* bwd_b, const float* h_in, const float* c_in, float* h_out,
                       float* c_out, std::ptrdiff_t stride, int64_t ticks,
                       typename Vec<W>::type* row, float* sum_b, std::ptrdiff_t sum_stride,
                       float mb) {
  typedef typename Vec<W>::type T;
  constexpr int R = 8;  // gate rows per matmul group
  static_assert((4 * S) % R == 0, "state size must be a multiple of 2");
  T h[S];
  T c[S];
  T z[4 * S];
#pragma GCC unroll 64
  for (int u = 0; u < S; ++u) {
    h[u] = load<T>(h_in + u * stride);
    c[u] = load<T>(c_in + u * stride);
  }
  for (int64_t t = 0; t < ticks; ++t) {
#pragma GCC unroll 64
    for (int k0 = 0; k0 < 4 * S; k0 += R) {
      // An opaque copy of the weight pointer per group: otherwise the compiler hoists all
      // 4S*S weight broadcasts out of the loops and spills them, instead of reading each one
      // inside its multiply-add (AVX-512's embedded broadcast).
      const float* wk = w + k0 * S;
      asm volatile("" : "+r"(wk));
      T acc[R];
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) acc[r] = load<T>(fwd + (k0 + r) * fstride) + bwd_b[k0 + r];
#pragma GCC unroll 64
      for (int j = 0; j < S; ++j) {
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) acc[r] += wk[r * S + j] * h[j];
      }
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) z[k0 + r] = acc[r];
    }
#pragma GCC unroll 64
    for (int u = 0; u < S; ++u) {
      const T half = splat<T>(0.5f);
      const T si = tanh_approx(z[u]) * half + half;
      const T sf = tanh_approx(z[2 * S + u]) * half + half;
      const T so = tanh_approx(z[3 * S + u]) * half + half;
      const T cn = sf * c[u] + si * tanh_approx(z[S + u]);
      c[u] = cn;
      h[u] = so * tanh_approx(cn);
    }
  }
  // The new h, still in registers, into both means: row[u] (over this row's inputs, summed
  // across lanes by the caller) and sum_b (over outputs, weighted by the mask).
#pragma GCC unroll 64
  for (int u = 0; u < S; ++u) {
    store(h_out + u * stride, h[u]);
    store(c_out + u * stride, c[u]);
    row[u] += h[u];
    store(sum_b + u * sum_stride, load<T>(sum_b + u * sum_stride) + mb * h[u]);
  }
}

// The whole layer for all members, W lanes at a time; a row's last n_in % W connections go
// through zero-padded copies.
template <int W, int S>
VSML_INLINE void layer(const LayerArgs& a) {
  typedef typename Vec<W>::type T;
  const int64_t n_in = a.n_in, n_out = a.n_out, conns = n_in * n_out;
  const int64_t full = n_in / W * W;
  for (int64_t m = 0; m < a.batch; ++m) {
    const float* w = a.w + m * 4 * S * S;
    const float* fwd = a.fwd + m * 4 * S * n_in;
    const float* bwd = a.bwd + m * 4 * S * n_out;
    const float* mask = a.mask + m * n_out;
    const float* h_in = a.h_in + m * S * conns;
    const float* c_in = a.c_in + m * S * conns;
    float* h_out = a.h_out + m * S * conns;
    float* c_out = a.c_out + m * S * conns;
    float* sum_a = a.sum_a + m * S * n_out;
    float* sum_b = a.sum_b + m * S * n_in;
    std::memset(sum_b, 0, sizeof(float) * S * n_in);
    for (int64_t b = 0; b < n_out; ++b) {
      float bwd_b[4 * S];
      for (int k = 0; k < 4 * S; ++k) bwd_b[k] = bwd[k * n_out + b];
      const float mb = mask[b];
      T row[S];
      for (int u = 0; u < S; ++u) row[u] = T{};
      const int64_t off = b * n_in;
      for (int64_t a0 = 0; a0 < full; a0 += W) {
        // The next block's state: S rows of h and of c, each a separate stream through memory
        // (more than the hardware prefetchers follow), needed long after this block's ticks.
        const int64_t next = off + a0 + W < conns ? off + a0 + W : off + a0;
        for (int u = 0; u < S; ++u) {
          __builtin_prefetch(h_in + u * conns + next);
          __builtin_prefetch(c_in + u * conns + next);
        }
        block<W, S>(w, fwd + a0, n_in, bwd_b, h_in + off + a0, c_in + off + a0,
                    h_out + off + a0, c_out + off + a0, conns, a.ticks, row, sum_b + a0, n_in,
                    mb);
      }
      float rows[S];
      for (int u = 0; u < S; ++u) {
        float total = 0.0f;
        for (int l = 0; l < W; ++l) total += row[u][l];
        rows[u] = total;
      }
      if (full < n_in) {  // the tail, zero-padded
        const int64_t rest = n_in - full;
        alignas(64) float hp[S * W] = {}, cp[S * W] = {}, fp[4 * S * W] = {};
        for (int u = 0; u < S; ++u) {
          std::memcpy(hp + u * W, h_in + u * conns + off + full, sizeof(float) * rest);
          std::memcpy(cp + u * W, c_in + u * conns + off + full, sizeof(float) * rest);
        }
        for (int k = 0; k < 4 * S; ++k)
          std::memcpy(fp + k * W, fwd + k * n_in + full, sizeof(float) * rest);
        T tail_row[S] = {};
        alignas(64) float tail_sb[S * W] = {};
        block<W, S>(w, fp, W, bwd_b, hp, cp, hp, cp, W, a.ticks, tail_row, tail_sb, W, mb);
        for (int u = 0; u < S; ++u) {
          std::memcpy(h_out + u * conns + off + full, hp + u * W, sizeof(float) * rest);
          std::memcpy(c_out + u * conns + off + full, cp + u * W, sizeof(float) * rest);
          for (int64_t l = 0; l < rest; ++l) {
            rows[u] += hp[u * W + l];
            sum_b[u * n_in + full + l] += tail_sb[u * W + l];
          }
        }
      }
      for (int u = 0; u < S; ++u) sum_a[u * n_out + b] = rows[u];
    }
  }
}

