"""``naslung explain``: Fig. 5 (attention), Fig. 6 (t-SNE) and Table 4 (DBI) for one or two runs on a fold.

Outputs in ``out``::

    montage.png            Fig. 5: CT | stage-2 attention, malignant/benign x correct/wrong
    nodules/*.png          one PNG per explained nodule
    tsne.png               Fig. 6: one panel per run (side by side with --compare)
    dbi.csv, dbi.json      Table 4: S0, S1, M01, DBI per run (eq. 12-14), raw and unit-norm features
    explain.json           what was done: runs, fold, examples, notes
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from naslung import schemas
from naslung.data.source import is_phantom_kind, phantom_note

DBI_COLUMNS = ("run", "loss", "features", "S0", "S1", "M01", "DBI", "n0", "n1")


def run_explain(run: str | Path, data: str | Path, fold: int, out: str | Path,
                compare: Sequence[str | Path] = (), per_group: int = 4, seed: int = 0,
                allow_seen_fold: bool = False) -> dict[str, Any]:
    """Explain ``run`` (a run or cv folder, or a bundled model name: every member of it) on the nodules of
    ``fold`` in dataset ``data``; see module doc.

    ``compare``: more runs (e.g. the Softmax twin of an A-Softmax run) for the t-SNE and DBI table. The
    montage uses the first run. Every run must have been trained on ``data`` (its recorded fingerprint) and
    have ``fold`` as its test fold, unless ``allow_seen_fold`` (:mod:`naslung.explain.guards`). Raises
    ``ValueError``/``FileNotFoundError`` naming the file or option.
    """
    from naslung.atomic import write_json_atomic, write_text_atomic
    from naslung.explain.dbi import davies_bouldin
    from naslung.explain.features import extract_features
    from naslung.explain.guards import check_same_data, check_unseen_fold
    from naslung.explain.montage import explain_examples, save_montage
    from naslung.explain.tsne import Panel, embed, plot_panels
    from naslung.fingerprint import load_dataset
    from naslung.serving.evaluate import check_crops
    from naslung.serving.predict import load_for_fold

    data, out = Path(data), Path(out)
    dataset = load_dataset(data)
    rows = np.flatnonzero(np.asarray(dataset.fold) == fold)
    if rows.size == 0:
        raise ValueError(f"--fold {fold}: {data} has no nodule in fold {fold} "
                         f"(folds present: {sorted(set(np.asarray(dataset.fold).tolist()))})")
    runs = [m for r in (run, *compare) for m in load_for_fold(r, fold)]
    for r in runs:
        check_crops(r, dataset, data)
        check_same_data(r, dataset, data)
    seen = [check_unseen_fold(r, fold, allow_seen_fold) for r in runs]
    phantom = is_phantom_kind(dataset.source_kind)
    note = phantom_note(phantom)
    notes = [note] if note else []
    notes += [n for n in seen if n]

    panels, dbi_rows, per_run = [], [], []
    for r in runs:
        fs = extract_features(r.model, dataset, rows)
        title = f"{r.spec} {r.loss or ''} fold {fold}".strip()
        for kind, norm in (("raw", False), ("unit-norm", True)):
            try:
                stats = davies_bouldin(fs.features, fs.labels, normalize=norm)
            except ValueError as exc:
                stats = {"error": str(exc)}
            dbi_rows.append({"run": r.name, "loss": r.loss, "features": kind, **stats})
        try:
            panels.append(Panel(embed(fs.features, seed=seed), fs.labels, title))
        except ValueError as exc:
            notes.append(f"{r.name}: no t-SNE ({exc})")
        per_run.append({"run": r.name, "spec": r.spec, "loss": r.loss, "test_fold": r.test_fold,
                        "n": int(rows.size), "accuracy": float(np.mean((fs.prob >= 0.5) == fs.labels))})
        if r is runs[0]:
            first = fs

    files: dict[str, str] = {}
    if panels:
        files["tsne"] = str(plot_panels(panels, out / "tsne.png", note=note))
    examples = []
    try:
        examples = explain_examples(runs[0].model, dataset, rows, first.prob, out, per_group)
        title = f"stage-2 spatial attention, {runs[0].spec}, fold {fold} (CT | map; red = high)"
        files["montage"] = str(save_montage(examples, out / "montage.png", per_group,
                                            f"{title}\n{note}" if note else title))
    except ValueError as exc:  # a model without attention
        notes.append(f"{runs[0].name}: no attention montage ({exc})")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=DBI_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(dbi_rows)
    files["dbi_csv"] = str(write_text_atomic(out / "dbi.csv", buf.getvalue()))
    files["dbi_json"] = str(write_json_atomic(out / "dbi.json", dbi_rows))
    summary = {"schema": schemas.EXPLAIN, "schema_version": 1, "data": str(data), "fold": fold,
               "phantom": phantom, "notes": notes, "runs": per_run, "dbi": dbi_rows,
               "examples": [e.to_dict() for e in examples], "files": files}
    write_json_atomic(out / "explain.json", summary)
    return summary
