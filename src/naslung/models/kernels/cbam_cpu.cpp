// Fused CPU kernels for CBAM (NAS-Lung eq. 1-3, channel-first order), float32, few channels.
//
// x is (B, C, P) with P = prod(S), in one of two memory layouts:
//   channels-last:  x[b, p, c] at (b * P + p) * C + c   (channels_last_3d / channels_last)
//   contiguous:     x[b, c, p] at (b * C + c) * P + p
// a = M_c (B, C), s = M_s (B, P). Each kernel is one pass over x (and the gradient), where torch's op set
// takes several: see naslung/models/kernels/__init__.py for the Python side and the autograd formulas.
//
// Sums over P accumulate in double (float rounding over 32k+ terms would otherwise be ~1e-4 relative).
// The channel max of the spatial descriptor splits its gradient among ties, as torch.amax does; the spatial
// max of the channel gate sends it to the first maximum, as torch.max(dim) does on CPU.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "plane_fft.h"
#include "simd8.h"

namespace {

using naslung_simd::iv8;
using naslung_simd::kVec;
using naslung_simd::load8;
using naslung_simd::load_planes;
using naslung_simd::sigmoid8;
using naslung_simd::splat;
using naslung_simd::store8;
using naslung_simd::store_planes;
using naslung_simd::v8;

// Whether a pass takes the transposing vector path: channels-last with 4 channels, or 8 for the passes that
// reduce over a voxel's channels (gate_descriptor, grad_spatial), 8 voxels per step as per-channel vectors
// (simd8.h's transposes); the elementwise passes take 8+ channels as whole vectors (wide, below). Written
// out because g++ did not vectorise the 4-wide channel loops well: the AVX-512 build of the backward passes
// ran 4x slower than the AVX2 build (grad_spatial 11.1 against 2.8 ms, 4 channels at 32^3, batch 32, 2
// threads).
template <bool CL, int CC>
constexpr bool kVectorised = CL && (CC == 4 || CC == 8);

// Visits the channels-last positions [lo, hi) of (B, P) one batch row b at a time: vec(b, p) for each full
// block of 8 positions p .. p + 7 within the row, one(b, p) for the rest.
template <typename Vec, typename One>
void visit_rows(int64_t lo, int64_t hi, int64_t P, Vec&& vec, One&& one) {
  for (int64_t b = lo / P; b * P < hi; ++b) {
    int64_t p = std::max(lo, b * P) - b * P;
    const int64_t end = std::min(hi, (b + 1) * P) - b * P;
    for (; p + kVec <= end; p += kVec) vec(b, p);
    for (; p < end; ++p) one(b, p);
  }
}

inline v8 select(iv8 mask, v8 yes, v8 no) { return mask ? yes : no; }
inline v8 indicator(iv8 mask) { return mask ? splat(1.f) : splat(0.f); }

// Channels-last voxels of 8, 16, 24, ... channels: each voxel's channels as C / 8 vectors, reduced across
// lanes where a per-voxel value is needed (lanes summed in order 0 .. 7). The elementwise passes take it
// from 8 channels on; the reducing ones (descriptor, grad_spatial) transpose 8 voxels instead at 8.
constexpr bool wide(bool cl, int64_t n) { return cl && n % kVec == 0; }
inline float lane_sum(v8 v) {
  float t = 0.f;
  for (int l = 0; l < kVec; ++l) t += v[l];
  return t;
}
inline float lane_max(v8 v) {  // no NaN lanes: the callers' maxima skip NaNs as std::max does
  float t = v[0];
  for (int l = 1; l < kVec; ++l) t = std::max(t, v[l]);
  return t;
}

struct Shape {
  int64_t B, C, P;
  bool cl;
};

Shape shape_of(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "fused CBAM kernels take float32 CPU tensors");
  TORCH_CHECK(x.dim() >= 3, "fused CBAM kernels take (B, C, *S) tensors");
  Shape s{x.size(0), x.size(1), x.numel() / std::max<int64_t>(1, x.size(0) * x.size(1)), false};
  auto fmt = x.dim() == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
  if (x.dim() >= 4 && x.is_contiguous(fmt) && !x.is_contiguous()) {
    s.cl = true;
  } else {
    TORCH_CHECK(x.is_contiguous(), "fused CBAM kernels take contiguous or channels-last tensors");
  }
  return s;
}

at::Tensor like(const at::Tensor& x, const Shape& s) {
  if (!s.cl) return at::empty(x.sizes(), x.options());
  auto fmt = x.dim() == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
  return at::empty(x.sizes(), x.options().memory_format(fmt));
}

// One channels-last batch row xb (P voxels of CC = 4 or 8 channels, `stride` floats apart: 8 channels of a
// wider map are one block of it): per channel the sum, the max and the first position of the max, as
// spatial_pool's scalar loop computes them. Each vector lane follows one channel
// over every (8 / CC)-th voxel; its float sums go into double every 256 steps; the lanes of a channel are
// merged at the end (a NaN first, then the larger value, then the earlier position).
template <int CC>
void pool_row(const float* xb, int64_t P, int64_t stride, double* sum, float* m, int64_t* where) {
  constexpr int V = 8 / CC;  // voxels per vector
  iv8 lane_voxel;
  for (int l = 0; l < 8; ++l) lane_voxel[l] = l / CC;
  double total[8] = {};
  v8 best = splat(-std::numeric_limits<float>::infinity());
  iv8 at = {};
  int64_t q = 0;
  while (q + V <= P) {
    v8 part = splat(0.f);
    for (int64_t stop = std::min(P - P % V, q + 256 * V); q < stop; q += V) {
      const v8 v = load8(xb + q * stride);
      part += v;
      const iv8 take = (v > best) | ((v != v) & (best == best));  // the first NaN wins, as in max
      best = select(take, v, best);
      at = take ? (iv8{} + static_cast<int>(q)) + lane_voxel : at;
    }
    for (int l = 0; l < 8; ++l) total[l] += static_cast<double>(part[l]);
  }
  for (int c = 0; c < CC; ++c) {
    sum[c] = 0.0;
    m[c] = best[c];
    where[c] = at[c];
    for (int k = 0; k < V; ++k) {
      const int l = k * CC + c;
      sum[c] += total[l];
      if (k == 0) continue;
      const float v = best[l];
      const bool nan_here = v != v, nan_kept = m[c] != m[c];
      const bool wins = nan_kept ? (nan_here && at[l] < where[c])
                                 : (nan_here || v > m[c] || (v == m[c] && at[l] < where[c]));
      if (wins) {
        m[c] = v;
        where[c] = at[l];
      }
    }
  }
  for (; q < P; ++q) {  // the voxel left over when V = 2 and P is odd: the last in the row
    for (int c = 0; c < CC; ++c) {
      const float v = xb[q * stride + c];
      sum[c] += v;
      if (v > m[c] || (v != v && m[c] == m[c])) {
        m[c] = v;
        where[c] = q;
      }
    }
  }
}

