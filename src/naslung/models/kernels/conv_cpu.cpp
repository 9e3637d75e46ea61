// Direct few-channel 3-D convolution on CPU, forward and backward, for channels-last float32 tensors.
//
// NAS-Lung's small networks convolve 1-8 channel maps (Model-1: 4 channels at 32^3). There oneDNN reaches a
// quarter of a core's FMA peak forward and far less backward (docs/performance.md: the 4 -> 4 3^3 conv at
// 32^3 took 71 ms backward against 30 ms forward per batch of 32 under AVX2). These kernels compute the same
// convolution (cross-correlation, zero padding K / 2, kernel side K in {1, 3}, stride s in {1, 2}, no groups;
// a bias in the forward only, for the BN-folded serving convs) as a direct loop vectorised along W:
//
//   y[n, o, d, h, w] = sum_{c, kd, kh, kw} weight[o, c, kd, kh, kw]
//                      * x[n, c, s d + kd - p, s h + kh - p, s w + kw - p]      (p = K / 2)
//
// The input is first copied once into a "row-planar" buffer X[n][d'][h'][c][phase][m] (zero-padded in d, h
// and w, and in w split into the s phases w' = s m + phase), so that the eight w-neighbours one FMA needs are
// eight consecutive floats for every tap and stride. One output row (n, d, h) keeps 4 output channels x 16
// w-positions in eight 8-float accumulators; each tap loads 2 vectors of X and broadcasts 4 weights (6 loads
// for 8 FMAs), and the row is written back channels-last at the end.
//
// Backward:
// - input gradient: gx[j] = sum over (p, k) with s p + k - pad = j of weight[k]^T g[p]. Per dimension and phase
//   r = j mod s the taps k with (r + pad - k) divisible by s read g at q + (r + pad - k) / s, where j = s q + r:
//   for s = 1 that is the usual correlation with the flipped kernel, for s = 2 a polyphase split that skips the
//   zeros a transposed convolution would multiply. g is copied into a padded row-planar buffer G first.
// - weight gradient: dW[o, c, k] = sum over n, d, h, w of g[o at (d, h, w)]
//   * x[c at (s d + kd, s h + kh, s w + kw)] (padded coordinates),
//   12 accumulators (4 output channels x 3 taps kw) per (kd, kh, c) over one (n, d) slab; each slab's sums are
//   added into double per thread block, the blocks in a fixed order (deterministic for a thread count).
//
// Vectors are the 8-float GCC vector types of simd8.h, so the same source compiles to AVX2 or AVX-512 code
// (the flags of naslung.models.kernels) without intrinsics.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "simd8.h"

namespace {

using naslung_simd::deinterleave4;
using naslung_simd::interleave4;
using naslung_simd::iv8;
using naslung_simd::kVec;
using naslung_simd::load8;
using naslung_simd::splat;
using naslung_simd::store8;
using naslung_simd::v8;

constexpr int64_t kSpan = 2 * kVec;  // w-positions per accumulator block
constexpr int64_t kBlockO = 4;       // output channels per accumulator block

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Sizes of one convolution: input (N, C, D, H, W), weight (O, C, K, K, K), stride s, padding K / 2.
struct Geometry {
  int64_t N, C, D, H, W, O, K, s, pad, Do, Ho, Wo;
  int64_t span;         // output w-positions per accumulator block: kSpan, or kVec for serving rows <= kVec
  int64_t Wv;           // output w-positions computed per row: Wo rounded up to span
  int64_t Dp, Hp, Lw;   // X: padded d and h extents, floats per (c, phase) row segment
  int64_t Lg;           // G: floats per (o) row segment (g at index q + 1; zeros around)
  int64_t Qv;           // input w-positions per phase computed per row of the input gradient

