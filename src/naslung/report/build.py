"""``naslung report EXPERIMENT_DIR --out report.html``: the paper's tables and figures for the user's runs.

Sections: models and ensembles beside the diameter baseline with 95 % scan-grouped bootstrap CIs (Tables 1
and 5 analogues), the paired comparison against the diameter baseline, ``naslung cv`` summaries, Table 4
(DBI) from ``naslung explain``, calibration (reliability diagram and ECE), Figs. 4-7 where they exist, the
protocol of every run (which folds chose what) and provenance. Data whose recorded provenance marks it as
the LIDC phantom is labelled so at the top and bottom of the page. Tables 2-3 come from ``naslung ablate``.
"""

from __future__ import annotations

import datetime as _dt
import json
from html import escape
from pathlib import Path
from typing import Any

from naslung.data.source import PHANTOM_NOTE
from naslung.report import html as H
from naslung.report.analysis import Entry, analyse
from naslung.report.discover import Experiment, discover
from naslung.report.stats import METRICS

METRIC_NAMES = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
                "f1": "F1", "auc": "AUC"}


def _models_section(entries: list[Entry]) -> str:
    headers = ["method", "models", "test folds", "nodules / scans", *METRIC_NAMES.values(), "ECE", "params"]
    rows, classes = [], []
    for e in entries:
        s = e.stats
        ece = H.pct(s["calibration"]["ece"]) if e.calibrated else "-"
        rows.append([escape(e.name), escape(e.description), escape(",".join(map(str, e.folds))),
                     f"{s['n']} / {s['scans']}", *(H.ci_cell(s["ci"][m]) for m in METRICS), ece,
                     f"{e.params:,}" if e.params else "-"])
        classes.append("")
        if e.ref_stats is not None:
            r = e.ref_stats
            rows.append(["&nbsp;&nbsp;diameter baseline, same nodules", "logistic regression on diameter",
                         escape(",".join(map(str, e.folds))), f"{r['n']} / {r['scans']}",
                         *(H.ci_cell(r["ci"][m]) for m in METRICS), H.pct(r["calibration"]["ece"]), "2"])
            classes.append("ref")
    note = ("<p class=note>Percent, pooled over the test folds; brackets: 95 % bootstrap CI over scans "
            "(whole scans resampled with their nodules). Threshold 0.5 (section 3.5). The majority vote's "
            "score for AUC is the vote share.</p>")
    return H.table(headers, rows, "table-models", left=3, row_classes=classes) + note


def _paired_section(entries: list[Entry]) -> str:
    rows = [[escape(e.name), *(H.diff_cell(e.stats["vs_reference"][m]) for m in METRICS)]
            for e in entries if "vs_reference" in e.stats]
    if not rows:
        return "<p>No paired comparison: the runs' dataset files were not found (pass --data).</p>"
    note = ("<p class=note>Model minus diameter baseline in percentage points on the same nodules; paired "
            "bootstrap over scans, 95 % CI and two-sided p.</p>")
    return H.table(["method", *(f"Δ {n}" for n in METRIC_NAMES.values())], rows, "table-paired") + note


def _cv_section(exp: Experiment) -> str:
    if not exp.cv_dirs:
        return "<p>No cv folder (naslung cv) in this experiment.</p>"
    out = []
    for cv_dir, data in sorted(exp.cv_dirs.items()):
        rows = [[escape(s["method"]), str(s.get("folds", "")),
                 *(f"{H.pct(s.get(f'{m}_mean'))} ± {H.pct(s.get(f'{m}_std'))}" for m in METRICS),
                 f"{s['params']:,}" if s.get("params") else "-"] for s in data.get("summary", [])]
        name = cv_dir.relative_to(exp.root) if cv_dir != exp.root else cv_dir.name
        out.append(f"<h3>{escape(str(name))}: folds {escape(str(data.get('folds')))}</h3>")
        out.append(H.table(["method", "folds", *METRIC_NAMES.values(), "params"], rows,
                           f"table-cv-{len(out)}"))
    return "".join(out) + "<p class=note>Mean ± sample std over test folds, as written by naslung cv.</p>"


def _ablation_section(exp: Experiment) -> str:
    from naslung.train.ablation import TABLE_HEADERS, TABLE_TITLES, table_rows

    if not exp.ablations:
        return "<p>No naslung ablate output (ablation.json) in this experiment.</p>"
    out = []
    for k, (path, data) in enumerate(exp.ablations):
        name = path.parent.relative_to(exp.root) if path.parent != exp.root else path.parent.name
        out.append(f"<h3>{escape(str(name))}: {len(data.get('archs', []))} architectures, folds "
                   f"{escape(','.join(map(str, data.get('folds', []))))}"
                   f"{' (PHANTOM data)' if data.get('phantom') else ''}</h3>")
        for key, title in TABLE_TITLES.items():
            rows = [[escape(c) for c in row] for row in table_rows(data, key)]
            if rows:
                out.append(f"<p>{escape(title)}</p>"
                           + H.table(TABLE_HEADERS, rows, f"table-ablation-{key}-{k}"))
    return "".join(out) + ("<p class=note>Percent, mean ± sample std over architectures x test folds; each "
                           "fold's epoch picked on the inner validation split.</p>")


