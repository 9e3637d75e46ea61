"""``--init NAME``: a bundled model's weights as the start of a training run (:mod:`naslung.train.init`).

Never implicit: ``naslung train`` and ``naslung cv`` start from a random init unless ``--init`` names a
bundled model, and ``search`` and ``reproduce`` always do. ``NAME`` is a single model, or ``NAME/MEMBER``
for one member of an ensemble. The weights file is checked against its card's sha256 first, and the run
records :func:`init_from_bundle`'s ``record`` in its ``config.json``.
"""

from __future__ import annotations

from pathlib import Path

from naslung.train.init import WeightInit


def init_from_bundle(name: str, root: str | Path | None = None) -> WeightInit:
    """The :class:`WeightInit` of bundled model ``name`` (``NAME`` or ``NAME/MEMBER``).

    ``ValueError`` for an unknown name or member, or an ensemble named without its member;
    ``FileNotFoundError`` for a model that is not built.
    """
    from naslung.train.checkpoint import load_checkpoint
    from naslung.zoo.registry import built_card, checked_weights, recipe

    model, _, member = str(name).partition("/")
    rec = recipe(model)
    card = built_card(rec.name, root)
    members = card["members"]
    names = [m["name"] for m in members]
    if card["kind"] == "single":
        if member and member != names[0]:
            raise ValueError(f"--init {name}: {model} is a single model; give --init {model}")
        chosen = members[0]
    else:
        if not member:
            raise ValueError(f"--init {name}: an ensemble; start from one member, --init {model}/MEMBER, "
                             f"MEMBER one of {', '.join(names)}")
        if member not in names:
            raise ValueError(f"--init {name}: no member {member!r} in {model}; members: {', '.join(names)}")
        chosen = members[names.index(member)]
    weights = checked_weights(rec.name, chosen, root)
    state = load_checkpoint(weights, map_location="cpu")
    folds = tuple(int(f) for f in (card.get("data") or {}).get("folds", []))
    label = rec.name if card["kind"] == "single" else f"{rec.name}/{chosen['name']}"
    record = {"model": rec.name, "member": None if card["kind"] == "single" else chosen["name"],
              "weights": chosen["weights"], "checksum": chosen["sha256"], "model_sha256": card["sha256"],
              "trained_folds": list(folds)}
    options = {"arch": state.get("spec"), **(state.get("model_options") or {})}
    return WeightInit(name=label, state=state["model"], model_options=options,
                      spatial_dims=int(card["dims"]), folds=folds, record=record,
                      input=dict(card.get("input") or {}))
