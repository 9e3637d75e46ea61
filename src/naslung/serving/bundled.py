"""A bundled model, loaded for prediction: one :class:`~naslung.serving.runs.RunModel` per member.

The weights are rebuilt by :func:`naslung.train.checkpoint.load_model` (the run folders' own loader); the crop
settings come from the card (a bundled model has no dataset file beside it). Each weights file is checked
against the sha256 its card records before it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from naslung.serving.runs import CropSettings, RunModel
from naslung.zoo.registry import sha256_file

__all__ = ["crop_of", "load_bundled", "sha256_file"]


def crop_of(card: dict) -> CropSettings:
    """The crop settings a card's ``input`` section records."""
    spec = card["input"]
    lo, hi = spec["window_hu"]
    return CropSettings(size=int(spec["size"]), margin=int(spec["margin"]), dims=int(spec["dims"]),
                        spacing=float(spec["spacing_mm"]), window=(float(lo), float(hi)),
                        source=f"bundled model {card['name']}")


def load_bundled(name: str, root: str | Path | None = None) -> list[RunModel]:
    """Every member of bundled model ``name``, checksum-checked, on CPU in eval mode.

    ``FileNotFoundError`` for a model that is not built (the message gives its build command),
    ``ValueError`` for a weights file whose sha256 differs from its card's.
    """
    from naslung.train.checkpoint import load_model
    from naslung.zoo.registry import built_card, checked_weights

    card = built_card(name, root)
    crop = crop_of(card)
    trained = tuple(int(f) for f in (card.get("data") or {}).get("folds", []))
    members = []
    for m in card["members"]:
        weights = checked_weights(name, m, root)
        label = name if card["kind"] == "single" else f"{name}/{m['name']}"
        members.append(RunModel(path=weights.parent, model=load_model(weights), test_fold=None,
                                spec=str(m["arch"]), loss=(m.get("config") or {}).get("loss"), crop=crop,
                                config={"config": m.get("config") or {}}, label=label,
                                trained_folds=trained))
    return members