// Per (b, c): mean, max and the first position of the max over P.  -> avg (B, C), max (B, C), argmax (B, C)
std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_pool(const at::Tensor& x_) {
  Shape s = shape_of(x_);
  const float* x = x_.data_ptr<float>();
  auto avg_t = at::empty({s.B, s.C}, x_.options());
  auto max_t = at::empty({s.B, s.C}, x_.options());
  auto arg_t = at::empty({s.B, s.C}, x_.options().dtype(at::kLong));
  float* avg = avg_t.data_ptr<float>();
  float* mx = max_t.data_ptr<float>();
  int64_t* arg = arg_t.data_ptr<int64_t>();
  const int64_t B = s.B, C = s.C, P = s.P;
  at::parallel_for(0, B * (s.cl ? 1 : C), 1, [&](int64_t lo, int64_t hi) {
    std::vector<double> sum(C);
    std::vector<float> m(C);
    std::vector<int64_t> where(C);
    for (int64_t i = lo; i < hi; ++i) {
      if (s.cl && (C == 4 || C % 8 == 0)) {
        const float* xb = x + i * P * C;
        if (C == 4) pool_row<4>(xb, P, C, sum.data(), m.data(), where.data());
        else
          for (int64_t k = 0; k < C; k += kVec)
            pool_row<8>(xb + k, P, C, sum.data() + k, m.data() + k, where.data() + k);
        for (int64_t c = 0; c < C; ++c) {
          avg[i * C + c] = static_cast<float>(sum[c] / P);
          mx[i * C + c] = m[c];
          arg[i * C + c] = where[c];
        }
      } else if (s.cl) {
        const float* xb = x + i * P * C;
        std::fill(sum.begin(), sum.end(), 0.0);
        std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
        std::fill(where.begin(), where.end(), 0);
        for (int64_t p = 0; p < P; ++p) {
          const float* row = xb + p * C;
          for (int64_t c = 0; c < C; ++c) {
            sum[c] += row[c];
            if (row[c] > m[c] || (row[c] != row[c] && m[c] == m[c])) {  // the first NaN wins, as in max
              m[c] = row[c];
              where[c] = p;
            }
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          avg[i * C + c] = static_cast<float>(sum[c] / P);
          mx[i * C + c] = m[c];
          arg[i * C + c] = where[c];
        }
      } else {
        const float* xr = x + i * P;
        double acc = 0.0;
        float best = -std::numeric_limits<float>::infinity();
        int64_t at_best = 0;
        for (int64_t p = 0; p < P; ++p) {
          acc += xr[p];
          if (xr[p] > best || (xr[p] != xr[p] && best == best)) {
            best = xr[p];
            at_best = p;
          }
        }
        avg[i] = static_cast<float>(acc / P);
        mx[i] = best;
        arg[i] = at_best;
      }
    }
  });
  return {avg_t, max_t, arg_t};
}

// Kernels that visit one position (b, p) at a time, its C values at hand: templated on the layout and, for the
// common widths, on C, so that the compiler unrolls and vectorises the channel loop.
template <bool CL, int CC>
struct Pos {
  int64_t C, P;
  inline int64_t channels() const { return CC > 0 ? CC : C; }
  // index of x[b, p, c]
  inline int64_t at(int64_t b, int64_t p, int64_t c) const {
    return CL ? (b * P + p) * channels() + c : (b * channels() + c) * P + p;
  }
};

#define NASLUNG_DISPATCH(CL, C, FN, ...)                   \
  do {                                                     \
    if (CL) {                                              \
      switch (C) {                                         \
        case 4: FN<true, 4>(__VA_ARGS__); break;           \
        case 8: FN<true, 8>(__VA_ARGS__); break;           \
        case 16: FN<true, 16>(__VA_ARGS__); break;         \
        default: FN<true, 0>(__VA_ARGS__);                 \
      }                                                    \
    } else {                                               \
      switch (C) {                                         \
        case 4: FN<false, 4>(__VA_ARGS__); break;          \
        case 8: FN<false, 8>(__VA_ARGS__); break;          \
        case 16: FN<false, 16>(__VA_ARGS__); break;        \
        default: FN<false, 0>(__VA_ARGS__);                \
      }                                                    \
    }                                                      \
  } while (0)

template <bool CL, int CC>
void descriptor_kernel(const float* x, const float* a, float* desc, int64_t B, int64_t C, int64_t P) {
  const Pos<CL, CC> ix{C, P};
  const int64_t n = ix.channels();
  const float inv_c = 1.0f / static_cast<float>(n);
  const auto one = [&](int64_t b, int64_t p) {
    const float* ab = a + b * n;
    if (wide(CL, n)) {
      const float* xv = x + (b * P + p) * n;
      v8 sum = splat(0.f), best = splat(-std::numeric_limits<float>::infinity());
      iv8 nan = {};
      for (int64_t k = 0; k < n; k += kVec) {
        const v8 v = load8(xv + k) * load8(ab + k);
        sum += v;
        best = select(best < v, v, best);
        nan |= (v != v);
      }
      bool any_nan = false;
      for (int l = 0; l < kVec; ++l) any_nan = any_nan || nan[l] != 0;
      desc[(b * 2) * P + p] = lane_sum(sum) * inv_c;
      desc[(b * 2 + 1) * P + p] = any_nan ? std::numeric_limits<float>::quiet_NaN() : lane_max(best);
      return;
    }
    float sum = 0.f, best = -std::numeric_limits<float>::infinity();
    bool nan = false;
    for (int64_t c = 0; c < n; ++c) {
      const float v = x[ix.at(b, p, c)] * ab[c];
      sum += v;
      best = std::max(best, v);
      nan = nan || (v != v);
    }
    desc[(b * 2) * P + p] = sum * inv_c;
    desc[(b * 2 + 1) * P + p] = nan ? std::numeric_limits<float>::quiet_NaN() : best;  // as torch.amax
  };
  at::parallel_for(0, B * P, 4096, [&](int64_t lo, int64_t hi) {
    if constexpr (kVectorised<CL, CC>) {
      visit_rows(lo, hi, P, [&](int64_t b, int64_t p) {  // the same operations, 8 positions at a time
        v8 ch[CC > 0 ? CC : 1];
        load_planes<CC>(x + (b * P + p) * CC, ch);
        const float* ab = a + b * CC;
        v8 sum = splat(0.f), best = splat(-std::numeric_limits<float>::infinity());
        iv8 nan = {};
        for (int c = 0; c < CC; ++c) {
          const v8 v = ch[c] * splat(ab[c]);
          sum += v;
          best = select(best < v, v, best);
          nan |= (v != v);
        }
        store8(desc + (b * 2) * P + p, sum * splat(inv_c));
        store8(desc + (b * 2 + 1) * P + p, select(nan, splat(std::numeric_limits<float>::quiet_NaN()), best));
      }, one);
    } else {
      for (int64_t i = lo; i < hi; ++i) one(i / P, i % P);
    }
  });
}

// desc[b, 0, p] = mean_c x * a, desc[b, 1, p] = max_c x * a: the spatial gate's input (eq. 3) of x * M_c,
// without writing x * M_c.  -> desc (B, 2, P), contiguous
at::Tensor gate_descriptor(const at::Tensor& x_, const at::Tensor& a_) {
  Shape s = shape_of(x_);
  auto a_c = a_.contiguous();
  auto desc_t = at::empty({s.B, 2, s.P}, x_.options());
  NASLUNG_DISPATCH(s.cl, s.C, descriptor_kernel, x_.data_ptr<float>(), a_c.data_ptr<float>(),
                   desc_t.data_ptr<float>(), s.B, s.C, s.P);
  return desc_t;
}

template <bool CL, int CC>
void apply_kernel(const float* x, const float* a, const float* sp, float* out, int64_t B, int64_t C, int64_t P) {
  if constexpr (CL) {
    const int64_t n = CC > 0 ? CC : C;
    const auto one = [&](int64_t b, int64_t p) {
      const int64_t i = b * P + p;
      const float* ab = a + b * n;
      const float w = sp[i];
      if (wide(CL, n)) {
        for (int64_t k = 0; k < n; k += kVec)
          store8(out + i * n + k, load8(x + i * n + k) * (load8(ab + k) * splat(w)));
        return;
      }
      for (int64_t c = 0; c < n; ++c) out[i * n + c] = x[i * n + c] * (ab[c] * w);
    };
    at::parallel_for(0, B * P, 2048, [&](int64_t lo, int64_t hi) {
      if constexpr (CL && CC == 4) {
        visit_rows(lo, hi, P, [&](int64_t b, int64_t p) {
          const int64_t i = b * P + p;
          v8 ch[CC > 0 ? CC : 1];
          load_planes<CC>(x + i * CC, ch);
          const v8 w = load8(sp + i);
          for (int c = 0; c < CC; ++c) ch[c] = ch[c] * (splat(a[b * CC + c]) * w);
          store_planes<CC>(ch, out + i * CC);
        }, one);
      } else if (wide(CL, n)) {  // row by row: no division per voxel
        visit_rows(lo, hi, P, [&](int64_t b, int64_t p) {
          for (int64_t q = p; q < p + kVec; ++q) one(b, q);
        }, one);
      } else {
        for (int64_t i = lo; i < hi; ++i) one(i / P, i % P);
      }
    });
  } else {
    at::parallel_for(0, B * C, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const float ac = a[i];
        const float* sb = sp + (i / C) * P;
        for (int64_t p = 0; p < P; ++p) out[i * P + p] = x[i * P + p] * (ac * sb[p]);
      }
    });
  }
}

