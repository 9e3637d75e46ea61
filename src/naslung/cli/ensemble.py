"""`naslung evaluate | ensemble | ensemble-size`: metrics and ensembles of saved test predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from naslung import schemas
from naslung.cli.common import fail, pct
from naslung.cli.train_options import dump_json
from naslung.options import SEED_MAX


def register(app: typer.Typer) -> None:
    """Add the ``evaluate``, ``ensemble`` and ``ensemble-size`` commands to the top-level app."""
    app.command("evaluate")(evaluate)
    app.command("ensemble")(ensemble)
    app.command("ensemble-size")(ensemble_size)


def evaluate(
    runs: list[Path] | None = typer.Argument(None, help="run folders or cv folders (metrics from their saved "
                                                        "predictions)", show_default=False),
    model: str | None = typer.Option(None, "--model", help="with --data: bundled model NAME (naslung models "
                                                           "list), or a run or cv folder"),
    run: Path | None = typer.Option(None, "--run", help="with --data: a run folder or cv folder"),
    data: Path | None = typer.Option(None, "--data", help="re-run the model on this crop dataset (naslung "
                                                          "data prepare) and score it"),
    folds: str | None = typer.Option(None, "--folds", help="with --data: folds to score, e.g. 1-5 (default: "
                                                           "a run's test folds; a bundled model's: all)"),
    out: Path | None = typer.Option(None, "--out", help="with --data: write the metrics JSON here"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    allow_seen_fold: bool = typer.Option(
        False, "--allow-seen-fold", help="score folds the model trained on (refused by default; the JSON "
                                         "notes it)"),
    batch: int = typer.Option(128, "--batch-size", min=1, help="with --data: crops per forward pass"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-fold metrics of finished runs, recomputed from their saved predictions; or, with --data, of a
    model (--model NAME|RUN or --run RUN) re-run on a dataset's folds."""
    if data is not None or model is not None or run is not None:
        _evaluate_on_data(runs, model, run, data, folds, out, overwrite=overwrite,
                          allow_seen_fold=allow_seen_fold, batch=batch, threads=threads, as_json=as_json)
        return
    if not runs:
        raise typer.BadParameter("give run folders, or --model NAME|--run RUN with --data DATASET.h5",
                                 param_hint="RUNS")
    from naslung.train.evaluate import evaluate_runs

    try:
        records = evaluate_runs(runs)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json(records)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="test-fold metrics from saved predictions (%)")
    for col in ("run", "fold", "epoch", "accuracy", "sensitivity", "specificity", "F1", "AUC", "n"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in records:
        m = r["test"] or {}
        table.add_row(r["run"], str(r["test_fold"]), str(r["epoch"]),
                      *(pct(m.get(k)) for k in ("accuracy", "sensitivity", "specificity", "f1", "auc")),
                      str(m.get("n", "-")))
    Console().print(table)


def _evaluate_on_data(runs: list[Path] | None, model: str | None, run: Path | None, data: Path | None,
                      folds: str | None, out: Path | None, *, overwrite: bool, allow_seen_fold: bool,
                      batch: int, threads: int | None, as_json: bool) -> None:
    """``evaluate --model NAME|--run RUN --data DATASET.h5``: :mod:`naslung.serving.evaluate`."""
    from naslung.cli.common import check_threads
    from naslung.outputs import EVALUATION_JSON, check_file_output

    if runs:
        raise typer.BadParameter("give run folders (saved predictions) or --model/--run with --data, not "
                                 "both", param_hint="RUNS")
    if (model is None) == (run is None):
        raise typer.BadParameter("give exactly one of --model NAME and --run RUN", param_hint="--model")
    if data is None:
        raise typer.BadParameter("--model/--run score a model on a dataset: give --data DATASET.h5",
                                 param_hint="--data")
    check_threads(threads)
    fold_list = None
    if folds is not None:
        from naslung.train.splits import parse_folds

        try:
            fold_list = parse_folds(folds)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    target = model if model is not None else str(run)
    if out is not None:
        check_file_output(out, EVALUATION_JSON, "--out", overwrite=overwrite,
                          inputs=[("--data", data), ("--run", run)])
    import torch

    from naslung.atomic import write_json_atomic
    from naslung.serving.evaluate import METRICS, evaluate_on_data

    if threads:
        torch.set_num_threads(threads)
    try:
        result = evaluate_on_data(target, data, fold_list, allow_seen_fold=allow_seen_fold, batch=batch)
        if out is not None:
            write_json_atomic(out, result)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json(result)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
    titles = {"accuracy": "accuracy", "f1": "F1", "auc": "AUC", "sensitivity": "sensitivity",
              "specificity": "specificity"}
    table = Table(title=f"{escape(str(target))} on {escape(str(data))} ({result['method']}, %)")
    for col in ("fold", *(titles[k] for k in METRICS), "n"):
        table.add_column(col, justify="right")
    rows = [(str(r["fold"]), r["metrics"]) for r in result["per_fold"]]
    if len(rows) > 1:
        rows.append(("pooled", result["pooled"]["metrics"]))
    for label, m in rows:
        table.add_row(label, *(pct(m.get(k)) for k in METRICS), str(m.get("n", "-")))
    console.print(table)
    if out is not None:
        typer.echo(f"metrics: {out}")


def _run_list(runs: list[Path] | None, extra: list[Path] | None) -> list[Path]:
    # `--runs A B C` arrives as --runs A plus the positional B C; both forms are accepted.
    found = [*(runs or []), *(extra or [])]
    if not found:
        raise typer.BadParameter("give at least one run folder", param_hint="--runs")
    return found


def _member_runs(members_file: Path, cv_dir: Path | None) -> tuple[list[Path], Any]:
    """The cv folders that ``cv --members`` wrote for the members of ``members_file``."""
    from naslung.search.members import read_members

    try:
        members = read_members(members_file)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--members") from exc
    root = cv_dir or members.path.parent / "members_cv"
    return [root / m.name for m in members.members], members


def ensemble(
    runs: list[Path] | None = typer.Option(None, "--runs", help="run folders (or cv folders)"),
    extra: list[Path] | None = typer.Argument(None, help="more run folders", show_default=False),
    members_file: Path | None = typer.Option(None, "--members", help="ensemble the members of a members.json "
                                             "(their `cv --members` folders)"),
    cv_dir: Path | None = typer.Option(None, "--cv-dir", help="where `cv --members` wrote (default "
                                       "<search>/members_cv)"),
    fold: int | None = typer.Option(None, "--fold", help="test fold (default: every fold of cv folders)"),
    vote: str = typer.Option("majority", "--vote", help="majority (paper, section 3.5) or soft"),
    low_agreement: float = typer.Option(0.75, "--low-agreement", help="list nodules below this agreement"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ensemble saved test predictions: majority vote (> floor(n/2) votes; even-n ties are benign)."""
    from naslung.ensemble.vote import common_folds, ensemble_predict, load_members
    from naslung.protocol import check_test_fold_unseen

    members = None
    if members_file is not None:
        if runs or extra:
            raise typer.BadParameter("give either --members or run folders, not both", param_hint="--members")
        paths, members = _member_runs(members_file, cv_dir)
    else:
        paths = _run_list(runs, extra)
    try:
        folds = [fold] if fold is not None else common_folds(paths)
        if not folds:
            raise ValueError("the cv folders share no finished fold")
        for f in folds if members is not None else []:
            check_test_fold_unseen(f, members.exclude_folds, where=f"search {members.search}")
        results = [ensemble_predict(load_members(paths, f), vote, low_agreement) for f in folds]
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        dump_json([r.to_dict() for r in results] if fold is None else results[0].to_dict())
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        table = Table(title=f"fold {r.fold}: ensemble of {len(r.runs)} (%), mean agreement "
                            f"{100 * r.mean_agreement:.1f}, {len(r.low_agreement)} low-agreement nodules")
        for col in ("", "accuracy", "sensitivity", "specificity", "F1", "AUC"):
            table.add_column(col, justify="left" if not col else "right")
        keys = ("accuracy", "sensitivity", "specificity", "f1", "auc")
        mark = {vote: " *"}
        table.add_row("majority vote" + mark.get("majority", ""), *(pct(r.majority[k]) for k in keys))
        table.add_row("soft vote" + mark.get("soft", ""), *(pct(r.soft[k]) for k in keys))
        for m in r.members:
            table.add_row(f"  {m['run']}", *(pct(m[k]) for k in keys))
        console.print(table)
        for low in r.low_agreement:
            console.print(f"  low agreement {low['agreement']:.2f}: {low['nodule_id']} label {low['label']} "
                          f"votes {low['malignant_votes']}/{len(r.runs)} mean p {low['mean_prob']:.2f}")
    if len(results) > 1:
        console.print(_summary_table(results, paths))


def _summary_table(results: list[Any], cv_dirs: list[Path]) -> Any:
    """Mean +- sample std over the folds of every method: the votes, each member (by cv folder) and, when
    the cv folders hold them, the diameter baseline of the first one (all members share the split seed)."""
    import math

    from rich.table import Table

    from naslung.atomic import read_json
    from naslung.train.cv import SUMMARY_METRICS, summarize
    from naslung.train.rundir import CVDir

    rows: dict[str, list[dict[str, Any]]] = {"majority vote": [r.majority for r in results],
                                             "soft vote": [r.soft for r in results]}
    for r in results:
        for m in r.members:
            rows.setdefault(f"  {Path(m['run']).parent.name}", []).append(m)
    baselines = [CVDir(cv_dirs[0]).run(r.fold).baselines for r in results]
    if all(b.is_file() for b in baselines):
        rows["diameter baseline"] = [read_json(b, "baselines of a cv fold")["diameter"]["test_metrics"]
                                     for b in baselines]
    table = Table(title=f"folds {', '.join(str(r.fold) for r in results)}: mean ± sample std over folds (%)")
    for col in ("", "accuracy", "sensitivity", "specificity", "F1", "AUC"):
        table.add_column(col, justify="left" if not col else "right")
    for name, metrics in rows.items():
        summary = summarize([{k: m.get(k) for k in SUMMARY_METRICS} for m in metrics], name)
        cells = []
        for k in SUMMARY_METRICS:
            mean, std = summary[f"{k}_mean"], summary[f"{k}_std"]
            cells.append("-" if math.isnan(mean) else
                         f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}"))
        table.add_row(name, *cells)
    return table


def ensemble_size(
    runs: list[Path] | None = typer.Option(None, "--runs", help="run folders (or cv folders)"),
    extra: list[Path] | None = typer.Argument(None, help="more run folders", show_default=False),
    fold: int = typer.Option(..., "--fold", help="test fold"),
    sizes: str = typer.Option("1,3,5,7,9", "--sizes", help="ensemble sizes n (n <= number of runs)"),
    repeats: int = typer.Option(10, "--repeats"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    vote: str = typer.Option("majority", "--vote"),
    plot: Path | None = typer.Option(None, "--plot", help="PNG path (default ensemble_size_fold<K>.png); "
                                     "its study is written beside it as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing plot and its JSON"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fig. 7: random n-model subsets repeated (seeded); mean +- std per metric, plus a PNG plot."""
    from naslung.atomic import write_json_atomic
    from naslung.ensemble.size_study import METRICS, plot_size_study, size_study
    from naslung.ensemble.vote import VOTES, load_members
    from naslung.outputs import ENSEMBLE_SIZE_JSON, PNG, check_file_output

    paths = _run_list(runs, extra)
    if vote not in VOTES:
        raise typer.BadParameter(f"unknown vote {vote!r}; valid: {', '.join(VOTES)}", param_hint="--vote")
    plot = plot or Path(f"ensemble_size_fold{fold}.png")
    inputs = [("--runs", p) for p in paths]
    check_file_output(plot, PNG, "--plot", overwrite=overwrite, inputs=inputs)
    check_file_output(plot.with_suffix(".json"), ENSEMBLE_SIZE_JSON, "--plot", overwrite=overwrite,
                      inputs=inputs)
    try:
        ns = [int(s) for s in sizes.split(",") if s.strip()]
        members = load_members(paths, fold)
        rows = size_study(members.probs, members.label, ns, repeats, seed, vote)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    plot_size_study(rows, plot, title=f"fold {fold}, {len(paths)} runs, {repeats} repeats ({vote} vote)")
    write_json_atomic(plot.with_suffix(".json"), {"schema": schemas.ENSEMBLE_SIZE, "fold": fold,
                                                  "runs": members.runs, "vote": vote, "seed": seed,
                                                  "rows": rows})
    if as_json:
        dump_json({"fold": fold, "runs": members.runs, "rows": rows, "plot": str(plot)})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ensemble size study, fold {fold} ({vote} vote, {repeats} repeats, %)")
    table.add_column("n", justify="right")
    for key in METRICS:
        table.add_column(key, justify="right")
    for r in rows:
        table.add_row(str(r["n"]), *(f"{pct(r[f'{k}_mean'])} ± {pct(r[f'{k}_std'])}" for k in METRICS))
    Console().print(table)
    typer.echo(f"plot: {plot}")