  // Input sizes (N, C, D, H, W) and weight (O, C, K, K, K). Serving (no planar copy kept) lets rows of at most
  // kVec outputs (the 8^3 and 4^3 stages) take 8-position blocks: 16-position ones computed half zeros there.
  // Training keeps 16: the backward reads X in that geometry.
  Geometry(at::IntArrayRef input, const at::Tensor& weight, int64_t stride, bool serving = false) {
    N = input[0], C = input[1], D = input[2], H = input[3], W = input[4];
    O = weight.size(0), K = weight.size(2), s = stride, pad = K / 2;
    Do = (D + 2 * pad - K) / s + 1, Ho = (H + 2 * pad - K) / s + 1, Wo = (W + 2 * pad - K) / s + 1;
    span = serving && Wo <= kVec ? kVec : kSpan;
    Wv = round_up(Wo, span);
    Dp = D + 2 * pad, Hp = H + 2 * pad;
    Lw = Wv + (K - 1) / s + 1;
    Qv = round_up((W + s - 1) / s, kSpan);
    Lg = std::max(Qv, Wv) + 2;
  }
};

// Calls f(kernel side, stride) with both as compile-time constants (std::integral_constant), so that every
// kernel below is compiled for the four cases 1^3 / 3^3 x stride 1 / 2 and its tap loops unroll.
template <typename F>
auto with_kernel_and_stride(const Geometry& g, F&& f) {
  using One = std::integral_constant<int64_t, 1>;
  using Two = std::integral_constant<int64_t, 2>;
  using Three = std::integral_constant<int64_t, 3>;
  if (g.K == 3) return g.s == 1 ? f(Three{}, One{}) : f(Three{}, Two{});
  return g.s == 1 ? f(One{}, One{}) : f(One{}, Two{});
}

void check(const at::Tensor& t, const char* name, int64_t channels) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 5,
              name, ": a 5-D float32 CPU tensor is needed");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast3d), name, ": a channels_last_3d tensor is needed");
  TORCH_CHECK(channels < 0 || t.size(1) == channels, name, ": wrong channel count");
}

void check_weight(const at::Tensor& weight, int64_t stride) {
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 5,
              "weight: a 5-D float32 CPU tensor is needed");
  const int64_t K = weight.size(2);
  TORCH_CHECK((K == 1 || K == 3) && weight.size(3) == K && weight.size(4) == K, "weight: kernel 1^3 or 3^3");
  TORCH_CHECK(weight.size(0) % kBlockO == 0, "weight: output channels must be a multiple of 4");
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2");
}

// Writes `lanes` channels x 16 positions of accumulators into n <= 16 voxels of C channels, every `step`-th
// voxel from out (the channels from c0): in shuffles when the voxels are consecutive, hold exactly these 4
// channels and the block is full, else one by one.
inline void store_tile(v8 acc[kBlockO][2], float* out, int64_t n, int64_t C, int64_t c0, int64_t lanes,
                       int64_t step = 1) {
  if (step == 1 && C == kBlockO && lanes == kBlockO && n == kSpan) {
    const v8 lo[4] = {acc[0][0], acc[1][0], acc[2][0], acc[3][0]};
    const v8 hi[4] = {acc[0][1], acc[1][1], acc[2][1], acc[3][1]};
    interleave4(lo, out);
    interleave4(hi, out + kVec * C);
    return;
  }
  float tile[kBlockO][kSpan];
  for (int64_t i = 0; i < lanes; ++i) {
    std::memcpy(tile[i], &acc[i][0], sizeof(v8));
    std::memcpy(tile[i] + kVec, &acc[i][1], sizeof(v8));
  }
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < lanes; ++i) out[j * step * C + c0 + i] = tile[i][j];
}

