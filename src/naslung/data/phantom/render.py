"""Render one synthetic CT volume (int16 HU) around a nodule mask: lung, vessels, nodule, blur and noise.

The renderer sees only a :class:`RenderSpec`: the mask on the output grid, the spacing, the slice thickness
and the appearance ratings (texture, calcification, internal structure). It has no field for the malignancy
rating, so the image cannot encode the label (docs/explanation.md, "The LIDC phantom").

HU model (all draws from the per-nodule ``rng``):

========================  ==========================================================
aerated lung              -870 .. -830 mean, +-10..25 HU smooth (8 mm) variation
vessels                   0 .. +60 HU, 1.2-5 mm tubes that branch and taper (vessels.py)
solid nodule              -30 .. +60
ground glass              -700 .. -500
part-solid                solid core (deepest voxels) inside ground glass; the solid volume fraction is
                          (texture mean - 1) / 4, texture 1 = ground glass .. 5 = solid
internal structure        fluid 0..+20, fat -120..-60, air -1000 in the inner 25-30 % of the volume
calcification             popcorn blobs +600..+1000, laminated shells +300..+600, solid +400..+900,
                          non-central blob +400..+900, central core +400..+900
blur                      in-plane Gaussian PSF sigma 0.45 mm; along z the slab profile of the slice
                          thickness (sigma = thickness / sqrt(12), combined with the PSF)
noise                     spatially correlated Gaussian, sigma 60 HU at <= 0.625 mm slices down to
                          20 HU at >= 2.5 mm (+-5), correlation ~0.7 mm in-plane
========================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from naslung.data.phantom.vessels import vessel_map

HU_MIN, HU_MAX = -1024, 3071
PSF_SIGMA_MM = 0.45
NOISE_CORRELATION_MM = 0.7

# The HU model as data, recorded in the phantom manifest (ranges are what the per-nodule draws span).
HU_TABLE = {
    "lung": [-870, -830],
    "lung_variation_sd": [10, 25],
    "vessel": [0, 60],
    "solid": [-30, 60],
    "ground_glass": [-700, -500],
    "fluid": [0, 20],
    "fat": [-120, -60],
    "air": [-1000, -1000],
    "calcification": [300, 1000],
    "noise_sd": [15, 65],
}

# LIDC rating codes.
CALC_POPCORN, CALC_LAMINATED, CALC_SOLID, CALC_NONCENTRAL, CALC_CENTRAL, CALC_ABSENT = 1, 2, 3, 4, 5, 6
STRUCT_SOFT_TISSUE, STRUCT_FLUID, STRUCT_FAT, STRUCT_AIR = 1, 2, 3, 4


@dataclass(frozen=True)
class NoduleAppearance:
    """The appearance ratings that drive the image. There is deliberately no malignancy here."""

    texture: float  # reader mean, 1 ground glass .. 5 solid
    calcification: int  # reader mode, 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 absent
    internal_structure: int  # reader mode, 1 soft tissue, 2 fluid, 3 fat, 4 air


@dataclass(frozen=True, eq=False)
class RenderSpec:
    """Everything the renderer may read. ``mask`` is bool ``(z, y, x)`` on the output grid."""

    mask: np.ndarray
    spacing: tuple[float, float, float]  # (z, y, x) mm
    slice_thickness: float  # mm
    appearance: NoduleAppearance


def noise_sigma(slice_thickness: float) -> float:
    """Nominal noise level: thinner slices collect fewer photons, so they are noisier (60 -> 20 HU)."""
    t = (np.clip(slice_thickness, 0.625, 2.5) - 0.625) / (2.5 - 0.625)
    return float(60.0 - 40.0 * t)


def render_volume(spec: RenderSpec, rng: np.random.Generator) -> np.ndarray:
    """Synthetic CT of ``spec.mask.shape``, int16 HU ``(z, y, x)``, deterministic for an ``rng`` state."""
    shape, spacing = spec.mask.shape, np.asarray(spec.spacing, dtype=float)
    image = _lung(shape, spacing, rng)
    vessels = vessel_map(shape, spacing, rng)
    vessel_hu = rng.uniform(0.0, 60.0)
    image += vessels * (vessel_hu - image)
    _paint_nodule(image, spec, rng)

    psf = PSF_SIGMA_MM / spacing
    slab = np.hypot(spec.slice_thickness / np.sqrt(12.0), PSF_SIGMA_MM) / spacing[0]
    image = ndimage.gaussian_filter(image, sigma=(slab, psf[1], psf[2]), mode="nearest")

    sigma = noise_sigma(spec.slice_thickness) + rng.uniform(-5.0, 5.0)
    image += sigma * _correlated_noise(shape, spacing, rng)
    return np.clip(np.rint(image), HU_MIN, HU_MAX).astype(np.int16)


def _lung(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Aerated parenchyma: a mean level plus a smooth field, interpolated from an 8 mm grid (cheap)."""
    coarse_shape = np.ceil(np.asarray(shape) * spacing / 8.0).astype(int) + 2
    coarse = rng.standard_normal(coarse_shape)
    field = spline_zoom(coarse, np.asarray(shape) / coarse_shape)
    field = field[: shape[0], : shape[1], : shape[2]]
    field /= max(float(field.std()), 1e-6)
    return (rng.uniform(-870.0, -830.0) + rng.uniform(10.0, 25.0) * field).astype(np.float32)


