"""Is this data the LIDC phantom? Decided by the dataset's typed ``source_kind``, never from a word.

``naslung data prepare`` writes the attribute ``source_kind`` ("luna16", "phantom" or "other") into every
dataset, and training copies it into a run's ``config.json`` (``["dataset"]["source_kind"]``). Files written
before that are classified by :func:`naslung.data.dataset.source_kind_of` from their provenance's explicit
``phantom`` entry.
"""

from __future__ import annotations

from typing import Any

from naslung.data.dataset import SourceKind, source_kind_of

PHANTOM_NOTE = "PHANTOM data: synthetic CT rendered from LIDC annotations; these are not LIDC results"


def source_kind(attrs_or_config: dict[str, Any]) -> SourceKind:
    """The source kind of dataset attrs, or of a run's ``config.json`` (its ``"dataset"`` entry)."""
    dataset = attrs_or_config.get("dataset")
    return source_kind_of(dataset if isinstance(dataset, dict) else attrs_or_config)


def is_phantom(provenance: Any) -> bool:
    """True when a dataset provenance dict explicitly marks the data as phantom (files without
    ``source_kind``; see :func:`naslung.data.dataset.source_kind_of`)."""
    return source_kind_of({"provenance": provenance}) == "phantom"