// out_t = x * a[b, c] * s[b, p] (eq. 1 with both gates), out_t allocated like x.
void gate_apply_into(const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& s_, at::Tensor& out_t) {
  Shape s = shape_of(x_);
  auto a_c = a_.contiguous();
  auto s_c = s_.contiguous();
  NASLUNG_DISPATCH(s.cl, s.C, apply_kernel, x_.data_ptr<float>(), a_c.data_ptr<float>(), s_c.data_ptr<float>(),
                   out_t.data_ptr<float>(), s.B, s.C, s.P);
}

// out = x * a[b, c] * s[b, p] (eq. 1 with both gates), in x's layout.
at::Tensor gate_apply(const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& s_) {
  auto out_t = like(x_, shape_of(x_));
  gate_apply_into(x_, a_, s_, out_t);
  return out_t;
}

template <bool CL, int CC>
void grad_spatial_kernel(const float* g, const float* x, const float* a, float* ds, float* tie_inv, int64_t B,
                         int64_t C, int64_t P) {
  const Pos<CL, CC> ix{C, P};
  const int64_t n = ix.channels();
  const auto one = [&](int64_t b, int64_t p) {
    const int64_t i = b * P + p;
    const float* ab = a + b * n;
    if (wide(CL, n)) {
      const float *xv = x + i * n, *gv = g + i * n;
      v8 acc = splat(0.f), best = splat(-std::numeric_limits<float>::infinity()), ties = splat(0.f);
      for (int64_t k = 0; k < n; k += kVec) {
        const v8 y = load8(xv + k) * load8(ab + k);
        acc += load8(gv + k) * y;
        best = select(best < y, y, best);
      }
      const v8 top = splat(lane_max(best));
      for (int64_t k = 0; k < n; k += kVec) ties += indicator(load8(xv + k) * load8(ab + k) == top);
      ds[i] = lane_sum(acc);
      tie_inv[i] = 1.f / lane_sum(ties);
      return;
    }
    float acc = 0.f, best = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < n; ++c) {
      const int64_t j = ix.at(b, p, c);
      const float y = x[j] * ab[c];
      acc += g[j] * y;
      best = std::max(best, y);  // a NaN makes acc NaN: ds is NaN either way
    }
    float ties = 0.f;
    for (int64_t c = 0; c < n; ++c) ties += static_cast<float>(x[ix.at(b, p, c)] * ab[c] == best);
    ds[i] = acc;
    tie_inv[i] = 1.f / ties;
  };
  at::parallel_for(0, B * P, 4096, [&](int64_t lo, int64_t hi) {
    if constexpr (kVectorised<CL, CC>) {
      visit_rows(lo, hi, P, [&](int64_t b, int64_t p) {
        const int64_t i = b * P + p;
        v8 gc[CC > 0 ? CC : 1], y[CC > 0 ? CC : 1];
        load_planes<CC>(g + i * CC, gc);
        load_planes<CC>(x + i * CC, y);
        v8 acc = splat(0.f), best = splat(-std::numeric_limits<float>::infinity()), ties = splat(0.f);
        for (int c = 0; c < CC; ++c) {
          y[c] = y[c] * splat(a[b * CC + c]);
          acc += gc[c] * y[c];
          best = select(best < y[c], y[c], best);
        }
        for (int c = 0; c < CC; ++c) ties += indicator(y[c] == best);
        store8(ds + i, acc);
        store8(tie_inv + i, splat(1.f) / ties);
      }, one);
    } else {
      for (int64_t i = lo; i < hi; ++i) one(i / P, i % P);
    }
  });
}

// Backward, pass 1: ds[b, p] = sum_c g * x * a (the gradient of M_s), and 1 / the number of channels that tie
// for max_c x * a (amax's share, used by passes 2 and 3).  -> (B, P), (B, P)
std::tuple<at::Tensor, at::Tensor> grad_spatial(const at::Tensor& g_, const at::Tensor& x_, const at::Tensor& a_) {
  Shape s = shape_of(x_);
  TORCH_CHECK(shape_of(g_).cl == s.cl, "grad_spatial: g and x must share a layout");
  auto a_c = a_.contiguous();
  auto ds_t = at::empty({s.B, s.P}, x_.options());
  auto tie_t = at::empty({s.B, s.P}, x_.options());
  NASLUNG_DISPATCH(s.cl, s.C, grad_spatial_kernel, g_.data_ptr<float>(), x_.data_ptr<float>(),
                   a_c.data_ptr<float>(), ds_t.data_ptr<float>(), tie_t.data_ptr<float>(), s.B, s.C, s.P);
  return {ds_t, tie_t};
}

// dy = g * s + d0 / C + d1 * [y == max_c y] / ties for y = x * a at one element: the gradient of y = x * M_c
// (the output's path, the descriptor's mean, and its max with amax's rule for ties). best is the forward's
// max_c y (the descriptor), computed by the same float products, so the comparison is exact.
// Passes 2 and 3 each write out the per-position terms (w, base, best, share) as plain locals: gathering them
// into a struct returned by a helper made both passes about 2x slower (2.4 -> 5.3 ms and 3.9 -> 6.4 ms, 4
// channels at 32^3, batch 32, one thread: g++ 12 no longer vectorised the channel loop).
inline float element_grad(float y, float g, float w, float base, float best, float share) {
  return g * w + base + share * static_cast<float>(y == best);  // a product, not a branch: it vectorises
}

