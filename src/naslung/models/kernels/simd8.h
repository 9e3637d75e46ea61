// 8-float vectors for naslung's CPU kernels: GCC vector types, so that one source compiles to AVX2 or
// AVX-512 code (the flags of naslung.models.kernels) without intrinsics; and the in-register transposes
// between channels-last voxels and per-channel vectors of 8 voxels that the few-channel kernels share.
//
// Included by conv_cpu.cpp and cbam_cpu.cpp; naslung.models.kernels hashes it into both builds' names.

#pragma once

#include <cstdint>
#include <cstring>

namespace naslung_simd {

typedef float v8 __attribute__((vector_size(32)));
typedef int iv8 __attribute__((vector_size(32)));

constexpr int64_t kVec = 8;  // floats per vector

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

inline v8 splat(float a) { return v8{a, a, a, a, a, a, a, a}; }

// e^x lane by lane, within 2 ulp of expf (Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a degree-6
// polynomial for e^r, then 2^n in the exponent bits). x is clamped to [-87, 88], inside float's normal range:
// the callers (sigmoid8) need no overflow. NaN stays NaN.
inline v8 exp8(v8 x) {
  x = x < splat(-87.f) ? splat(-87.f) : x;
  x = x > splat(88.f) ? splat(88.f) : x;
  const v8 magic = splat(12582912.f);  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  const v8 n = (x * splat(1.44269504088896341f) + magic) - magic;
  const v8 r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
  v8 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.f);
  const iv8 bits = (__builtin_convertvector(n, iv8) + 127) << 23;
  v8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// 1 / (1 + e^-x) lane by lane, as torch.sigmoid within a few ulp.
inline v8 sigmoid8(v8 x) { return splat(1.f) / (splat(1.f) + exp8(-x)); }

// 8 voxels of 4 channels (32 floats at in) -> ch[c], the 8 values of channel c: a 4 x 8 transpose in shuffles.
inline void deinterleave4(const float* in, v8 ch[4]) {
  const v8 a0 = load8(in), a1 = load8(in + 8), a2 = load8(in + 16), a3 = load8(in + 24);
  const iv8 low = {0, 4, 8, 12, 1, 5, 9, 13}, high = {2, 6, 10, 14, 3, 7, 11, 15};
  const v8 t0 = __builtin_shuffle(a0, a1, low), t1 = __builtin_shuffle(a0, a1, high);
  const v8 t2 = __builtin_shuffle(a2, a3, low), t3 = __builtin_shuffle(a2, a3, high);
  const iv8 first = {0, 1, 2, 3, 8, 9, 10, 11}, second = {4, 5, 6, 7, 12, 13, 14, 15};
  ch[0] = __builtin_shuffle(t0, t2, first);
  ch[1] = __builtin_shuffle(t0, t2, second);
  ch[2] = __builtin_shuffle(t1, t3, first);
  ch[3] = __builtin_shuffle(t1, t3, second);
}

// The inverse of deinterleave4: ch[c] (8 voxels of channel c) -> 32 floats at out, 8 voxels of 4 channels.
inline void interleave4(const v8 ch[4], float* out) {
  const iv8 first = {0, 1, 2, 3, 8, 9, 10, 11}, second = {4, 5, 6, 7, 12, 13, 14, 15};
  const v8 t0 = __builtin_shuffle(ch[0], ch[1], first), t2 = __builtin_shuffle(ch[0], ch[1], second);
  const v8 t1 = __builtin_shuffle(ch[2], ch[3], first), t3 = __builtin_shuffle(ch[2], ch[3], second);
  const iv8 low = {0, 4, 8, 12, 1, 5, 9, 13}, high = {2, 6, 10, 14, 3, 7, 11, 15};
  store8(out, __builtin_shuffle(t0, t1, low));
  store8(out + 8, __builtin_shuffle(t0, t1, high));
  store8(out + 16, __builtin_shuffle(t2, t3, low));
  store8(out + 24, __builtin_shuffle(t2, t3, high));
}

// An 8 x 8 transpose: r[j] (voxel j's 8 channels) -> r[c] (channel c of the 8 voxels), in place.
inline void transpose8(v8 r[8]) {
  const iv8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
  const iv8 lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
  const iv8 first = {0, 1, 2, 3, 8, 9, 10, 11}, second = {4, 5, 6, 7, 12, 13, 14, 15};
  v8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shuffle(t[i], t[i + 2], lo2);
    u[i + 1] = __builtin_shuffle(t[i], t[i + 2], hi2);
    u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], lo2);
    u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], hi2);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shuffle(u[i], u[i + 4], first);
    r[i + 4] = __builtin_shuffle(u[i], u[i + 4], second);
  }
}

// 8 channels-last voxels of CC (4 or 8) channels at in -> ch[c], channel c of the 8 voxels; and back.
template <int CC>
inline void load_planes(const float* in, v8 ch[CC]) {
  static_assert(CC == 4 || CC == 8, "4 or 8 channels");
  if constexpr (CC == 4) {
    deinterleave4(in, ch);
  } else {
    for (int j = 0; j < 8; ++j) ch[j] = load8(in + 8 * j);
    transpose8(ch);
  }
}

template <int CC>
inline void store_planes(const v8 ch[CC], float* out) {
  static_assert(CC == 4 || CC == 8, "4 or 8 channels");
  if constexpr (CC == 4) {
    interleave4(ch, out);
  } else {
    v8 r[8];
    for (int j = 0; j < 8; ++j) r[j] = ch[j];
    transpose8(r);
    for (int j = 0; j < 8; ++j) store8(out + 8 * j, r[j]);
  }
}

}  // namespace naslung_simd
