"""The phantom tree's manifest, ``phantom.json``: the one reader of it (light: no renderer import).

Fields: schema, version, seed, limit, complete, disclaimer, counts, flipped, sources (one entry per volume:
seriesuid, source_seriesuid, nodule_id, subset), ... (written by :mod:`naslung.data.phantom.build`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from naslung import schemas

SCHEMA = schemas.PHANTOM
MANIFEST = "phantom.json"
DISCLAIMER = (
    "Synthetic CT rendered from LIDC contours and ratings: accuracy on the phantom is not accuracy on LIDC."
)
# What a prepared dataset records of the manifest (its provenance's "phantom" entry).
PROVENANCE_KEYS = ("schema", "version", "seed", "limit", "disclaimer")


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest of the phantom tree ``root``, or None when there is none (or it is unreadable)."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_subsets(manifest: dict[str, Any]) -> dict[str, int]:
    """``seriesuid -> subset`` of the phantom's own volumes (their uids are not LUNA16's); {} if unusable."""
    try:
        return {str(s["seriesuid"]): int(s["subset"]) for s in manifest.get("sources", [])}
    except (KeyError, TypeError, ValueError):
        return {}


def provenance_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a dataset prepared from the phantom records: schema, version, seed, limit and
    the disclaimer."""
    return {k: manifest.get(k) for k in PROVENANCE_KEYS}