// The per-position terms of element_grad as vectors, for positions p .. p + 7 of batch row b (Block) or for
// position p in every lane (a voxel of 8+ channels): M_s, the descriptor mean's gradient share (over C), the
// descriptor max and its gradient share (over the ties). Outputs by reference: grad_channel and grad_input
// both read them (returning a struct slowed the scalar loops, below; these inline the same).
template <bool Block>
inline void position_terms(const float* sp, const float* dd, const float* desc, const float* tie_inv, int64_t b,
                           int64_t p, int64_t P, float inv_c, v8& w, v8& base, v8& best, v8& share) {
  const auto at = [](const float* v) {
    if constexpr (Block) return load8(v);
    else return splat(*v);
  };
  const int64_t i = b * P + p;
  w = at(sp + i);
  base = at(dd + (b * 2) * P + p) * splat(inv_c);
  best = at(desc + (b * 2 + 1) * P + p);
  share = at(dd + (b * 2 + 1) * P + p) * at(tie_inv + i);
}

template <bool CL, int CC>
void grad_channel_kernel(const float* g, const float* x, const float* a, const float* sp, const float* dd,
                         const float* desc, const float* tie_inv, float* da, int64_t B, int64_t C, int64_t P) {
  const Pos<CL, CC> ix{C, P};
  const int64_t n = ix.channels();
  const float inv_c = 1.0f / static_cast<float>(n);
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<double> acc(n);
    for (int64_t b = lo; b < hi; ++b) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const float* ab = a + b * n;
      int64_t p = 0;
      if constexpr (CL && CC == 4) {
        // Float sums over up to 128 positions per lane, then added into acc in double.
        for (; p + kVec <= P;) {
          v8 part[CC > 0 ? CC : 1] = {};
          for (int64_t stop = std::min(P - P % kVec, p + 16 * kVec); p < stop; p += kVec) {
            const int64_t i = b * P + p;
            v8 gc[CC > 0 ? CC : 1], xc[CC > 0 ? CC : 1], w, base, best, share;
            load_planes<CC>(g + i * CC, gc);
            load_planes<CC>(x + i * CC, xc);
            position_terms<true>(sp, dd, desc, tie_inv, b, p, P, inv_c, w, base, best, share);
            for (int c = 0; c < CC; ++c) {
              const v8 y = xc[c] * splat(ab[c]);
              part[c] += xc[c] * (gc[c] * w + base + share * indicator(y == best));
            }
          }
          for (int c = 0; c < CC; ++c)
            for (int l = 0; l < kVec; ++l) acc[c] += static_cast<double>(part[c][l]);
        }
      } else if (wide(CL, n)) {  // voxel by voxel, C / 8 vectors of sums over up to 128 positions
        std::vector<v8> part(n / kVec);
        while (p < P) {
          std::fill(part.begin(), part.end(), splat(0.f));
          for (const int64_t stop = std::min(P, p + 16 * kVec); p < stop; ++p) {
            const int64_t i = b * P + p;
            v8 w, base, best, share;
            position_terms<false>(sp, dd, desc, tie_inv, b, p, P, inv_c, w, base, best, share);
            for (int64_t k = 0; k < n; k += kVec) {
              const v8 xv = load8(x + i * n + k), y = xv * load8(ab + k);
              part[k / kVec] += xv * (load8(g + i * n + k) * w + base + share * indicator(y == best));
            }
          }
          for (int64_t c = 0; c < n; ++c) acc[c] += static_cast<double>(part[c / kVec][c % kVec]);
        }
      }
      for (; p < P; ++p) {
        const int64_t i = b * P + p;
        const float w = sp[i], base = dd[(b * 2) * P + p] * inv_c, best = desc[(b * 2 + 1) * P + p];
        const float share = dd[(b * 2 + 1) * P + p] * tie_inv[i];
        for (int64_t c = 0; c < n; ++c) {
          const int64_t j = ix.at(b, p, c);
          const float xv = x[j];
          acc[c] += static_cast<double>(xv * element_grad(xv * ab[c], g[j], w, base, best, share));
        }
      }
      for (int64_t c = 0; c < n; ++c) da[b * n + c] = static_cast<float>(acc[c]);
    }
  });
}

// Backward, pass 2: da[b, c] = sum_p x * dy, dy the gradient of y = x * a (element_grad).  -> (B, C)
at::Tensor grad_channel(const at::Tensor& g_, const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& s_,
                        const at::Tensor& ddesc_, const at::Tensor& desc_, const at::Tensor& tie_inv_) {
  Shape s = shape_of(x_);
  TORCH_CHECK(shape_of(g_).cl == s.cl, "grad_channel: g and x must share a layout");
  auto a_c = a_.contiguous();
  auto s_c = s_.contiguous();
  auto d_c = ddesc_.contiguous();
  auto desc_c = desc_.contiguous();
  auto tie_c = tie_inv_.contiguous();
  auto da_t = at::empty({s.B, s.C}, x_.options());
  NASLUNG_DISPATCH(s.cl, s.C, grad_channel_kernel, g_.data_ptr<float>(), x_.data_ptr<float>(),
                   a_c.data_ptr<float>(), s_c.data_ptr<float>(), d_c.data_ptr<float>(), desc_c.data_ptr<float>(),
                   tie_c.data_ptr<float>(), da_t.data_ptr<float>(), s.B, s.C, s.P);
  return da_t;
}

template <bool CL, int CC>
void grad_input_kernel(const float* g, const float* x, const float* a, const float* sp, const float* dd,
                       const float* desc, const float* tie_inv, const float* davg, const float* dmax,
                       const int64_t* argmax, float* dx, int64_t B, int64_t C, int64_t P) {
  const Pos<CL, CC> ix{C, P};
  const int64_t n = ix.channels();
  const float inv_c = 1.0f / static_cast<float>(n);
  const float inv_p = 1.0f / static_cast<float>(P);
  at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> pooled(n);
    for (int64_t b = lo; b < hi; ++b) {
      const float* ab = a + b * n;
      for (int64_t c = 0; c < n; ++c) pooled[c] = davg[b * n + c] * inv_p;
      int64_t p = 0;
      if constexpr (CL && CC == 4) {
        for (; p + kVec <= P; p += kVec) {
          const int64_t i = b * P + p;
          v8 gc[CC > 0 ? CC : 1], xc[CC > 0 ? CC : 1], w, base, best, share;
          load_planes<CC>(g + i * CC, gc);
          load_planes<CC>(x + i * CC, xc);
          position_terms<true>(sp, dd, desc, tie_inv, b, p, P, inv_c, w, base, best, share);
          for (int c = 0; c < CC; ++c) {
            const v8 ac = splat(ab[c]), y = xc[c] * ac;
            xc[c] = ac * (gc[c] * w + base + share * indicator(y == best)) + splat(pooled[c]);
          }
          store_planes<CC>(xc, dx + i * CC);
        }
      } else if (wide(CL, n)) {  // voxel by voxel, C / 8 vectors each
        for (; p < P; ++p) {
          const int64_t i = b * P + p;
          v8 w, base, best, share;
          position_terms<false>(sp, dd, desc, tie_inv, b, p, P, inv_c, w, base, best, share);
          for (int64_t k = 0; k < n; k += kVec) {
            const v8 ac = load8(ab + k), y = load8(x + i * n + k) * ac;
            const v8 dy = load8(g + i * n + k) * w + base + share * indicator(y == best);
            store8(dx + i * n + k, ac * dy + load8(pooled.data() + k));
          }
        }
      }
      for (; p < P; ++p) {
        const int64_t i = b * P + p;
        const float w = sp[i], base = dd[(b * 2) * P + p] * inv_c, best = desc[(b * 2 + 1) * P + p];
        const float share = dd[(b * 2 + 1) * P + p] * tie_inv[i];
        for (int64_t c = 0; c < n; ++c) {
          const int64_t j = ix.at(b, p, c);
          dx[j] = ab[c] * element_grad(x[j] * ab[c], g[j], w, base, best, share) + pooled[c];
        }
      }
      // The channel gate's max pooling: its gradient goes to the first spatial maximum (torch.max(dim)).
      for (int64_t c = 0; c < n; ++c) dx[ix.at(b, argmax[b * n + c], c)] += dmax[b * n + c];
    }
  });
}