def _dbi_section(exp: Experiment) -> str:
    rows = []
    for path, records in exp.dbi:
        for r in records:
            cells = [f"{r[k]:.4g}" if isinstance(r.get(k), float) else "-"
                     for k in ("S0", "S1", "M01", "DBI")]
            rows.append([escape(str(path.parent.relative_to(exp.root))), escape(str(r.get("run"))),
                         escape(str(r.get("loss"))), escape(str(r.get("features"))), *cells])
    if not rows:
        return "<p>No naslung explain output (dbi.json) in this experiment.</p>"
    return H.table(["explain folder", "run", "loss", "features", "S0", "S1", "M01", "DBI"], rows, "table-dbi",
                   left=4) + "<p class=note>Eq. 12-14 on penultimate features; lower DBI is better.</p>"


def _calibration_section(entries: list[Entry], note: str) -> str:
    from naslung.report.figures import reliability_png

    curves = [(e.name, e.stats["calibration"]) for e in entries if e.calibrated][:8]
    if not curves:
        return "<p>No predictions.</p>"
    rows = [[escape(n), str(c["n"]), H.pct(c["ece"], 2)] for n, c in curves]
    return (H.figure(H.png_data_uri(reliability_png(curves, note)), "Reliability diagram", "fig-reliability")
            + H.table(["method", "nodules", "ECE (%)"], rows, "table-calibration"))


def _figures_section(exp: Experiment) -> str:
    if not exp.figures:
        return "<p>No figure files in this experiment.</p>"
    return "".join(H.figure(H.png_data_uri(f.path), f.caption, f"fig-{k}") for k, f in enumerate(exp.figures))


def _protocol_section(exp: Experiment) -> str:
    rows = []
    for r in exp.runs:
        c, split = r.train_config, r.config.get("split") or r.result.get("split") or {}
        rows.append([escape(str(r.path.relative_to(exp.root))), escape(str(r.result.get("spec"))),
                     escape(f"{c.get('loss')} / {c.get('attention')}"), str(r.test_fold),
                     f"{r.result.get('epoch')} of {r.result.get('epochs')}",
                     escape(str(c.get("select_metric"))),
                     f"{split.get('train', '-')} / {split.get('val', '-')} / {split.get('test', '-')}",
                     str(c.get("seed")), "phantom" if r.phantom else "real"])
    protocol = {str(r.config.get("protocol")) for r in exp.runs if r.config.get("protocol")}
    text = "".join(f"<p>{escape(p)}.</p>" for p in sorted(protocol))
    return text + H.table(["run", "architecture", "loss / attention", "test fold", "chosen epoch",
                           "selected by (inner val)", "train / val / test", "seed", "data"], rows,
                          "table-protocol", left=3)


def _provenance_section(exp: Experiment) -> str:
    rows, seen = [], set()
    for r in exp.runs:
        prov, ds = r.config.get("provenance") or {}, r.config.get("dataset") or {}
        key = (ds.get("source"), prov.get("naslung"), prov.get("device"))
        if key in seen:
            continue
        seen.add(key)
        dprov = ds.get("provenance") or {}
        rows.append([escape(str(ds.get("source"))), "phantom" if r.phantom else "real",
                     escape(str(dprov.get("command", "-"))), escape(str(prov.get("naslung"))),
                     escape(str(prov.get("torch"))), escape(str(prov.get("device"))),
                     escape(str(prov.get("date"))), escape(str(prov.get("command")))])
    return H.table(["dataset", "data", "prepared by", "naslung", "torch", "device", "trained", "command"],
                   rows, "table-provenance", left=8)


def build_report(root: str | Path, out: str | Path, data: str | Path | None = None, n_boot: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Write the HTML page for experiment folder ``root`` to ``out`` (atomically); returns a summary."""
    import naslung
    from naslung.atomic import write_text_atomic

    exp = discover(root)
    entries, notes = analyse(exp, data, n_boot, seed)
    phantom = exp.phantom
    note = PHANTOM_NOTE if phantom else ""
    sections = [
        ("models", "Models and ensembles beside the diameter baseline (Tables 1 and 5 analogues)",
         _models_section(entries)),
        ("paired", "Paired comparison against the diameter baseline", _paired_section(entries)),
        ("cv", "Cross-validation summaries", _cv_section(exp)),
        ("ablate", "Ablations of CBAM, A-Softmax and the CBAM order (Tables 2-3 analogues)",
         _ablation_section(exp)),
        ("dbi", "Davies-Bouldin index of the features (Table 4 analogue)", _dbi_section(exp)),
        ("calibration", "Calibration", _calibration_section(entries, note)),
        ("figures", "Figures (Figs. 4-7 analogues)", _figures_section(exp)),
        ("protocol", "Protocol: which folds chose what", _protocol_section(exp)),
        ("provenance", "Provenance", _provenance_section(exp)),
    ]
    if notes:
        sections.append(("notes", "Notes", "".join(f"<p class=note>{escape(n)}</p>" for n in notes)))
    meta = (f"{exp.root.resolve().name}: {len(exp.runs)} runs, {len(exp.cv_dirs)} cv folders; naslung "
            f"{getattr(naslung, '__version__', '?')}, {n_boot} bootstrap replicates (seed {seed}), "
            f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}")
    text = H.page(f"naslung report: {exp.root.resolve().name}", sections, banner=note, meta=meta)
    write_text_atomic(out, text)
    summary = {"out": str(out), "runs": len(exp.runs), "cv_dirs": len(exp.cv_dirs),
               "entries": [e.name for e in entries], "figures": [str(f.path) for f in exp.figures],
               "phantom": phantom, "notes": notes}
    json.dumps(summary)  # the summary is JSON-able (the CLI prints it)
    return summary
