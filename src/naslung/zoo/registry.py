"""The table of bundled model names, each with its recipe, and where their files live.

A bundled model ``NAME`` is a folder ``<models root>/<NAME>/`` holding ``card.json`` (:mod:`naslung.zoo.card`)
and its weights in the checkpoint format of :mod:`naslung.train.checkpoint`: ``best.pt`` for a single model,
``<member>/best.pt`` for each member of an ensemble. The models root is the package's
``naslung/resources/models`` unless ``$NASLUNG_MODELS`` names another folder (tests, or a user's own
builds). A name of the table whose folder holds no ``card.json`` is "not built": listed, never loaded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from naslung import schemas

#: Environment variable that replaces the package's models folder.
MODELS_ENV = "NASLUNG_MODELS"
CARD_FILE = "card.json"
WEIGHTS_FILE = "best.pt"
#: The kinds of recipe: one model trained with TrainConfig's defaults, or the members of a ``members.json``.
KINDS = ("single", "ensemble")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Recipe:
    """How a bundled model is rebuilt.

    Attributes:
        name: the model name (``naslung models show NAME``, ``--model NAME``).
        kind: ``"single"`` (TrainConfig's defaults for ``dims``) or ``"ensemble"`` (every member of a
            ``naslung search select`` members.json, each with its recorded TrainConfig; majority vote).
        dims: 3 (cubes) or 2 (the axial slice through the nodule centre): ``data prepare --dims``.
        summary: one line for ``naslung models list``.
    """

    name: str
    kind: str
    dims: int
    summary: str

    @property
    def arch(self) -> str | None:
        """The architecture of a single model (TrainConfig's default for ``dims``); None for an ensemble."""
        if self.kind != "single":
            return None
        from naslung.train.config import DEFAULT_ARCHS

        return DEFAULT_ARCHS[self.dims]

    def build_command(self) -> str:
        """The command line that rebuilds this model (``--cv``/``--members`` as placeholders)."""
        extra = " --members SEARCH/members.json --cv MEMBERS_CV" if self.kind == "ensemble" else " --cv CVDIR"
        return f"naslung models build {self.name} --vois CT_SLICING{extra}"


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("voi3d-default", "single", 3, "3-D default architecture, TrainConfig's defaults, on the real "
                                         "LIDC VOI cubes"),
    Recipe("voi2d-default", "single", 2, "2-D default architecture, TrainConfig's defaults, on the real "
                                         "LIDC VOI axial slices"),
    Recipe("voi3d-ensemble", "ensemble", 3, "Majority vote of the searched 3-D members (members.json)"),
    Recipe("voi2d-ensemble", "ensemble", 2, "Majority vote of the searched 2-D members (members.json)"),
)}


def recipe(name: str) -> Recipe:
    """The recipe of ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"no bundled model {name!r}; known: {', '.join(RECIPES)}") from None


def models_root() -> Path:
    """``$NASLUNG_MODELS`` when set, else the package's ``naslung/resources/models`` folder."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files("naslung.resources").joinpath("models")))


def model_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder of bundled model ``name`` (which need not exist yet)."""
    return Path(root if root is not None else models_root()) / recipe(name).name


def is_built(name: str, root: str | Path | None = None) -> bool:
    """Whether ``name``'s folder holds its ``card.json`` (written last by the build)."""
    return (model_dir(name, root) / CARD_FILE).is_file()


def read_card(name: str, root: str | Path | None = None) -> dict[str, Any] | None:
    """``card.json`` of ``name`` as a dict, or None when the model is not built; errors name the file."""
    from naslung.atomic import read_json

    path = model_dir(name, root) / CARD_FILE
    if not path.is_file():
        return None
    card = read_json(path, "model card")
    if not isinstance(card, dict) or card.get("schema") != schemas.MODEL_CARD:
        raise ValueError(f"{path}: not a naslung model card")
    return card


def is_model_name(text: str | os.PathLike[str]) -> bool:
    """``text`` is a registry name and not an existing path (an existing folder of that name wins)."""
    return str(text) in RECIPES and not Path(text).exists()


def checked_weights(name: str, member: dict[str, Any], root: str | Path | None = None) -> Path:
    """The weights file of ``member`` (an entry of the card's ``members``) of bundled model ``name``, after
    checking its sha256 against the card: ``FileNotFoundError`` when it is missing, ``ValueError`` when it
    differs."""
    weights = model_dir(name, root) / member["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights of bundled model {name} are missing")
    got = sha256_file(weights)
    if got != member["sha256"]:
        raise ValueError(f"{weights}: sha256 {got} differs from the card's {member['sha256']}; the bundled "
                         f"weights were changed or damaged")
    return weights


def built_card(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """The card of ``name``; ``FileNotFoundError`` giving the build command when it is not built."""
    card = read_card(name, root)
    if card is None:
        raise FileNotFoundError(f"bundled model {name} is not built ({model_dir(name, root)} holds no "
                                f"card.json); build it with: {recipe(name).build_command()}")
    return card