// Backward, pass 3: dx = a * dy + davg / P, plus dmax at the first spatial maximum of each (b, c) (the channel
// gate's pooling; argmax from spatial_pool).  -> dx in x's layout
at::Tensor grad_input(const at::Tensor& g_, const at::Tensor& x_, const at::Tensor& a_, const at::Tensor& s_,
                      const at::Tensor& ddesc_, const at::Tensor& desc_, const at::Tensor& tie_inv_,
                      const at::Tensor& davg_, const at::Tensor& dmax_, const at::Tensor& argmax_) {
  Shape s = shape_of(x_);
  TORCH_CHECK(shape_of(g_).cl == s.cl, "grad_input: g and x must share a layout");
  auto a_c = a_.contiguous();
  auto s_c = s_.contiguous();
  auto d_c = ddesc_.contiguous();
  auto davg_c = davg_.contiguous();
  auto dmax_c = dmax_.contiguous();
  auto arg_c = argmax_.contiguous();
  auto desc_c = desc_.contiguous();
  auto tie_c = tie_inv_.contiguous();
  auto dx_t = like(x_, s);
  NASLUNG_DISPATCH(s.cl, s.C, grad_input_kernel, g_.data_ptr<float>(), x_.data_ptr<float>(),
                   a_c.data_ptr<float>(), s_c.data_ptr<float>(), d_c.data_ptr<float>(), desc_c.data_ptr<float>(),
                   tie_c.data_ptr<float>(), davg_c.data_ptr<float>(),
                   dmax_c.data_ptr<float>(), arg_c.data_ptr<int64_t>(), dx_t.data_ptr<float>(), s.B, s.C, s.P);
  return dx_t;
}

// The spatial gate's frequency-domain mix (naslung.models.blocks.fft_conv._mix): out[b, o] = sum_c
// spectra[b, c] * filters[o, c] (filters conjugated when conjugate), complex64, the spectral axes F
// contiguous in every (b, c) / (o, c) slice, the first two axes of any stride (the backward passes
// transposes).  (B, C, *F) x (O, C, *F) -> (B, O, *F), contiguous. torch's ops wrote a temporary per channel
// and took 2.0 ms at batch 32 for the 32^3 gate (2 threads).
at::Tensor spectrum_mix(const at::Tensor& spectra, const at::Tensor& filters, bool conjugate) {
  TORCH_CHECK(spectra.device().is_cpu() && filters.device().is_cpu() &&
                  spectra.scalar_type() == at::kComplexFloat && filters.scalar_type() == at::kComplexFloat,
              "spectrum_mix: complex64 CPU tensors are needed");
  TORCH_CHECK(spectra.dim() >= 3 && filters.dim() == spectra.dim() && spectra.size(1) == filters.size(1),
              "spectrum_mix: (B, C, *F) and (O, C, *F) are needed");
  for (int64_t d = 2; d < spectra.dim(); ++d)
    TORCH_CHECK(spectra.size(d) == filters.size(d), "spectrum_mix: the spectral sizes differ");
  TORCH_CHECK(spectra[0][0].is_contiguous() && filters[0][0].is_contiguous(),
              "spectrum_mix: the spectral axes must be contiguous");
  const int64_t B = spectra.size(0), C = spectra.size(1), O = filters.size(0);
  const int64_t F = spectra[0][0].numel();
  std::vector<int64_t> sizes(spectra.sizes().begin(), spectra.sizes().end());
  sizes[1] = O;
  at::Tensor out = at::empty(sizes, spectra.options());
  // complex values as (re, im) float pairs; strides in complex elements, so twice that in floats
  const float* sp = reinterpret_cast<const float*>(spectra.data_ptr());
  const float* fp = reinterpret_cast<const float*>(filters.data_ptr());
  float* op = reinterpret_cast<float*>(out.data_ptr());
  const int64_t sb = 2 * spectra.stride(0), sc = 2 * spectra.stride(1);
  const int64_t fo = 2 * filters.stride(0), fc = 2 * filters.stride(1);
  const float sign = conjugate ? -1.f : 1.f;
  constexpr int64_t kChunk = 1024;  // spectral values per task
  const int64_t chunks = (F + kChunk - 1) / kChunk;
  at::parallel_for(0, B * O * chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t bo = t / chunks, f0 = (t % chunks) * kChunk, f1 = std::min(F, f0 + kChunk);
      const int64_t b = bo / O, o = bo % O;
      float* dst = op + 2 * (bo * F);
      for (int64_t c = 0; c < C; ++c) {
        const float* x = sp + b * sb + c * sc;
        const float* h = fp + o * fo + c * fc;
        if (c == 0) {
          for (int64_t f = f0; f < f1; ++f) {
            const float xr = x[2 * f], xi = x[2 * f + 1], hr = h[2 * f], hi_ = sign * h[2 * f + 1];
            dst[2 * f] = xr * hr - xi * hi_;
            dst[2 * f + 1] = xr * hi_ + xi * hr;
          }
        } else {
          for (int64_t f = f0; f < f1; ++f) {
            const float xr = x[2 * f], xi = x[2 * f + 1], hr = h[2 * f], hi_ = sign * h[2 * f + 1];
            dst[2 * f] += xr * hr - xi * hi_;
            dst[2 * f + 1] += xr * hi_ + xi * hr;
          }
        }
      }
    }
  });
  return out;
}

inline float sigmoid(float v) { return 1.f / (1.f + std::exp(-v)); }

