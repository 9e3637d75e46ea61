// Fused training-mode batch norm + ReLU on CPU for channels-last float32 tensors with few channels.
//
// The input's memory is R = N * prod(S) rows of C floats. Forward: one pass for the per-channel sum and sum of
// squares (blocked float sums added in double), one pass writing y = max(0, (x - mean) * rstd * w + b). Backward: one pass for
// sum(g') and sum(g' * (x - mean)), g' = g where y > 0, one pass writing
// dx = w * rstd * (g' - sum(g') / R - xhat * sum(g' * xhat) / R) (Ioffe & Szegedy 2015, with the ReLU's mask).
//
// The memory is read as W-float vectors (W = 32, 64 or 128, a multiple of C, so lane j always holds channel j % C): the inner
// loops then have a fixed width and vectorise, where a loop over 4 channels would not. Per-channel constants
// and accumulators are widened to W lanes and folded back to C at the end. Work is split into one contiguous
// block of vectors per thread, summed in a fixed order: deterministic for a given thread count.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

int64_t blocks_for(int64_t vectors) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), vectors / 1024));
}

template <int64_t W>
std::vector<float> widen(const std::vector<float>& per_channel) {
  std::vector<float> out(W);
  for (int64_t j = 0; j < W; ++j) out[j] = per_channel[j % per_channel.size()];
  return out;
}

// Per-lane sums of f(v, a, b) over `vectors` W-vectors, two sums per lane, folded to C channels. f adds into
// float lanes; every kBlock vectors they are added into double lanes and cleared, so rounding stays that of a
// sum of kBlock floats (a double accumulator per lane would not fit AVX2's 16 registers at W = 32: spills made
// that version 3x slower than torch there).
constexpr int64_t kBlock = 64;

template <int64_t W, typename F>
void lane_sums(int64_t vectors, int64_t C, F f, double* first, double* second) {
  const int64_t nb = blocks_for(vectors);
  std::vector<double> part(nb * 2 * W, 0.0);
  at::parallel_for(0, nb, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      double* da = part.data() + k * 2 * W;
      double* db = da + W;
      const int64_t v0 = vectors * k / nb, v1 = vectors * (k + 1) / nb;
      for (int64_t start = v0; start < v1; start += kBlock) {
        float a[W] = {0.f}, b[W] = {0.f};
        const int64_t end = std::min(v1, start + kBlock);
        for (int64_t v = start; v < end; ++v) f(v, a, b);
        for (int64_t j = 0; j < W; ++j) {
          da[j] += a[j];
          db[j] += b[j];
        }
      }
    }
  });
  std::fill(first, first + C, 0.0);
  std::fill(second, second + C, 0.0);
  for (int64_t k = 0; k < nb; ++k) {
    for (int64_t j = 0; j < W; ++j) {
      first[j % C] += part[k * 2 * W + j];
      second[j % C] += part[k * 2 * W + W + j];
    }
  }
}

void check_input(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "bn_relu takes float32 CPU tensors");
  auto fmt = x.dim() == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
  TORCH_CHECK((x.dim() == 4 || x.dim() == 5) && x.is_contiguous(fmt), "bn_relu takes channels-last tensors");
}

// The vector width for C channels: 32 floats, or C itself for 64 and 128 channels (C must divide it).
int64_t width_for(const at::Tensor& x) {
  const int64_t C = x.size(1), w = std::max<int64_t>(32, C);
  TORCH_CHECK(w <= 128 && w % C == 0 && x.numel() % w == 0,
              "bn_relu takes C in 1, 2, 4, ..., 128 and a multiple of max(32, C) values");
  return w;
}

// -> y (x's layout), mean (C), biased var (C), rstd = 1 / sqrt(var + eps) (C)
template <int64_t W>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward_impl(const at::Tensor& x, const at::Tensor& weight,
                                                                        const at::Tensor& bias, double eps) {
  const int64_t C = x.size(1), rows = x.numel() / C, vectors = x.numel() / W;
  const float* xp = x.data_ptr<float>();
  std::vector<double> sum(C), sq(C);
  // Shifted by a sample of each channel (the first row) so that sum of squares minus squared sum does not
  // cancel when the mean is large against the spread.
  float pivot[W];
  for (int64_t j = 0; j < W; ++j) pivot[j] = xp[j % C];
  lane_sums<W>(vectors, C, [&](int64_t v, float* __restrict s, float* __restrict q) {
    const float* __restrict row = xp + v * W;
    for (int64_t j = 0; j < W; ++j) {
      const float d = row[j] - pivot[j];
      s[j] += d;
      q[j] += d * d;
    }
  }, sum.data(), sq.data());
  auto mean_t = at::empty({C}, x.options());
  auto var_t = at::empty({C}, x.options());
  auto rstd_t = at::empty({C}, x.options());
  auto w = weight.contiguous();
  auto b = bias.contiguous();
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    const double shifted = sum[c] / rows;  // mean - pivot
    const double raw_var = sq[c] / rows - shifted * shifted;
    const double var = raw_var < 0.0 ? 0.0 : raw_var;  // rounding below 0 is clamped; a NaN stays
    const double mean = shifted + xp[c];
    const double r = 1.0 / std::sqrt(var + eps);
    mean_t.data_ptr<float>()[c] = static_cast<float>(mean);
    var_t.data_ptr<float>()[c] = static_cast<float>(var);
    rstd_t.data_ptr<float>()[c] = static_cast<float>(r);
    const double s = w.data_ptr<float>()[c] * r;
    scale[c] = static_cast<float>(s);
    shift[c] = static_cast<float>(b.data_ptr<float>()[c] - mean * s);
  }
  auto y = at::empty_like(x);  // keeps x's channels-last layout
  float* yp = y.data_ptr<float>();
  const auto scw = widen<W>(scale), shw = widen<W>(shift);
  at::parallel_for(0, vectors, 256, [&](int64_t lo, int64_t hi) {
    float sc[W], sh[W];
    std::copy(scw.begin(), scw.end(), sc);
    std::copy(shw.begin(), shw.end(), sh);
    for (int64_t v = lo; v < hi; ++v) {
      const float* __restrict xr = xp + v * W;
      float* __restrict yr = yp + v * W;
      for (int64_t j = 0; j < W; ++j) {
        const float z = xr[j] * sc[j] + sh[j];
        yr[j] = z < 0.f ? 0.f : z;  // a NaN passes through, as torch.relu's does
      }
    }
  });
  return {y, mean_t, var_t, rstd_t};
}