SPLINE_PAD = 12  # scipy.ndimage.zoom pads by 12 (edge values) before its spline filter in mode "nearest"


def _cubic_weights(cc: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four cubic B-spline weights at coordinates ``cc`` (scipy.ndimage's formulas, in its order)."""
    x = cc - np.floor(cc)
    y, z = x, 1.0 - x
    w1 = (y * y * (y - 2.0) * 3.0 + 4.0) / 6.0
    w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0
    w0 = z * z * z / 6.0
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def spline_zoom(coarse: np.ndarray, zoom: np.ndarray) -> np.ndarray:
    """``ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)`` of a 3-D float64 array,
    evaluated one axis at a time.

    The same spline coefficients (scipy's own ``spline_filter`` of the edge-padded input), output grid,
    sample coordinates and weights as scipy; scipy then sums the 64 products of each output voxel
    directly, while the tensor-product spline is applied here as three 4-tap passes (about 8x faster on a
    phantom volume). The sums differ only in rounding (within 1e-14 of scipy's values); on the phantom's
    float32 lung no voxel changed (docs/performance.md, "The phantom stage").
    """
    out_shape = tuple(int(round(n * f)) for n, f in zip(coarse.shape, zoom, strict=True))
    coeffs = ndimage.spline_filter(np.pad(coarse, SPLINE_PAD, mode="edge"), 3, output=np.float64,
                                   mode="nearest")
    plans = []
    for axis, (n_in, n_out) in enumerate(zip(coarse.shape, out_shape, strict=True)):
        factor = np.divide(float(n_in), float(n_out))  # scipy: input shape / output shape in grid mode
        cc = (np.arange(n_out, dtype=np.float64) + 0.5) * factor - 0.5 + SPLINE_PAD
        start = np.floor(cc).astype(np.intp) - 1
        lo, hi = int(start.min()), int(start.max()) + 4
        coeffs = coeffs[(slice(None),) * axis + (slice(lo, hi),)]  # only the coefficients in reach
        plans.append((start - lo, _cubic_weights(cc)))
    for axis in (2, 1, 0):  # the last pass along axis 0 copies whole rows
        start, weights = plans[axis]
        shape = [1] * coeffs.ndim
        shape[axis] = len(start)
        out = np.take(coeffs, start, axis=axis)
        out *= weights[0].reshape(shape)
        for k in (1, 2, 3):
            term = np.take(coeffs, start + k, axis=axis)
            term *= weights[k].reshape(shape)
            out += term
        coeffs = out
    return coeffs


def _correlated_noise(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise correlated over ~0.7 mm in-plane and half a slice along z."""
    white = rng.standard_normal(shape, dtype=np.float32)
    sigma = (0.5, NOISE_CORRELATION_MM / spacing[1], NOISE_CORRELATION_MM / spacing[2])
    noise = ndimage.gaussian_filter(white, sigma=sigma, mode="wrap")
    return noise / max(float(noise.std()), 1e-6)


def _paint_nodule(image: np.ndarray, spec: RenderSpec, rng: np.random.Generator) -> None:
    """Write the nodule's HU into ``image`` inside the mask (works on the mask's bounding box)."""
    if not spec.mask.any():
        return
    box = ndimage.find_objects(spec.mask.astype(np.uint8))[0]
    mask = spec.mask[box]
    spacing = np.asarray(spec.spacing, dtype=float)
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    inside = depth[mask]
    look = spec.appearance

    def core(fraction: float) -> np.ndarray:
        """The deepest ``fraction`` of the nodule's voxels."""
        if fraction <= 0:
            return np.zeros_like(mask)
        return mask & (depth >= np.quantile(inside, 1.0 - fraction))

    hu = np.full(mask.shape, rng.uniform(-700.0, -500.0), dtype=np.float32)  # ground glass
    solid_fraction = float(np.clip((look.texture - 1.0) / 4.0, 0.0, 1.0))
    hu[core(solid_fraction)] = rng.uniform(-30.0, 60.0)

    if look.internal_structure == STRUCT_FLUID:
        hu[core(0.25)] = rng.uniform(0.0, 20.0)
    elif look.internal_structure == STRUCT_FAT:
        hu[core(0.30)] = rng.uniform(-120.0, -60.0)
    elif look.internal_structure == STRUCT_AIR:
        hu[core(0.25)] = -1000.0

    calc = _calcification(mask, depth, spacing, look.calcification, rng)
    hu = np.where(calc > 0, calc, hu)
    image[box][mask] = hu[mask]


def _calcification(
    mask: np.ndarray, depth: np.ndarray, spacing: np.ndarray, pattern: int, rng: np.random.Generator
) -> np.ndarray:
    """HU of calcified voxels (0 elsewhere), laid out by the LIDC calcification pattern."""
    out = np.zeros(mask.shape, dtype=np.float32)
    if pattern not in (CALC_POPCORN, CALC_LAMINATED, CALC_SOLID, CALC_NONCENTRAL, CALC_CENTRAL):
        return out
    rel = depth / max(float(depth.max()), 1e-6)  # 0 at the border, 1 at the deepest point
    radius = (3.0 * mask.sum() * np.prod(spacing) / (4.0 * np.pi)) ** (1.0 / 3.0)  # equivalent sphere, mm
    if pattern == CALC_SOLID:
        out[mask] = rng.uniform(400.0, 800.0) + 100.0 * rel[mask]
    elif pattern == CALC_CENTRAL:
        out[mask & (rel >= 0.55)] = rng.uniform(400.0, 900.0)
    elif pattern == CALC_LAMINATED:
        rings = rng.integers(2, 4)
        shells = mask & (rel > 0.15) & (np.mod(rel * rings, 1.0) < 0.4)
        out[shells] = rng.uniform(300.0, 600.0)
    elif pattern == CALC_POPCORN:
        for _ in range(int(rng.integers(3, 7))):
            r = float(np.clip(0.2 * radius, 0.7, 2.0))
            out = np.maximum(out, _blob(mask, rel > 0.2, spacing, r, rng) * rng.uniform(600.0, 1000.0))
    else:  # non-central: one eccentric blob
        r = float(np.clip(0.35 * radius, 1.0, 4.0))
        eccentric = (rel > 0.15) & (rel < 0.6)
        out = _blob(mask, eccentric, spacing, r, rng) * rng.uniform(400.0, 900.0)
    return out


def _blob(
    mask: np.ndarray, where: np.ndarray, spacing: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Ball of ``radius`` mm centred on a random voxel of ``mask & where`` (of ``mask`` if that is empty)."""
    candidates = np.argwhere(mask & where)
    if len(candidates) == 0:
        candidates = np.argwhere(mask)
    centre = candidates[rng.integers(len(candidates))]
    grid = np.indices(mask.shape, dtype=np.float32)
    dist2 = sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
    return ((dist2 <= radius**2) & mask).astype(np.float32)
