// 2-D real FFTs of zero-padded planes for CBAM's plane-FFT spatial gate (cbam_cpu.cpp), eight 1-D transforms
// at a time, one per vector lane. MKL's 2-D transform (torch.fft.rfftn over the last two axes) spent most of
// its time in the strided column pass; here both passes read and write whole vectors:
//
// * rows: 16 rows of a plane as one complex transform of length L2 per lane (row l in the real part, row l + 8
//   in the imaginary part), split into the two rows' half spectra by Hermitian symmetry, then 8 x 8
//   transposes into a row-major (row, frequency) scratch plane;
// * columns: 8 frequencies at a time (contiguous in that plane), a complex transform of length L1 per lane.
//
// The 1-D transforms are mixed-radix decimation in time (radices 4, 2, 3, then any other small factor as a
// plain DFT), lengths 5-smooth as naslung.models.blocks.fft_conv.fft_length chooses them. Included by
// cbam_cpu.cpp; naslung.models.kernels hashes it into the build's name.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "simd8.h"

namespace plane_fft {

using naslung_simd::load8;
using naslung_simd::splat;
using naslung_simd::store8;
using naslung_simd::transpose8;
using naslung_simd::v8;

using naslung_simd::iv8;
// lane masks of two-vector shuffles: (re, im) pairs from split parts, and split parts from pairs
constexpr iv8 kPairsLow = {0, 8, 1, 9, 2, 10, 3, 11}, kPairsHigh = {4, 12, 5, 13, 6, 14, 7, 15};
constexpr iv8 kEvens = {0, 2, 4, 6, 8, 10, 12, 14}, kOdds = {1, 3, 5, 7, 9, 11, 13, 15};

struct CVec {  // 8 complex values, one per lane
  v8 re, im;
};

inline CVec cmul(const CVec& a, float c, float s) {  // a * (c + i s), the same scalar in every lane
  return {a.re * c - a.im * s, a.re * s + a.im * c};
}
inline CVec operator+(const CVec& a, const CVec& b) { return {a.re + b.re, a.im + b.im}; }
inline CVec operator-(const CVec& a, const CVec& b) { return {a.re - b.re, a.im - b.im}; }
inline CVec times_i(const CVec& a, float sign) { return {-sign * a.im, sign * a.re}; }  // a * (sign i)

// A complex transform of length n, forward (e^{-2 pi i jk / n}) or inverse (e^{+...}, unnormalised).
class Fft1d {
 public:
  Fft1d(int64_t n, bool inverse) : n_(n), sign_(inverse ? 1.f : -1.f) {
    int64_t m = n;
    for (int64_t p : {4, 2, 3}) {
      while (m % p == 0) {
        factors_.push_back(p);
        m /= p;
      }
    }
    for (int64_t p = 5; m > 1; ++p) {
      while (m % p == 0) {
        factors_.push_back(p);
        m /= p;
      }
    }
    // twiddles of each level: w_N^{q k} for q in 1 .. p - 1, k in 0 .. N / p - 1, N the level's length
    int64_t len = n;
    for (int64_t p : factors_) {
      const int64_t sub = len / p;
      std::vector<float> c((p - 1) * sub), s((p - 1) * sub);
      for (int64_t q = 1; q < p; ++q)
        for (int64_t k = 0; k < sub; ++k) {
          const double a = sign_ * 2.0 * M_PI * double(q * k) / double(len);
          c[(q - 1) * sub + k] = float(std::cos(a));
          s[(q - 1) * sub + k] = float(std::sin(a));
        }
      cos_.push_back(std::move(c));
      sin_.push_back(std::move(s));
      len = sub;
    }
    // leaf_[pos]: the input index at the leaf position pos, pos = sum_l q_l sub_l for j = q_0 + p_0 (q_1 + p_1
    // (q_2 + ...)), sub_l the level's sub-length
    leaf_.assign(n, 0);
    for (int64_t j = 0; j < n; ++j) {
      int64_t rest = j, pos = 0, sub = n;
      for (int64_t p : factors_) {
        sub /= p;
        pos += (rest % p) * sub;
        rest /= p;
      }
      leaf_[pos] = j;
    }
    int64_t level_length = n;
    for (int64_t p : factors_) {
      lengths_.push_back(level_length);
      level_length /= p;
    }
    for (int64_t p : factors_) {  // the radix-p DFT matrices of the plain-DFT factors
      std::vector<float> c(p * p), s(p * p);
      for (int64_t q = 0; q < p; ++q)
        for (int64_t j = 0; j < p; ++j) {
          const double a = sign_ * 2.0 * M_PI * double((q * j) % p) / double(p);
          c[q * p + j] = float(std::cos(a));
          s[q * p + j] = float(std::sin(a));
        }
      dft_cos_.push_back(std::move(c));
      dft_sin_.push_back(std::move(s));
    }
  }