// One row of x (W voxels of C channels) into X's (c, phase, m) segments, m = (w + pad) / S. With 4 channels
// the row is transposed 8 or 16 voxels at a time in registers (a scalar loop storing 4 channels apart ran 4x
// slower than a copy); the remainder, and other channel counts, take the scalar loop.
template <int64_t C, int64_t S>
void scatter_row(const float* in, float* out, int64_t W, int64_t pad, int64_t Lw) {
  int64_t done = 0;
  if constexpr (C == 4 && S == 1) {
    for (; done + kVec <= W; done += kVec) {
      v8 ch[4];
      deinterleave4(in + done * C, ch);
      for (int64_t c = 0; c < C; ++c) store8(out + c * Lw + pad + done, ch[c]);
    }
  } else if constexpr (C == 4 && S == 2) {
    const iv8 even = {0, 2, 4, 6, 8, 10, 12, 14}, odd = {1, 3, 5, 7, 9, 11, 13, 15};
    for (; done + 2 * kVec <= W; done += 2 * kVec) {
      v8 a[4], b[4];
      deinterleave4(in + done * C, a);
      deinterleave4(in + (done + kVec) * C, b);
      for (int64_t c = 0; c < C; ++c) {
        // voxel done + j has w' = done + j + pad: phase (j + pad) % 2, m = done / 2 + (j + pad) / 2
        float* row = out + c * S * Lw + done / 2;
        const v8 ev = __builtin_shuffle(a[c], b[c], even), od = __builtin_shuffle(a[c], b[c], odd);
        store8(row + (pad % 2) * Lw + pad / 2, ev);
        store8(row + ((1 + pad) % 2) * Lw + (1 + pad) / 2, od);
      }
    }
  }
  for (int64_t w = done; w < W; ++w) {
    const int64_t wp = w + pad, phase = wp % S, m = wp / S;
    for (int64_t c = 0; c < C; ++c) out[(c * S + phase) * Lw + m] = in[w * C + c];
  }
}

template <int64_t S>
void scatter_row_any(const float* in, float* out, int64_t W, int64_t C, int64_t pad, int64_t Lw) {
  switch (C) {
    case 1: return scatter_row<1, S>(in, out, W, pad, Lw);
    case 4: return scatter_row<4, S>(in, out, W, pad, Lw);
    case 8: return scatter_row<8, S>(in, out, W, pad, Lw);
    default:
      for (int64_t w = 0; w < W; ++w) {
        const int64_t wp = w + pad, phase = wp % S, m = wp / S;
        for (int64_t c = 0; c < C; ++c) out[(c * S + phase) * Lw + m] = in[w * C + c];
      }
  }
}

// X[n][d'][h'][c][phase][m] = x[n, c, d' - pad, h' - pad, s m + phase - pad], zero outside x.
// One padded depth plane of X: the Hp rows X[n][dp][*] (dp = d + pad) at plane, from x (channels-last).
void fill_plane(const float* src, const Geometry& g, int64_t n, int64_t dp, float* plane) {
  const int64_t row = g.C * g.s * g.Lw, d = dp - g.pad;
  for (int64_t hp = 0; hp < g.Hp; ++hp) {
    float* out = plane + hp * row;
    const int64_t h = hp - g.pad;
    std::fill(out, out + row, 0.f);
    if (d < 0 || d >= g.D || h < 0 || h >= g.H) continue;
    const float* in = src + ((n * g.D + d) * g.H + h) * g.W * g.C;
    if (g.s == 1) scatter_row_any<1>(in, out, g.W, g.C, g.pad, g.Lw);
    else scatter_row_any<2>(in, out, g.W, g.C, g.pad, g.Lw);
  }
}

int64_t plane_floats(const Geometry& g) { return g.Hp * g.C * g.s * g.Lw; }

at::Tensor planar_input(const at::Tensor& x, const Geometry& g) {
  at::Tensor X = at::empty({g.N * g.Dp * plane_floats(g)}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = X.data_ptr<float>();
  at::parallel_for(0, g.N * g.Dp, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nd = lo; nd < hi; ++nd) fill_plane(src, g, nd / g.Dp, nd % g.Dp, dst + nd * plane_floats(g));
  });
  return X;
}

// Where forward_impl reads the planar input: the whole X (training keeps it for the weight gradient), or,
// serving, a ring of K planes per thread filled from x as the output depth advances, so that X is never
// written out and read back whole (it stays in cache: 27 KB a plane for 4 channels at 32^3).
struct PlaneSource {
  const float* X = nullptr;  // the whole planar input, or null: the ring
  const float* x = nullptr;  // the channels-last input (the ring's source)
};