// M_c of eq. 2 from the pooled descriptors: a[b] = sigmoid(MLP(avg[b]) + MLP(mx[b])), MLP(v) = w2 relu(w1 v +
// b1) + b2 with w1 (H, C), w2 (C, H). Tiny (C <= a few hundred), so serial.  -> (B, C)
at::Tensor channel_gate(const at::Tensor& avg_, const at::Tensor& mx_, const at::Tensor& w1_, const at::Tensor& b1_,
                        const at::Tensor& w2_, const at::Tensor& b2_) {
  auto w1_c = w1_.contiguous(), b1_c = b1_.contiguous(), w2_c = w2_.contiguous(), b2_c = b2_.contiguous();
  const float *avg = avg_.data_ptr<float>(), *mx = mx_.data_ptr<float>(), *w1 = w1_c.data_ptr<float>(),
              *b1 = b1_c.data_ptr<float>(), *w2 = w2_c.data_ptr<float>(), *b2 = b2_c.data_ptr<float>();
  const int64_t B = avg_.size(0), C = avg_.size(1), H = w1_.size(0);
  TORCH_CHECK(w1_.size(1) == C && w2_.size(0) == C && w2_.size(1) == H && b1_.numel() == H && b2_.numel() == C,
              "serve: the channel MLP's shapes do not match the map's channels");
  auto a_t = at::empty({B, C}, avg_.options());
  float* a = a_t.data_ptr<float>();
  std::vector<float> hidden(2 * H);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < H; ++j) {
      float ha = b1[j], hm = b1[j];
      for (int64_t c = 0; c < C; ++c) {
        ha += w1[j * C + c] * avg[b * C + c];
        hm += w1[j * C + c] * mx[b * C + c];
      }
      hidden[j] = std::max(ha, 0.f);
      hidden[H + j] = std::max(hm, 0.f);
    }
    for (int64_t c = 0; c < C; ++c) {
      float oa = b2[c], om = b2[c];
      for (int64_t j = 0; j < H; ++j) {
        oa += w2[c * H + j] * hidden[j];
        om += w2[c * H + j] * hidden[H + j];
      }
      a[b * C + c] = sigmoid(oa + om);
    }
  }
  return a_t;
}

// The depth taps of the plane-FFT gate (naslung.models.blocks.fft_conv.plane_fft_conv) for one output plane d
// of one sample: out[d] = sum_n sum_i x[n, q] * h[n, i] over the K taps whose plane q = d - r + i (adjoint:
// q = d + r - i) lies inside the map (the zero padding adds nothing); complex64 planes of F values, x (N, D,
// F) -> out (F). The filters h (N, K, F) come as two float arrays (tap_filters): re duplicated (hr, hr, ...)
// and im with alternating sign (-hi, hi, ...), so that with x interleaved (re, im, ...) a complex product is
// x * re + swap_pairs(x) * im: two FMAs and a shuffle per 4 complex values.
void depth_taps(const float* x, const float* re, const float* im, float* out, int64_t N, int64_t d, int64_t D,
                int64_t K, int64_t F, bool adjoint) {
  const int64_t r = K / 2, n = 2 * F;  // floats per plane
  const iv8 swap_pairs = {1, 0, 3, 2, 5, 4, 7, 6};
  // taps i0 .. i1 - 1 reach planes inside the map
  const int64_t i0 = adjoint ? std::max<int64_t>(0, d + r - D + 1) : std::max<int64_t>(0, r - d);
  const int64_t i1 = adjoint ? std::min<int64_t>(K, d + r + 1) : std::min<int64_t>(K, D + r - d);
  const auto plane = [&](int64_t i) { return adjoint ? d + r - i : d - r + i; };
  int64_t j = 0;
  for (; j + kVec <= n; j += kVec) {
    v8 acc = splat(0.f);
    for (int64_t c = 0; c < N; ++c)
      for (int64_t i = i0; i < i1; ++i) {
        const v8 xv = load8(x + (c * D + plane(i)) * n + j);
        const int64_t t = (c * K + i) * n + j;
        acc += xv * load8(re + t) + __builtin_shuffle(xv, swap_pairs) * load8(im + t);
      }
    store8(out + j, acc);
  }
  for (; j < n; j += 2) {  // n is even: whole complex values
    float zr = 0.f, zi = 0.f;
    for (int64_t c = 0; c < N; ++c)
      for (int64_t i = i0; i < i1; ++i) {
        const float* xv = x + (c * D + plane(i)) * n + j;
        const int64_t t = (c * K + i) * n + j;
        zr += xv[0] * re[t] + xv[1] * im[t];
        zi += xv[1] * re[t + 1] + xv[0] * im[t + 1];
      }
    out[j] = zr;
    out[j + 1] = zi;
  }
}

// depth_taps' filter arrays from complex64 filters (any shape, contiguous), conjugated when conjugate.
std::pair<std::vector<float>, std::vector<float>> tap_filters(const at::Tensor& filters, bool conjugate) {
  const at::Tensor h = filters.contiguous();
  const int64_t values = h.numel();
  const float* hp = reinterpret_cast<const float*>(h.data_ptr());
  const float sign = conjugate ? -1.f : 1.f;
  std::vector<float> re(2 * values), im(2 * values);
  for (int64_t v = 0; v < values; ++v) {
    re[2 * v] = re[2 * v + 1] = hp[2 * v];
    im[2 * v] = -sign * hp[2 * v + 1];
    im[2 * v + 1] = sign * hp[2 * v + 1];
  }
  return {std::move(re), std::move(im)};
}

void check_planes(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kComplexFloat && t.dim() == 4,
              what, ": a complex64 CPU tensor (B, N, D, F) is needed");
}

// The depth taps over a batch: x (B, N, D, F) and h (M, N, K, F), complex64 -> (B, M, D, F) with out[b, m, d]
// = sum_n sum_i x[b, n, d - r + i] h[m, n, i] (the plane-FFT conv's forward), or with adjoint x[b, n, d + r -
// i] conj(h[m, n, i]) (its input gradient, h transposed to (C, O, K, F) by the caller). F: one plane's
// spectrum, flattened.
at::Tensor plane_taps(const at::Tensor& x_, const at::Tensor& h_, bool adjoint) {
  check_planes(x_, "plane_taps");
  check_planes(h_, "plane_taps");
  TORCH_CHECK(h_.size(1) == x_.size(1) && h_.size(3) == x_.size(3) && h_.size(2) % 2 == 1,
              "plane_taps: x (B, N, D, F) and h (M, N, K, F) with an odd K are needed");
  const at::Tensor x = x_.contiguous();
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), F = x.size(3), M = h_.size(0), K = h_.size(2);
  const auto [re, im] = tap_filters(h_, adjoint);
  at::Tensor out = at::empty({B, M, D, F}, x.options());
  const float* xs = reinterpret_cast<const float*>(x.data_ptr());
  float* os = reinterpret_cast<float*>(out.data_ptr());
  at::parallel_for(0, B * M * D, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / (M * D), m = (t / D) % M, d = t % D;
      const int64_t h0 = m * N * K * 2 * F;
      depth_taps(xs + b * N * D * 2 * F, re.data() + h0, im.data() + h0, os + t * 2 * F, N, d, D, K, F,
                 adjoint);
    }
  });
  return out;
}