  int64_t size() const { return n_; }

  // out[k] = sum_j in[j * stride] w^{jk}, k < n; out must not overlap in. The recursion of decimation in
  // time, unrolled: the inputs in the order of its leaves, then each level's butterflies, deepest first.
  void run(const CVec* in, int64_t stride, CVec* out) const {
    for (int64_t i = 0; i < n_; ++i) out[i] = in[leaf_[i] * stride];
    for (size_t lv = factors_.size(); lv-- > 0;) {
      switch (factors_[lv]) {
        case 2: level<2>(lv, out); break;
        case 3: level<3>(lv, out); break;
        case 4: level<4>(lv, out); break;
        case 5: level<5>(lv, out); break;
        default: level<0>(lv, out); break;
      }
    }
  }

 private:
  // Level lv: in each block of the level's length, the combination of P sub-transforms of length sub at
  // out[q * sub] into outputs k + s * sub (P = 0: any radix, as a plain DFT).
  template <int P>
  void level(size_t lv, CVec* out) const {
    const int64_t p = P ? P : factors_[lv], len = lengths_[lv], sub = len / p;
    const float* c = cos_[lv].data();
    const float* s = sin_[lv].data();
    for (int64_t b = 0; b < n_; b += len) {
      CVec* o = out + b;
      for (int64_t k = 0; k < sub; ++k) {
        CVec t[P ? P : 8];
        t[0] = o[k];
        for (int64_t q = 1; q < p; ++q)
          t[q] = k == 0 ? o[q * sub] : cmul(o[q * sub + k], c[(q - 1) * sub + k], s[(q - 1) * sub + k]);
        if constexpr (P == 2) {
          o[k] = t[0] + t[1];
          o[sub + k] = t[0] - t[1];
        } else if constexpr (P == 4) {  // w_4 = sign i
          const CVec a = t[0] + t[2], e = t[0] - t[2], f = t[1] + t[3], g = times_i(t[1] - t[3], sign_);
          o[k] = a + f;
          o[sub + k] = e + g;
          o[2 * sub + k] = a - f;
          o[3 * sub + k] = e - g;
        } else if constexpr (P == 3) {  // w_3 = -1/2 + sign i sqrt(3)/2
          const CVec sum = t[1] + t[2];
          const CVec mid = {t[0].re - 0.5f * sum.re, t[0].im - 0.5f * sum.im};
          const CVec rot = times_i(t[1] - t[2], sign_ * 0.86602540378443865f);
          o[k] = t[0] + sum;
          o[sub + k] = mid + rot;
          o[2 * sub + k] = mid - rot;
        } else {  // a plain DFT of p points (p <= 8)
          const float* dc = dft_cos_[lv].data();
          const float* ds = dft_sin_[lv].data();
          for (int64_t j = 0; j < p; ++j) {
            CVec acc = t[0];
            for (int64_t q = 1; q < p; ++q) acc = acc + cmul(t[q], dc[q * p + j], ds[q * p + j]);
            o[j * sub + k] = acc;
          }
        }
      }
    }
  }