class PlaneRing {
 public:
  PlaneRing(const PlaneSource& source, const Geometry& g, int64_t K)
      : source_(source), g_(g), K_(K), size_(plane_floats(g)) {
    if (source_.X == nullptr) {
      buffer_.resize(K * size_);
      tags_.assign(K, -1);
    }
  }
  // The plane of padded depth dp of sample n.
  const float* plane(int64_t n, int64_t dp) {
    if (source_.X != nullptr) return source_.X + (n * g_.Dp + dp) * size_;
    const int64_t slot = dp % K_, tag = n * g_.Dp + dp;
    float* p = buffer_.data() + slot * size_;
    if (tags_[slot] != tag) {
      fill_plane(source_.x, g_, n, dp, p);
      tags_[slot] = tag;
    }
    return p;
  }

 private:
  const PlaneSource& source_;
  const Geometry& g_;
  const int64_t K_, size_;
  std::vector<float> buffer_;
  std::vector<int64_t> tags_;
};

// G[n][d + 1][h + 1][o][w + 1] = g[n, o, d, h, w] for the output gradient (Do, Ho, Wo), zero around it.
at::Tensor planar_grad(const at::Tensor& grad, const Geometry& g) {
  const int64_t Dq = g.Do + 2, Hq = g.Ho + 2, row = g.O * g.Lg;
  at::Tensor G = at::empty({g.N * Dq * Hq * row}, grad.options());
  const float* src = grad.data_ptr<float>();
  float* dst = G.data_ptr<float>();
  at::parallel_for(0, g.N * Dq, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nd = lo; nd < hi; ++nd) {
      const int64_t n = nd / Dq, d = nd % Dq - 1;
      for (int64_t hq = 0; hq < Hq; ++hq) {
        float* out = dst + (nd * Hq + hq) * row;
        const int64_t h = hq - 1;
        std::fill(out, out + row, 0.f);
        if (d < 0 || d >= g.Do || h < 0 || h >= g.Ho) continue;
        const float* in = src + ((n * g.Do + d) * g.Ho + h) * g.Wo * g.O;
        switch (g.O) {
          case 4: scatter_row<4, 1>(in, out, g.Wo, 1, g.Lg); break;
          case 8: scatter_row<8, 1>(in, out, g.Wo, 1, g.Lg); break;
          default: scatter_row_any<1>(in, out, g.Wo, g.O, 1, g.Lg);
        }
      }
    }
  });
  return G;
}