// -> dx (x's layout), dweight (C), dbias (C); y is the forward's output (the ReLU's mask)
template <int64_t W>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad, const at::Tensor& x,
                                                             const at::Tensor& y, const at::Tensor& mean,
                                                             const at::Tensor& rstd, const at::Tensor& weight) {
  const int64_t C = x.size(1), rows = x.numel() / C, vectors = x.numel() / W;
  const float* gp = grad.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* yp = y.data_ptr<float>();
  auto w = weight.contiguous();
  auto m = mean.contiguous();
  auto rs = rstd.contiguous();
  const auto mw = widen<W>(std::vector<float>(m.data_ptr<float>(), m.data_ptr<float>() + C));
  std::vector<double> sg(C), sgx(C);
  float mean_lanes[W];
  std::copy(mw.begin(), mw.end(), mean_lanes);
  lane_sums<W>(vectors, C, [&](int64_t v, float* __restrict a, float* __restrict b) {
    const float* __restrict gr = gp + v * W;
    const float* __restrict xr = xp + v * W;
    const float* __restrict yr = yp + v * W;
    for (int64_t j = 0; j < W; ++j) {
      const float gm = gr[j] * static_cast<float>(yr[j] > 0.f);  // a product, not a branch: it vectorises
      a[j] += gm;
      b[j] += gm * (xr[j] - mean_lanes[j]);
    }
  }, sg.data(), sgx.data());
  auto dw = at::empty({C}, x.options());
  auto db = at::empty({C}, x.options());
  std::vector<float> k_g(C), k_x(C), k_out(C);
  for (int64_t c = 0; c < C; ++c) {
    const double r = rs.data_ptr<float>()[c];
    dw.data_ptr<float>()[c] = static_cast<float>(sgx[c] * r);
    db.data_ptr<float>()[c] = static_cast<float>(sg[c]);
    k_g[c] = static_cast<float>(sg[c] / rows);
    k_x[c] = static_cast<float>(sgx[c] * r * r / rows);
    k_out[c] = static_cast<float>(w.data_ptr<float>()[c] * r);
  }
  auto dx = at::empty_like(x);
  float* dp = dx.data_ptr<float>();
  const auto kgw = widen<W>(k_g), kxw = widen<W>(k_x), kow = widen<W>(k_out);
  at::parallel_for(0, vectors, 256, [&](int64_t lo, int64_t hi) {
    float kg[W], kx[W], ko[W], mw[W];  // local copies: the compiler knows the stores to dx cannot touch them
    std::copy(kgw.begin(), kgw.end(), kg);
    std::copy(kxw.begin(), kxw.end(), kx);
    std::copy(kow.begin(), kow.end(), ko);
    std::copy(mean_lanes, mean_lanes + W, mw);
    for (int64_t v = lo; v < hi; ++v) {
      const float* __restrict gr = gp + v * W;
      const float* __restrict xr = xp + v * W;
      const float* __restrict yr = yp + v * W;
      float* __restrict dr = dp + v * W;
      for (int64_t j = 0; j < W; ++j) {
        const float gm = gr[j] * static_cast<float>(yr[j] > 0.f);  // a product, not a branch: it vectorises
        dr[j] = ko[j] * (gm - kg[j] - (xr[j] - mw[j]) * kx[j]);
      }
    }
  });
  return {dx, dw, db};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bn_relu_forward(const at::Tensor& x,
                                                                            const at::Tensor& weight,
                                                                            const at::Tensor& bias, double eps) {
  check_input(x);
  switch (width_for(x)) {
    case 32: return forward_impl<32>(x, weight, bias, eps);
    case 64: return forward_impl<64>(x, weight, bias, eps);
    default: return forward_impl<128>(x, weight, bias, eps);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_backward(const at::Tensor& grad, const at::Tensor& x,
                                                                 const at::Tensor& y, const at::Tensor& mean,
                                                                 const at::Tensor& rstd, const at::Tensor& weight) {
  check_input(x);
  check_input(grad);
  check_input(y);
  switch (width_for(x)) {
    case 32: return backward_impl<32>(grad, x, y, mean, rstd, weight);
    case 64: return backward_impl<64>(grad, x, y, mean, rstd, weight);
    default: return backward_impl<128>(grad, x, y, mean, rstd, weight);
  }
}

}  // namespace

TORCH_LIBRARY(naslung_bn_relu, m) {
  m.def("forward(Tensor x, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor, Tensor, Tensor)",
        bn_relu_forward);
  m.def("backward(Tensor grad, Tensor x, Tensor y, Tensor mean, Tensor rstd, Tensor weight)"
        " -> (Tensor, Tensor, Tensor)", bn_relu_backward);
}