  int64_t n_;
  float sign_;
  std::vector<int64_t> factors_, lengths_, leaf_;
  std::vector<std::vector<float>> cos_, sin_, dft_cos_, dft_sin_;
};

// The transform of length n in one direction, built on first use and kept: its plan and twiddles depend on
// nothing else, and a batch-1 forward would otherwise rebuild four of them in every CBAM block.
inline const Fft1d& cached_fft(int64_t n, bool inverse) {
  static std::mutex lock;
  static std::map<std::pair<int64_t, bool>, std::unique_ptr<const Fft1d>> plans;
  const std::lock_guard<std::mutex> guard(lock);
  std::unique_ptr<const Fft1d>& plan = plans[{n, inverse}];
  if (!plan) plan = std::make_unique<const Fft1d>(n, inverse);
  return *plan;
}

inline int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

// The half spectra of planes zero-padded to L1 x L2: x (H, W) real, row-major, H <= L1, W <= L2 -> out (L1,
// L2 / 2 + 1) complex, interleaved (re, im); the same as torch.fft.rfftn(x, s=(L1, L2)). rows_fft: length
// L2, cols_fft: length L1, both forward. scratch: at least plane_scratch_floats(L1, L2) floats.
inline int64_t plane_scratch_floats(int64_t L1, int64_t L2) {
  const int64_t F2p = round8(L2 / 2 + 1), Lmax = L1 > L2 ? L1 : L2;
  return 2 * L1 * F2p + 2 * 16 * Lmax + 2 * 64;
}

inline void rfft2_plane(const float* x, int64_t H, int64_t W, const Fft1d& rows_fft, const Fft1d& cols_fft,
                        float* out, float* scratch) {
  const int64_t L1 = cols_fft.size(), L2 = rows_fft.size(), F2 = L2 / 2 + 1, F2p = round8(F2);
  float* Rr = scratch;  // (L1, F2p): the row transforms' real parts, row-major
  float* Ri = Rr + L1 * F2p;
  CVec* in = reinterpret_cast<CVec*>(Ri + L1 * F2p);
  CVec* z = in + (L1 > L2 ? L1 : L2);
  for (int64_t h0 = 0; h0 < H; h0 += 16) {
    // in[w]: lane l holds row h0 + l (real part) and row h0 + 8 + l (imaginary part), zero outside the plane
    for (int64_t w = 0; w < L2; ++w) in[w] = {splat(0.f), splat(0.f)};
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t r0 = h0 + 8 * half;
      if (r0 >= H) break;
      const int64_t rows = H - r0 < 8 ? H - r0 : 8;
      int64_t w = 0;
      if (rows == 8) {
        for (; w + 8 <= W; w += 8) {
          v8 blk[8];
          for (int64_t l = 0; l < 8; ++l) blk[l] = load8(x + (r0 + l) * W + w);
          transpose8(blk);  // blk[j]: column w + j of the 8 rows
          for (int64_t j = 0; j < 8; ++j) (half ? in[w + j].im : in[w + j].re) = blk[j];
        }
      }
      for (; w < W; ++w)
        for (int64_t l = 0; l < rows; ++l) (half ? in[w].im : in[w].re)[l] = x[(r0 + l) * W + w];
    }
    rows_fft.run(in, 1, z);
    // the two rows' half spectra: A[k] = (z[k] + conj(z[-k])) / 2, B[k] = (z[k] - conj(z[-k])) / 2i
    for (int64_t k0 = 0; k0 < F2p; k0 += 8) {
      v8 ar[8], ai[8], br[8], bi[8];
      for (int64_t j = 0; j < 8; ++j) {
        const int64_t k = k0 + j;
        if (k >= F2) {
          ar[j] = ai[j] = br[j] = bi[j] = splat(0.f);
          continue;
        }
        const CVec& p = z[k];
        const CVec& q = z[(L2 - k) % L2];
        ar[j] = 0.5f * (p.re + q.re);
        ai[j] = 0.5f * (p.im - q.im);
        br[j] = 0.5f * (p.im + q.im);
        bi[j] = 0.5f * (q.re - p.re);
      }
      transpose8(ar);  // ar[l]: frequencies k0 .. k0 + 7 of row h0 + l
      transpose8(ai);
      transpose8(br);
      transpose8(bi);
      for (int64_t l = 0; l < 8; ++l) {
        if (h0 + l < H) {
          store8(Rr + (h0 + l) * F2p + k0, ar[l]);
          store8(Ri + (h0 + l) * F2p + k0, ai[l]);
        }
        if (h0 + 8 + l < H) {
          store8(Rr + (h0 + 8 + l) * F2p + k0, br[l]);
          store8(Ri + (h0 + 8 + l) * F2p + k0, bi[l]);
        }
      }
    }
  }
  // columns: 8 frequencies at a time, rows H .. L1 - 1 zero
  for (int64_t k0 = 0; k0 < F2p; k0 += 8) {
    for (int64_t h = 0; h < L1; ++h)
      in[h] = h < H ? CVec{load8(Rr + h * F2p + k0), load8(Ri + h * F2p + k0)} : CVec{splat(0.f), splat(0.f)};
    cols_fft.run(in, 1, z);
    const int64_t kn = F2 - k0 < 8 ? F2 - k0 : 8;
    for (int64_t j = 0; j < L1; ++j) {
      float* o = out + (j * F2 + k0) * 2;
      if (kn == 8) {  // (re, im) pairs: two shuffles of the two vectors
        store8(o, __builtin_shuffle(z[j].re, z[j].im, kPairsLow));
        store8(o + 8, __builtin_shuffle(z[j].re, z[j].im, kPairsHigh));
        continue;
      }
      for (int64_t l = 0; l < kn; ++l) {
        o[2 * l] = z[j].re[l];
        o[2 * l + 1] = z[j].im[l];
      }
    }
  }
}

