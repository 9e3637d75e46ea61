"""Is this data the LIDC phantom? The one rule, and the one note every output carries when it is.

Decided by the dataset's typed ``source_kind``, never from a word. ``naslung data prepare`` writes the
attribute ``source_kind`` ("luna16", "lidc-voi", "phantom" or "other") into every dataset, and training copies
it into a run's ``config.json`` (``["dataset"]["source_kind"]``). Files written before that are classified by
:func:`naslung.data.dataset.source_kind_of` from their provenance's explicit ``phantom`` entry.

Everything that prints, plots or writes a phantom warning takes it from here: :data:`PHANTOM_NOTE` for
reports, tables and summaries, :data:`PHANTOM_TITLE` for a plot's title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naslung.data.dataset import SourceKind, read_source_kind, source_kind_of

#: The warning beside every number measured on the phantom (reports, tables, JSON summaries).
PHANTOM_NOTE = "PHANTOM data: synthetic CT rendered from LIDC annotations; these are not LIDC results"
#: The short form, appended to a plot's title.
PHANTOM_TITLE = "phantom data (not LIDC accuracy)"


def source_kind(attrs_or_config: dict[str, Any]) -> SourceKind:
    """The source kind of dataset attrs, or of a run's ``config.json`` (its ``"dataset"`` entry)."""
    dataset = attrs_or_config.get("dataset")
    return source_kind_of(dataset if isinstance(dataset, dict) else attrs_or_config)


def is_phantom_kind(kind: str | None) -> bool:
    """The rule itself: the data is the phantom exactly when its source kind says so."""
    return kind == "phantom"


def is_phantom(provenance: Any) -> bool:
    """True when a dataset provenance dict explicitly marks the data as phantom (files without
    ``source_kind``; see :func:`naslung.data.dataset.source_kind_of`)."""
    return is_phantom_kind(source_kind_of({"provenance": provenance}))


def phantom_note(phantom: bool) -> str:
    """:data:`PHANTOM_NOTE` for phantom data, else ``""``."""
    return PHANTOM_NOTE if phantom else ""


def phantom_title(phantom: bool) -> str:
    """:data:`PHANTOM_TITLE` for phantom data, else ``""``."""
    return PHANTOM_TITLE if phantom else ""


def title_of_file(data: str | Path) -> str:
    """:func:`phantom_title` of a dataset file; ``""`` when it cannot be read (the caller reports that)."""
    try:
        kind = read_source_kind(data)
    except (OSError, ValueError):
        return ""
    return phantom_title(is_phantom_kind(kind))