// y (channels-last) from the row-planar input X; K and S fixed so that the tap loops unroll.
template <int64_t K, int64_t S, bool Half>
void forward_impl(const PlaneSource& source, const at::Tensor& weight, const float* bias, const Geometry& g,
                  at::Tensor& y) {
  // Weights per (output block, kd, kh, c, kw) as 4 consecutive output channels.
  const int64_t taps = K * K * K;
  std::vector<float> wr(g.O * g.C * taps);
  const auto wa = weight.accessor<float, 5>();  // any layout: the serving model's weights are channels-last
  for (int64_t o = 0; o < g.O; ++o)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t kd = t / (K * K), kh = t / K % K, kw = t % K;
        const int64_t ob = o / kBlockO, oi = o % kBlockO;
        wr[((((ob * K + kd) * K + kh) * g.C + c) * K + kw) * kBlockO + oi] = wa[o][c][kd][kh][kw];
      }
  float* yp = y.data_ptr<float>();
  const int64_t xrow = g.C * S * g.Lw;
  at::parallel_for(0, g.N * g.Do, 1, [&](int64_t lo, int64_t hi) {
    PlaneRing ring(source, g, K);
    for (int64_t nd = lo; nd < hi; ++nd) {
      const int64_t n = nd / g.Do, d = nd % g.Do;
      const float* planes[K];
      for (int64_t kd = 0; kd < K; ++kd) planes[kd] = ring.plane(n, S * d + kd);
      for (int64_t h = 0; h < g.Ho; ++h) {
        float* out = yp + ((n * g.Do + d) * g.Ho + h) * g.Wo * g.O;
        for (int64_t ob = 0; ob < g.O / kBlockO; ++ob) {
          for (int64_t wb = 0; wb < g.Wv; wb += g.span) {
            v8 acc[kBlockO][2] = {};
            if (bias != nullptr)
              for (int64_t oi = 0; oi < kBlockO; ++oi) acc[oi][0] = acc[oi][1] = splat(bias[ob * kBlockO + oi]);
            const float* wt = wr.data() + ob * K * K * g.C * K * kBlockO;
            for (int64_t kd = 0; kd < K; ++kd) {
              for (int64_t kh = 0; kh < K; ++kh) {
                const float* xr = planes[kd] + (S * h + kh) * xrow + wb;
                for (int64_t c = 0; c < g.C; ++c) {
                  const auto tap = [&](int64_t kw) {
                    const float* xv = xr + (c * S + kw % S) * g.Lw + kw / S;
                    const v8 x0 = load8(xv);
                    if constexpr (Half) {  // one vector of 8 positions (maps 8 wide or less)
                      for (int64_t oi = 0; oi < kBlockO; ++oi) acc[oi][0] += splat(wt[oi]) * x0;
                    } else {
                      const v8 x1 = load8(xv + kVec);
                      for (int64_t oi = 0; oi < kBlockO; ++oi) {
                        const v8 wv = splat(wt[oi]);
                        acc[oi][0] += wv * x0;
                        acc[oi][1] += wv * x1;
                      }
                    }
                    wt += kBlockO;
                  };
                  if constexpr (S == 1) {
                    // Not unrolled: unrolling the three taps let GCC hoist their loads, and with AVX2's 16
                    // vector registers the eight accumulators then spilled (4 -> 4 at 32^3, batch 32, AVX2
                    // dispatch, 2 threads: 8.4 -> 5.6 ms; AVX-512 builds have 32 registers and lost nothing).
#pragma GCC unroll 1
                    for (int64_t kw = 0; kw < K; ++kw) tap(kw);
                  } else {
                    for (int64_t kw = 0; kw < K; ++kw) tap(kw);
                  }
                }
              }
            }
            store_tile(acc, out + wb * g.O, std::min(g.span, g.Wo - wb), g.O, ob * kBlockO, kBlockO);
          }
        }
      }
    }
  });
}

// y = conv(x, weight) + bias: returns y (channels-last) and the row-planar input X (kept for the weight
// gradient; training passes no bias). Without keep_planar (serving) X is not built (an empty tensor returns):
// each thread fills the planes it reads into a ring (PlaneRing).
std::tuple<at::Tensor, at::Tensor> conv_forward(const at::Tensor& x, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias, int64_t stride,
                                                bool keep_planar) {
  check(x, "x", -1);
  check_weight(weight, stride);
  TORCH_CHECK(weight.size(1) == x.size(1), "weight: input channels differ from x's");
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = bias->contiguous();
    TORCH_CHECK(b.scalar_type() == at::kFloat && b.numel() == weight.size(0),
                "bias: one float per output channel");
  }
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  const Geometry g(x.sizes(), weight, stride, !keep_planar);
  at::Tensor X = keep_planar ? planar_input(x, g) : at::empty({0}, x.options());
  at::Tensor y = at::empty({g.N, g.O, g.Do, g.Ho, g.Wo},
                           x.options().memory_format(at::MemoryFormat::ChannelsLast3d));
  const PlaneSource source{keep_planar ? X.data_ptr<float>() : nullptr, x.data_ptr<float>()};
  with_kernel_and_stride(g, [&](auto k, auto s) {
    if (g.span == kVec) forward_impl<k, s, true>(source, weight, bp, g, y);
    else forward_impl<k, s, false>(source, weight, bp, g, y);
  });
  return {y, X};
}