// The inverse: y (L1, L2 / 2 + 1) complex, interleaved -> the window out (Ho, Wo) = rows r0 .. r0 + Ho - 1,
// columns c0 .. c0 + Wo - 1 of torch.fft.irfftn(y, s=(L1, L2)) (scaled by 1 / (L1 L2); the imaginary parts of
// the frequencies 0 and L2 / 2 are ignored, as a real inverse transform does). rows_fft: length L2, cols_fft:
// length L1, both inverse.
inline void irfft2_plane(const float* y, const Fft1d& rows_fft, const Fft1d& cols_fft, int64_t r0, int64_t Ho,
                         int64_t c0, int64_t Wo, float* out, float* scratch) {
  const int64_t L1 = cols_fft.size(), L2 = rows_fft.size(), F2 = L2 / 2 + 1, F2p = round8(F2);
  float* Rr = scratch;  // (Ho, F2p): the column transforms of the window's rows
  float* Ri = Rr + L1 * F2p;
  CVec* in = reinterpret_cast<CVec*>(Ri + L1 * F2p);
  CVec* z = in + (L1 > L2 ? L1 : L2);
  for (int64_t k0 = 0; k0 < F2p; k0 += 8) {
    const int64_t kn = F2 - k0 < 8 ? F2 - k0 : 8;
    for (int64_t j = 0; j < L1; ++j) {
      const float* src = y + (j * F2 + k0) * 2;
      if (kn == 8) {
        const v8 lo = load8(src), hi = load8(src + 8);
        in[j] = {__builtin_shuffle(lo, hi, kEvens), __builtin_shuffle(lo, hi, kOdds)};
        continue;
      }
      v8 re = splat(0.f), im = splat(0.f);
      for (int64_t l = 0; l < kn; ++l) {
        re[l] = src[2 * l];
        im[l] = src[2 * l + 1];
      }
      in[j] = {re, im};
    }
    cols_fft.run(in, 1, z);
    for (int64_t h = 0; h < Ho; ++h) {
      store8(Rr + h * F2p + k0, z[r0 + h].re);
      store8(Ri + h * F2p + k0, z[r0 + h].im);
    }
  }
  const float scale = 1.f / float(L1 * L2);
  const bool nyquist = L2 % 2 == 0;
  for (int64_t h0 = 0; h0 < Ho; h0 += 16) {
    // lane l: row h0 + l as the real part, row h0 + 8 + l as the imaginary part of one complex signal
    for (int64_t k0 = 0; k0 < F2p; k0 += 8) {
      v8 ar[8], ai[8], br[8], bi[8];
      for (int64_t l = 0; l < 8; ++l) {
        const bool a_in = h0 + l < Ho, b_in = h0 + 8 + l < Ho;
        ar[l] = a_in ? load8(Rr + (h0 + l) * F2p + k0) : splat(0.f);
        ai[l] = a_in ? load8(Ri + (h0 + l) * F2p + k0) : splat(0.f);
        br[l] = b_in ? load8(Rr + (h0 + 8 + l) * F2p + k0) : splat(0.f);
        bi[l] = b_in ? load8(Ri + (h0 + 8 + l) * F2p + k0) : splat(0.f);
      }
      transpose8(ar);  // ar[j]: frequency k0 + j of the 8 rows
      transpose8(ai);
      transpose8(br);
      transpose8(bi);
      for (int64_t j = 0; j < 8; ++j) {
        const int64_t k = k0 + j;
        if (k >= F2) break;
        if (k == 0 || (nyquist && k == L2 / 2)) ai[j] = bi[j] = splat(0.f);
        // Z = A + i B at k, and conj(A) + i conj(B) at L2 - k (the Hermitian halves the real transform omits)
        in[k] = {ar[j] - bi[j], ai[j] + br[j]};
        if (k != 0 && L2 - k != k) in[L2 - k] = {ar[j] + bi[j], br[j] - ai[j]};
      }
    }
    rows_fft.run(in, 1, z);
    // z[w]: lane l is row h0 + l's value (real part) and row h0 + 8 + l's (imaginary part) at column w
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t rbase = h0 + 8 * half;
      if (rbase >= Ho) break;
      const int64_t rows = Ho - rbase < 8 ? Ho - rbase : 8;
      int64_t w = 0;
      if (rows == 8) {
        for (; w + 8 <= Wo; w += 8) {
          v8 blk[8];
          for (int64_t j = 0; j < 8; ++j) blk[j] = scale * (half ? z[c0 + w + j].im : z[c0 + w + j].re);
          transpose8(blk);  // blk[l]: row rbase + l, columns w .. w + 7
          for (int64_t l = 0; l < 8; ++l) store8(out + (rbase + l) * Wo + w, blk[l]);
        }
      }
      for (; w < Wo; ++w)
        for (int64_t l = 0; l < rows; ++l)
          out[(rbase + l) * Wo + w] = scale * (half ? z[c0 + w].im : z[c0 + w].re)[l];
    }
  }
}

}  // namespace plane_fft
