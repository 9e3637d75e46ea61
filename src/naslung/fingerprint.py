"""Content fingerprint of a crop dataset, so a run never resumes or mixes against different data.

The fingerprint is a BLAKE2b digest of what decides the numbers: every array of the file (name, dtype,
shape, bytes; images streamed in slabs) and the attributes that change how images are read (``window``,
``size``, ``margin``, ``spacing_mm``, ``spatial_dims``, ``schema_version``). Provenance (dates, commands) is
left out, so rewriting the same crops gives the same fingerprint. A file that is not HDF5 is hashed byte for
byte.

It is computed once per file content and cached, in memory and in the user cache directory, by
(resolved path, size, mtime). :func:`load_dataset` returns a dataset that remembers its file's fingerprint;
:func:`fingerprint_of` gives it for such a dataset, or hashes the arrays of one built in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from naslung.errors import DataError

PREFIX = "blake2b:"
MEMORY_PREFIX = "blake2b-mem:"
#: Attributes that change what the arrays mean to a model.
ATTRS = ("schema_version", "spatial_dims", "size", "margin", "spacing_mm", "window")
_SLAB = 64  # images read per step: bounded memory whatever the file size
_MEMO: dict[tuple[str, int, int], str] = {}
_OF_DATASET: dict[int, tuple[weakref.ref[Any], str]] = {}


class DatasetMismatchError(ValueError):
    """A run, cv or search folder was made with another dataset than the one given now."""


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), int(st.st_size), int(st.st_mtime_ns))


def _cache_file(resolved: str) -> Path:
    from naslung.paths import cache_dir

    name = hashlib.blake2b(resolved.encode(), digest_size=16).hexdigest()
    return cache_dir("fingerprints") / f"{name}.json"


def _update_array(h: Any, name: str, data: np.ndarray) -> None:
    data = np.ascontiguousarray(data)
    if data.dtype == object:  # variable-length strings
        data = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data.ravel()], dtype=str)
    h.update(f"{name}|{data.dtype.str}|{data.shape}|".encode())
    h.update(data.tobytes())


def _hash_file(path: Path) -> str:
    import h5py

    h = hashlib.blake2b(digest_size=20)
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return PREFIX + h.hexdigest()
    with h5:
        for name in sorted(h5.keys()):
            obj = h5[name]
            if not hasattr(obj, "shape"):
                continue
            h.update(f"{name}|{obj.dtype.str}|{obj.shape}|".encode())
            if obj.ndim and obj.shape[0] > _SLAB:
                for start in range(0, obj.shape[0], _SLAB):
                    _update_array(h, name, obj[start:start + _SLAB])
            else:
                _update_array(h, name, obj[()] if obj.ndim else np.asarray(obj[()]))
        attrs = {k: h5.attrs[k] for k in ATTRS if k in h5.attrs}
        h.update(json.dumps({k: np.asarray(v).tolist() if not isinstance(v, str | bytes) else str(v)
                             for k, v in attrs.items()}, sort_keys=True, default=str).encode())
    return PREFIX + h.hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Fingerprint of a dataset file (cached by resolved path, size and mtime)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
    key = _key(path)
    if key in _MEMO:
        return _MEMO[key]
    try:
        cache: Path | None = _cache_file(key[0])
    except OSError:  # an unwritable cache only costs a recomputation
        cache = None
    try:
        saved = json.loads(cache.read_text(encoding="utf-8")) if cache is not None else {}
        if [saved.get("path"), saved.get("size"), saved.get("mtime_ns")] == list(key):
            _MEMO[key] = str(saved["fingerprint"])
            return _MEMO[key]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    digest = _hash_file(path)
    _MEMO[key] = digest
    if cache is None:
        return digest
    try:
        from naslung.atomic import write_json_atomic

        write_json_atomic(cache, {"path": key[0], "size": key[1], "mtime_ns": key[2], "fingerprint": digest})
    except OSError:  # a read-only cache only costs a recomputation next time
        pass
    return digest


def remember(dataset: Any, fingerprint: str) -> Any:
    """Attach ``fingerprint`` to an in-memory ``dataset`` (for :func:`fingerprint_of`); returns it."""
    _OF_DATASET[id(dataset)] = (weakref.ref(dataset), fingerprint)
    return dataset


def fingerprint_of(dataset: Any) -> str:
    """The fingerprint of an in-memory dataset: its file's (see :func:`load_dataset`), else of its arrays."""
    entry = _OF_DATASET.get(id(dataset))
    if entry is not None and entry[0]() is dataset:
        return entry[1]
    h = hashlib.blake2b(digest_size=20)
    for name in ("images", "labels", "fold", "seriesuid", "nodule_id"):
        _update_array(h, name, np.asarray(getattr(dataset, name)))
    attrs = getattr(dataset, "attrs", {}) or {}
    h.update(json.dumps({k: attrs.get(k) for k in ATTRS}, sort_keys=True, default=str).encode())
    digest = MEMORY_PREFIX + h.hexdigest()
    remember(dataset, digest)
    return digest


def load_dataset(path: str | os.PathLike[str]) -> Any:
    """:func:`naslung.data.dataset.load_dataset` plus the file's fingerprint remembered for the result."""
    from naslung.data.dataset import load_dataset as _load

    dataset = _load(path)
    return remember(dataset, file_fingerprint(path))


def check_same(saved: str | None, now: str, where: str | os.PathLike[str], action: str = "resume") -> None:
    """Raise :class:`DatasetMismatchError` when ``saved`` (a recorded fingerprint) differs from ``now``.

    Folders written before fingerprints were recorded (``saved`` is None) pass, and so do fingerprints of
    different kinds (a file's against an in-memory dataset's), which cannot be compared.
    """
    if saved and saved.split(":")[0] == now.split(":")[0] and saved != now:
        raise DatasetMismatchError(
            f"{where}: was made with another dataset (fingerprint {saved[:24]}..., the given --data has "
            f"{now[:24]}...); cannot {action} against different data, use another --out")
