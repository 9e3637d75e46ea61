"""The crop dataset file: HDF5, schema ``naslung-crops`` version 1.

Layout (N nodules; ``S = size + 2 * margin``)::

    /images        int16  (N, S, S, S) or (N, S, S)  HU, clipped to the window, 1 mm isotropic
    /labels        uint8  (N,)   1 = malignant (mean rating > 3), 0 = benign (mean < 3)
    /fold          int8   (N,)   LUNA16 subset index 0-9 of the nodule's scan
    /seriesuid     str    (N,)   LUNA16 series uid of the scan the crop comes from
    /nodule_id     str    (N,)   stable id of the label cluster
    /world_center  float64 (N, 3) x, y, z in mm (LUNA16 world convention)
    /diameter_mm   float32 (N,)
    /malignancy_mean, /malignancy_median  float32 (N,)
    /ratings       float32 (N, R) extra per-nodule ratings, names in attrs["rating_names"]
    /padded        bool   (N,)   the crop reached past the scan border and was padded with air
    attrs: schema, schema_version, spatial_dims, size, margin, spacing_mm, window (lo, hi),
           rating_names, provenance (JSON: source, command, naslung version, date)

Readers get float32 images scaled to [0, 1] over the window, so models never see raw HU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "naslung-crops"
SCHEMA_VERSION = 1


@dataclass
class NoduleDataset:
    """In-memory crop dataset. ``images`` are float32 in [0, 1], shape (N, [D,] H, W)."""

    images: np.ndarray
    labels: np.ndarray
    fold: np.ndarray
    seriesuid: np.ndarray
    nodule_id: np.ndarray
    world_center: np.ndarray
    diameter_mm: np.ndarray
    malignancy_mean: np.ndarray
    malignancy_median: np.ndarray
    ratings: np.ndarray
    padded: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 1

    @property
    def size(self) -> int:
        """Side of the model input (the stored crop is ``size + 2 * margin``)."""
        return int(self.attrs.get("size", self.images.shape[-1]))

    @property
    def margin(self) -> int:
        return int(self.attrs.get("margin", 0))

    def subset(self, index: np.ndarray) -> NoduleDataset:
        """Rows ``index`` (integer or boolean array) as a new dataset sharing attrs."""
        kw = {f: getattr(self, f)[index] for f in _ARRAY_FIELDS}
        return NoduleDataset(**kw, attrs=dict(self.attrs))


_ARRAY_FIELDS = (
    "images", "labels", "fold", "seriesuid", "nodule_id", "world_center", "diameter_mm",
    "malignancy_mean", "malignancy_median", "ratings", "padded",
)


def write_dataset(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Write a complete dataset atomically. ``arrays`` holds every ``/`` dataset of the schema with
    ``images`` in int16 HU; ``attrs`` must include spatial_dims, size, margin, spacing_mm, window,
    rating_names and provenance (a dict)."""
    import h5py

    from naslung.atomic import atomic_path

    missing = [f for f in _ARRAY_FIELDS if f not in arrays]
    if missing:
        raise ValueError(f"{path}: cannot write dataset, missing arrays {missing}")
    n = len(arrays["labels"])
    for name in _ARRAY_FIELDS:
        if len(arrays[name]) != n:
            raise ValueError(f"{path}: array {name!r} has {len(arrays[name])} rows, labels has {n}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name in _ARRAY_FIELDS:
            data = arrays[name]
            if name in ("seriesuid", "nodule_id"):
                h5.create_dataset(name, data=np.asarray(data, dtype=object), dtype=h5py.string_dtype())
            elif name == "images":
                h5.create_dataset(name, data=np.asarray(data, dtype=np.int16), chunks=True, compression="gzip",
                                  compression_opts=1)
            else:
                h5.create_dataset(name, data=np.asarray(data))
        h5.attrs["schema"] = SCHEMA
        h5.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in attrs.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list | tuple) else value
    return Path(path)


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Attributes of a dataset file, JSON-decoded; validates the schema."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset file not found")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: _decode(v) for k, v in h5.attrs.items()}
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 dataset ({exc})") from exc
    if attrs.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a naslung crop dataset (schema={attrs.get('schema')!r})")
    if int(attrs.get("schema_version", -1)) > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {attrs['schema_version']} is newer than this naslung "
                         f"({SCHEMA_VERSION}); upgrade naslung")
    return attrs


def load_dataset(path: str | Path) -> NoduleDataset:
    """Load a whole dataset into memory; images become float32 in [0, 1] over the stored window."""
    import h5py

    attrs = read_attrs(path)
    with h5py.File(path, "r") as h5:
        arrays = {name: h5[name][()] for name in _ARRAY_FIELDS}
    lo, hi = (float(v) for v in attrs["window"])
    images = (arrays.pop("images").astype(np.float32) - lo) / (hi - lo)
    np.clip(images, 0.0, 1.0, out=images)
    for name in ("seriesuid", "nodule_id"):
        arrays[name] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arrays[name]])
    return NoduleDataset(images=images, attrs=attrs, **arrays)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
