"""Is this data the LIDC phantom? Decided from recorded provenance only, never from the word alone.

``naslung data prepare`` writes ``provenance["phantom"]``: the phantom tree's manifest (a dict with its
seed, version and disclaimer) for phantom data, and ``null`` for real data. So data counts as phantom only
when that key holds a non-empty manifest (or ``true``); a ``null``, ``false`` or absent key is real data.
"""

from __future__ import annotations

from typing import Any

PHANTOM_NOTE = "PHANTOM data: synthetic CT rendered from LIDC annotations; these are not LIDC results"


def is_phantom(provenance: Any) -> bool:
    """True when a dataset provenance dict explicitly marks the data as phantom."""
    if not isinstance(provenance, dict):
        return False
    mark = provenance.get("phantom")
    if isinstance(mark, dict):
        return bool(mark)
    return mark is True


def dataset_provenance(attrs_or_config: dict[str, Any]) -> Any:
    """The provenance dict of dataset attrs, or of a run's ``config.json`` (``["dataset"]["provenance"]``)."""
    if "dataset" in attrs_or_config and isinstance(attrs_or_config["dataset"], dict):
        return attrs_or_config["dataset"].get("provenance")
    return attrs_or_config.get("provenance")
