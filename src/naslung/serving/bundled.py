"""A bundled model, loaded for prediction: one :class:`~naslung.serving.runs.RunModel` per member.

The weights are rebuilt by :func:`naslung.train.checkpoint.load_model` (the run folders' own loader); the crop
settings come from the card (a bundled model has no dataset file beside it). Each weights file is checked
against the sha256 its card records before it is loaded.
"""

from __future__ import annotations

from pathlib import Path

from naslung.serving.runs import CropSettings, RunModel
from naslung.zoo.registry import model_dir, read_card, sha256_file

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
    from naslung.zoo.registry import recipe

    card = read_card(name, root)
    folder = model_dir(name, root)
    if card is None:
        raise FileNotFoundError(f"bundled model {name} is not built ({folder} holds no card.json); build it "
                                f"with: {recipe(name).build_command()}")
    crop = crop_of(card)
    members = []
    for m in card["members"]:
        weights = folder / m["weights"]
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: weights of bundled model {name} are missing")
        got = sha256_file(weights)
        if got != m["sha256"]:
            raise ValueError(f"{weights}: sha256 {got} differs from the card's {m['sha256']}; the bundled "
                             f"weights were changed or damaged")
        label = name if card["kind"] == "single" else f"{name}/{m['name']}"
        members.append(RunModel(path=weights.parent, model=load_model(weights), test_fold=None,
                                spec=str(m["arch"]), loss=(m.get("config") or {}).get("loss"), crop=crop,
                                config={"config": m.get("config") or {}}, label=label))
    return members