// The plane-FFT conv's weight gradient in the frequency domain: g (B, O, D, F) and x (B, C, D, F) complex64 ->
// (O, C, K, F), dh[o, c, i] = sum_b sum_d g[b, o, d] conj(x[b, c, d - r + i]) over the planes inside the map.
at::Tensor plane_taps_weight(const at::Tensor& g_, const at::Tensor& x_, int64_t K) {
  check_planes(g_, "plane_taps_weight");
  check_planes(x_, "plane_taps_weight");
  TORCH_CHECK(g_.size(0) == x_.size(0) && g_.size(2) == x_.size(2) && g_.size(3) == x_.size(3) && K % 2 == 1,
              "plane_taps_weight: g (B, O, D, F), x (B, C, D, F) and an odd K are needed");
  const at::Tensor g = g_.contiguous(), x = x_.contiguous();
  const int64_t B = g.size(0), O = g.size(1), C = x.size(1), D = g.size(2), F = g.size(3), r = K / 2, n = 2 * F;
  at::Tensor out = at::empty({O, C, K, F}, g.options());
  const float* gs = reinterpret_cast<const float*>(g.data_ptr());
  const float* xs = reinterpret_cast<const float*>(x.data_ptr());
  float* os = reinterpret_cast<float*>(out.data_ptr());
  const iv8 swap_pairs = {1, 0, 3, 2, 5, 4, 7, 6};
  const iv8 dup_re = {0, 0, 2, 2, 4, 4, 6, 6}, dup_im = {1, 1, 3, 3, 5, 5, 7, 7};
  const v8 sign = {1.f, -1.f, 1.f, -1.f, 1.f, -1.f, 1.f, -1.f};
  // A task is one (o, c) and a span of the plane: each g plane is read once, into the K taps' sums, and the K
  // x planes it meets slide along d (in cache).
  constexpr int64_t kSpan = 512;  // floats
  const int64_t spans = (n + kSpan - 1) / kSpan;
  at::parallel_for(0, O * C * spans, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t o = t / (C * spans), c = (t / spans) % C, j0 = (t % spans) * kSpan;
      const int64_t j1 = std::min(n, j0 + kSpan);
      float* dst = os + (o * C + c) * K * n;
      for (int64_t i = 0; i < K; ++i) std::fill(dst + i * n + j0, dst + i * n + j1, 0.f);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t d = 0; d < D; ++d) {
          const float* gp = gs + ((b * O + o) * D + d) * n;
          const int64_t i0 = std::max<int64_t>(0, r - d), i1 = std::min<int64_t>(K, D + r - d);
          for (int64_t i = i0; i < i1; ++i) {
            const float* xp = xs + ((b * C + c) * D + d - r + i) * n;
            float* acc = dst + i * n;
            int64_t j = j0;
            for (; j + kVec <= j1; j += kVec) {  // g conj(x): (gr xr + gi xi, gi xr - gr xi)
              const v8 gv = load8(gp + j), xv = load8(xp + j);
              store8(acc + j, load8(acc + j) + gv * __builtin_shuffle(xv, dup_re) +
                                  sign * (__builtin_shuffle(gv, swap_pairs) * __builtin_shuffle(xv, dup_im)));
            }
            for (; j < j1; j += 2) {
              acc[j] += gp[j] * xp[j] + gp[j + 1] * xp[j + 1];
              acc[j + 1] += gp[j + 1] * xp[j] - gp[j] * xp[j + 1];
            }
          }
        }
    }
  });
  return out;
}

// Whether plane_fft.h transforms length n: 5-smooth (its radices and plain DFTs reach 8 points at most).
bool smooth_length(int64_t n) {
  if (n < 1) return false;
  for (int64_t p : {2, 3, 5})
    while (n % p == 0) n /= p;
  return n == 1;
}

// body(p, scratch) for every plane p < planes, a few planes a task, each task with its own scratch for the
// L1 x L2 transforms of plane_fft.h.
template <typename Body>
void each_plane(int64_t planes, int64_t L1, int64_t L2, const Body& body) {
  const int64_t vecs = (plane_fft::plane_scratch_floats(L1, L2) + 15) / 16;  // CVecs: aligned for them
  at::parallel_for(0, planes, 4, [&](int64_t lo, int64_t hi) {
    std::vector<plane_fft::CVec> scratch(vecs);
    for (int64_t p = lo; p < hi; ++p) body(p, reinterpret_cast<float*>(scratch.data()));
  });
}

// torch.fft.rfftn(x, s=(L1, L2), dim=(-2, -1)) of a float32 CPU tensor (..., H, W), H <= L1, W <= L2: the
// planes' half spectra (..., L1, L2 / 2 + 1) complex64 through plane_fft.h, a few planes a task.
at::Tensor plane_rfft2(const at::Tensor& x_, int64_t L1, int64_t L2) {
  TORCH_CHECK(x_.device().is_cpu() && x_.scalar_type() == at::kFloat && x_.dim() >= 2,
              "plane_rfft2: a float32 CPU tensor (..., H, W) is needed");
  const at::Tensor x = x_.contiguous();
  const int64_t H = x.size(-2), W = x.size(-1), F2 = L2 / 2 + 1;
  TORCH_CHECK(smooth_length(L1) && smooth_length(L2),
              "plane_rfft2: lengths with no prime factor over 5 are needed");
  TORCH_CHECK(H >= 1 && W >= 1 && H <= L1 && W <= L2, "plane_rfft2: planes of at most L1 x L2 are needed");
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes[sizes.size() - 2] = L1;
  sizes[sizes.size() - 1] = F2;
  at::Tensor out = at::empty(sizes, x.options().dtype(at::kComplexFloat));
  const int64_t planes = x.numel() / (H * W);
  const plane_fft::Fft1d& rows = plane_fft::cached_fft(L2, false);
  const plane_fft::Fft1d& cols = plane_fft::cached_fft(L1, false);
  const float* xs = x.data_ptr<float>();
  float* os = reinterpret_cast<float*>(out.data_ptr());
  each_plane(planes, L1, L2, [&](int64_t p, float* scratch) {
    plane_fft::rfft2_plane(xs + p * H * W, H, W, rows, cols, os + p * L1 * F2 * 2, scratch);
  });
  return out;
}

// The window rows r0 .. r0 + Ho - 1, columns c0 .. c0 + Wo - 1 of torch.fft.irfftn(y, s=(L1, L2), dim=(-2,
// -1)) for a complex64 CPU tensor y (..., L1, L2 / 2 + 1): (..., Ho, Wo) float32 through plane_fft.h.
at::Tensor plane_irfft2(const at::Tensor& y_, int64_t L1, int64_t L2, int64_t r0, int64_t Ho, int64_t c0,
                        int64_t Wo) {
  TORCH_CHECK(y_.device().is_cpu() && y_.scalar_type() == at::kComplexFloat && y_.dim() >= 2 &&
                  y_.size(-2) == L1 && y_.size(-1) == L2 / 2 + 1,
              "plane_irfft2: a complex64 CPU tensor (..., L1, L2 / 2 + 1) is needed");
  TORCH_CHECK(smooth_length(L1) && smooth_length(L2),
              "plane_irfft2: lengths with no prime factor over 5 are needed");
  TORCH_CHECK(r0 >= 0 && c0 >= 0 && Ho >= 1 && Wo >= 1 && r0 + Ho <= L1 && c0 + Wo <= L2,
              "plane_irfft2: the window must lie inside the L1 x L2 plane");
  const at::Tensor y = y_.contiguous();
  const int64_t F2 = L2 / 2 + 1;
  std::vector<int64_t> sizes = y.sizes().vec();
  sizes[sizes.size() - 2] = Ho;
  sizes[sizes.size() - 1] = Wo;
  at::Tensor out = at::empty(sizes, y.options().dtype(at::kFloat));
  const int64_t planes = y.numel() / (L1 * F2);
  const plane_fft::Fft1d& rows = plane_fft::cached_fft(L2, true);
  const plane_fft::Fft1d& cols = plane_fft::cached_fft(L1, true);
  const float* ys = reinterpret_cast<const float*>(y.data_ptr());
  float* os = out.data_ptr<float>();
  each_plane(planes, L1, L2, [&](int64_t p, float* scratch) {
    plane_fft::irfft2_plane(ys + p * L1 * F2 * 2, rows, cols, r0, Ho, c0, Wo, os + p * Ho * Wo, scratch);
  });
  return out;
}