// Input gradient (N, C, D, H, W) channels-last from the padded row-planar output gradient G.
template <int64_t K, int64_t S, int64_t CB>
at::Tensor grad_input_impl(const at::Tensor& G, const at::Tensor& weight, const Geometry& g,
                           const at::TensorOptions& options) {
  at::Tensor gx = at::empty({g.N, g.C, g.D, g.H, g.W}, options.memory_format(at::MemoryFormat::ChannelsLast3d));
  const int64_t taps = K * K * K, Hq = g.Ho + 2, grow = g.O * g.Lg;
  // wt[cb][kd][kh][kw][o][ci] = weight[o, cb * CB + ci, kd, kh, kw]
  std::vector<float> wt(g.C * g.O * taps);
  const auto wa = weight.accessor<float, 5>();
  for (int64_t o = 0; o < g.O; ++o)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t t = 0; t < taps; ++t)
        wt[(((c / CB) * taps + t) * g.O + o) * CB + c % CB] = wa[o][c][t / (K * K)][t / K % K][t % K];
  const float* Gp = G.data_ptr<float>();
  float* gp = gx.data_ptr<float>();
  at::parallel_for(0, g.N * g.D, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nd = lo; nd < hi; ++nd) {
      const int64_t n = nd / g.D, jd = nd % g.D;
      for (int64_t jh = 0; jh < g.H; ++jh) {
        float* out = gp + ((n * g.D + jd) * g.H + jh) * g.W * g.C;
        for (int64_t r = 0; r < S; ++r) {  // the output phase j = s q + r along w
          const int64_t qn = (g.W - r + S - 1) / S;
          for (int64_t cb = 0; cb < g.C / CB; ++cb) {
            for (int64_t qb = 0; qb < qn; qb += kSpan) {
              v8 acc[kBlockO][2] = {};
              for (int64_t kd = 0; kd < K; ++kd) {
                const int64_t ed = jd + K / 2 - kd;
                if (ed % S != 0) continue;
                const int64_t pd = ed / S;  // -1 .. Do: the padded G holds zeros there
                if (pd < -1 || pd > g.Do) continue;
                for (int64_t kh = 0; kh < K; ++kh) {
                  const int64_t eh = jh + K / 2 - kh;
                  if (eh % S != 0) continue;
                  const int64_t ph = eh / S;
                  if (ph < -1 || ph > g.Ho) continue;
                  const float* grow_p = Gp + ((n * (g.Do + 2) + pd + 1) * Hq + ph + 1) * grow + qb + 1;
                  for (int64_t kw = 0; kw < K; ++kw) {
                    const int64_t ew = r + K / 2 - kw;
                    if (((ew % S) + S) % S != 0) continue;
                    const int64_t off = ew >= 0 ? ew / S : -((-ew) / S);
                    const float* wv = wt.data() + ((cb * taps + (kd * K + kh) * K + kw) * g.O) * CB;
                    for (int64_t o = 0; o < g.O; ++o, wv += CB) {
                      const float* gv = grow_p + o * g.Lg + off;
                      const v8 g0 = load8(gv), g1 = load8(gv + kVec);
                      for (int64_t ci = 0; ci < CB; ++ci) {
                        const v8 w8 = splat(wv[ci]);
                        acc[ci][0] += w8 * g0;
                        acc[ci][1] += w8 * g1;
                      }
                    }
                  }
                }
              }
              // phase r: voxels S (qb + j) + r
              store_tile(acc, out + (S * qb + r) * g.C, std::min(kSpan, qn - qb), g.C, cb * CB, CB, S);
            }
          }
        }
      }
    }
  });
  return gx;
}

// Weight gradient (O, C, K, K, K) from X (forward's row-planar input) and the padded row-planar G.
template <int64_t K, int64_t S>
at::Tensor grad_weight_impl(const at::Tensor& X, const at::Tensor& G, const Geometry& g,
                            const at::TensorOptions& options) {
  const int64_t taps = K * K * K, Hq = g.Ho + 2, grow = g.O * g.Lg, xrow = g.C * S * g.Lw;
  const int64_t slabs = g.N * g.Do;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), slabs));
  const int64_t per = g.O * g.C * taps;
  std::vector<double> part(blocks * per, 0.0);
  const float* Xp = X.data_ptr<float>();
  const float* Gp = G.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> slab(per);
    for (int64_t b = lo; b < hi; ++b) {
      double* sum = part.data() + b * per;
      for (int64_t nd = slabs * b / blocks; nd < slabs * (b + 1) / blocks; ++nd) {
        const int64_t n = nd / g.Do, d = nd % g.Do;
        for (int64_t kd = 0; kd < K; ++kd) {
          for (int64_t kh = 0; kh < K; ++kh) {
            for (int64_t c = 0; c < g.C; ++c) {
              for (int64_t ob = 0; ob < g.O / kBlockO; ++ob) {
                v8 acc[kBlockO][K] = {};
                for (int64_t h = 0; h < g.Ho; ++h) {
                  const float* xr = Xp + ((n * g.Dp + S * d + kd) * g.Hp + S * h + kh) * xrow + c * S * g.Lw;
                  const float* gr = Gp + ((n * (g.Do + 2) + d + 1) * Hq + h + 1) * grow + ob * kBlockO * g.Lg + 1;
                  for (int64_t w = 0; w < g.Wv; w += kVec) {
                    v8 xv[K];
                    for (int64_t kw = 0; kw < K; ++kw) xv[kw] = load8(xr + (kw % S) * g.Lw + kw / S + w);
                    for (int64_t oi = 0; oi < kBlockO; ++oi) {
                      const v8 gv = load8(gr + oi * g.Lg + w);
                      for (int64_t kw = 0; kw < K; ++kw) acc[oi][kw] += gv * xv[kw];
                    }
                  }
                }
                for (int64_t oi = 0; oi < kBlockO; ++oi)
                  for (int64_t kw = 0; kw < K; ++kw) {
                    float t = 0.f;
                    for (int64_t l = 0; l < kVec; ++l) t += acc[oi][kw][l];
                    slab[((ob * kBlockO + oi) * g.C + c) * taps + (kd * K + kh) * K + kw] = t;
                  }
              }
            }
          }
        }
        for (int64_t i = 0; i < per; ++i) sum[i] += slab[i];
      }
    }
  });
  at::Tensor dw = at::empty({g.O, g.C, K, K, K}, options);
  float* dwp = dw.data_ptr<float>();
  for (int64_t i = 0; i < per; ++i) {
    double t = 0.0;
    for (int64_t b = 0; b < blocks; ++b) t += part[b * per + i];
    dwp[i] = static_cast<float>(t);
  }
  return dw;
}

// (grad_x, or an empty tensor when need_input is false; grad_weight).
std::tuple<at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad, const at::Tensor& X,
                                                 const at::Tensor& weight, int64_t N, int64_t D, int64_t H,
                                                 int64_t W, int64_t stride, bool need_input) {
  check_weight(weight, stride);
  check(grad, "grad", weight.size(0));
  const Geometry g({N, weight.size(1), D, H, W}, weight, stride);
  TORCH_CHECK(grad.size(0) == N && grad.size(2) == g.Do && grad.size(3) == g.Ho && grad.size(4) == g.Wo,
              "grad: shape does not match the convolution's output");
  TORCH_CHECK(X.numel() == g.N * g.Dp * plane_floats(g), "X: not this convolution's planar input");
  at::Tensor G = planar_grad(grad, g);
  at::Tensor gx = at::empty({0}, grad.options());
  if (need_input) {
    TORCH_CHECK(g.C % kBlockO == 0 || g.C == 1, "the input gradient needs 1 or a multiple of 4 channels");
    gx = with_kernel_and_stride(g, [&](auto k, auto s) {  // 1 input channel: the image's stem
      return g.C == 1 ? grad_input_impl<k, s, 1>(G, weight, g, grad.options())
                      : grad_input_impl<k, s, kBlockO>(G, weight, g, grad.options());
    });
  }
  at::Tensor gw = with_kernel_and_stride(
      g, [&](auto k, auto s) { return grad_weight_impl<k, s>(X, G, g, grad.options()); });
  return {gx, gw};
}

}  // namespace

TORCH_LIBRARY(naslung_conv, m) {
  m.def("forward(Tensor x, Tensor weight, Tensor? bias, int stride, bool keep_planar=True) -> (Tensor, Tensor)",
        conv_forward);
  m.def("backward(Tensor grad, Tensor X, Tensor weight, int N, int D, int H, int W, int stride, bool need_input)"
        " -> (Tensor, Tensor)", conv_backward);
}