// M_s of eq. 3 through per-plane FFTs, (B, 2, D, H, W) -> (B, D * H * W): the 2-D real FFT of every depth
// plane of desc at the lengths `full` (L1, L2; as naslung.models.blocks.fft_conv.fft_length; plane_rfft2), the
// K depth taps summed in the frequency domain (depth_taps), the centre window of each output plane's inverse
// (plane_irfft2), then the bias and the sigmoid in one pass. The same cross-correlation as the 3-D FFT
// (fft_conv) without the depth axis's transforms and its padded planes. At 32^3 and batch 32 (2 threads) the
// plane transforms take about 2.2 and 1.2 ms where torch's rfftn and irfftn took 3.4 and 2.6.
at::Tensor plane_fft_gate(const at::Tensor& desc_t, const std::vector<float>& re, const std::vector<float>& im,
                          at::IntArrayRef full, int64_t K, float bias) {
  const int64_t B = desc_t.size(0), D = desc_t.size(2), H = desc_t.size(3), W = desc_t.size(4), r = K / 2;
  const int64_t L1 = full[0], L2 = full[1], F = L1 * (L2 / 2 + 1);
  at::Tensor spectrum = plane_rfft2(desc_t, L1, L2);  // (B, 2, D, L1, L2 / 2 + 1)
  at::Tensor mixed = at::empty({B, 1, D, L1, L2 / 2 + 1}, spectrum.options());
  const float* xs = reinterpret_cast<const float*>(spectrum.data_ptr());
  float* zs = reinterpret_cast<float*>(mixed.data_ptr());
  at::parallel_for(0, B * D, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / D, d = t % D;
      depth_taps(xs + b * 2 * D * 2 * F, re.data(), im.data(), zs + t * 2 * F, 2, d, D, K, F, false);
    }
  });
  at::Tensor conv = plane_irfft2(mixed, L1, L2, r, H, r, W);  // (B, 1, D, H, W): the centre window
  const float* c = conv.data_ptr<float>();
  auto s_t = at::empty({B, D * H * W}, desc_t.options());
  float* s = s_t.data_ptr<float>();
  at::parallel_for(0, B * D * H, 64, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t bd = i / H, h = i % H;
      const float* in = c + (bd * H + h) * W;
      float* out = s + i * W;
      int64_t x = 0;
      for (; x + kVec <= W; x += kVec) store8(out + x, sigmoid8(load8(in + x) + splat(bias)));
      for (; x < W; ++x) out[x] = sigmoid(in[x] + bias);
    }
  });
  return s_t;
}

// CBAM's whole inference forward (eq. 1-3, channel-first) in one call, for a (B, C, D, H, W) map: the pooled
// descriptors, the channel MLP, the spatial descriptor, the 2 -> 1 spatial gate through per-plane FFTs
// (`filters`: the in-plane-flipped kernel's 2-D spectra at the plane lengths `full`) and the product. At batch 1 torch's op-by-op chain spent
// most of its time between ops, about 20 calls per block. (A direct 7^3 gate was slower than the FFT at every
// side the models use, 4^3 included, so there is no direct path.)
at::Tensor serve(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                 const at::Tensor& b2, const at::Tensor& conv_w, const at::Tensor& conv_b,
                 const at::Tensor& filters, at::IntArrayRef full, int64_t chunk_floats) {
  TORCH_CHECK(x.dim() == 5, "serve: a (B, C, D, H, W) map is needed");
  TORCH_CHECK(conv_w.dim() == 5 && conv_w.size(0) == 1 && conv_w.size(1) == 2 && conv_w.size(2) % 2 == 1 &&
                  conv_w.size(3) == conv_w.size(2) && conv_w.size(4) == conv_w.size(2) && conv_b.numel() == 1,
              "serve: the spatial gate must be a cubic odd 2 -> 1 conv with a bias");
  const int64_t K = conv_w.size(2);
  TORCH_CHECK(full.size() == 2 && filters.dim() == 5 && filters.size(0) == 1 && filters.size(1) == 2 &&
                  filters.size(2) == K && filters.size(3) == full[0] && filters.size(4) == full[1] / 2 + 1 &&
                  filters.scalar_type() == at::kComplexFloat,
              "serve: the gate's plane spectra (1, 2, K, L1, L2 / 2 + 1) complex64 and two FFT lengths are needed");
  const float bias = conv_b.item<float>();
  const auto [re, im] = tap_filters(filters, false);
  const auto block = [&](const at::Tensor& xb, at::Tensor& out) {
    auto pooled = spatial_pool(xb);
    at::Tensor a = channel_gate(std::get<0>(pooled), std::get<1>(pooled), w1, b1, w2, b2);
    at::Tensor desc = gate_descriptor(xb, a).view({xb.size(0), 2, xb.size(2), xb.size(3), xb.size(4)});
    gate_apply_into(xb, a, plane_fft_gate(desc, re, im, full, K, bias), out);
  };
  at::Tensor out = like(x, shape_of(x));
  // A batch goes through in chunks of about chunk_floats map values, one thread a chunk, each chunk's passes
  // and transforms one after the other: its map is still in cache when the product reads it a third time.
  TORCH_CHECK(chunk_floats > 0, "serve: chunk_floats must be positive");
  const int64_t B = x.size(0), sample = std::max<int64_t>(1, x.numel() / std::max<int64_t>(B, 1));
  const int64_t per = std::max<int64_t>(1, chunk_floats / sample);
  const int64_t chunks = (B + per - 1) / per;
  if (chunks == 1) {
    block(x, out);
    return out;
  }
  at::parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t b0 = c * per, n = std::min(per, B - b0);
      at::Tensor ob = out.narrow(0, b0, n);
      block(x.narrow(0, b0, n), ob);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(naslung_cbam, m) {
  m.def("spatial_pool(Tensor x) -> (Tensor, Tensor, Tensor)", spatial_pool);
  m.def("gate_descriptor(Tensor x, Tensor a) -> Tensor", gate_descriptor);
  m.def("gate_apply(Tensor x, Tensor a, Tensor s) -> Tensor", gate_apply);
  m.def("grad_spatial(Tensor g, Tensor x, Tensor a) -> (Tensor, Tensor)", grad_spatial);
  m.def("grad_channel(Tensor g, Tensor x, Tensor a, Tensor s, Tensor ddesc, Tensor desc, Tensor tie_inv)"
        " -> Tensor", grad_channel);
  m.def("grad_input(Tensor g, Tensor x, Tensor a, Tensor s, Tensor ddesc, Tensor desc, Tensor tie_inv,"
        " Tensor davg, Tensor dmax, Tensor argmax) -> Tensor", grad_input);
  m.def("spectrum_mix(Tensor spectra, Tensor filters, bool conjugate) -> Tensor", spectrum_mix);
  m.def("plane_taps(Tensor x, Tensor h, bool adjoint) -> Tensor", plane_taps);
  m.def("plane_rfft2(Tensor x, int L1, int L2) -> Tensor", plane_rfft2);
  m.def("plane_irfft2(Tensor y, int L1, int L2, int r0, int Ho, int c0, int Wo) -> Tensor", plane_irfft2);
  m.def("plane_taps_weight(Tensor g, Tensor x, int K) -> Tensor", plane_taps_weight);
  m.def("serve(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor conv_w, Tensor conv_b,"
        " Tensor filters, int[] full, int chunk_floats) -> Tensor", serve);
}
