"""`naslung train | cv | evaluate | ensemble | ensemble-size`: thin commands over naslung.train/ensemble."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import check_threads, fail, pct

LOSS_HELP = "asoftmax (angular head) or softmax (linear head)"
ATTENTION_HELP = "cbam, cbam-spatial-first or none"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("train")(train)
    app.command("cv")(cv)
    app.command("evaluate")(evaluate)
    app.command("ensemble")(ensemble)
    app.command("ensemble-size")(ensemble_size)


def _config(arch: str, epochs: int, batch: int, loss: str, attention: str, seed: int, device: str,
            val_fraction: float, select: str, lr: float, threads: int | None, max_shift: int,
            channels_last: bool) -> Any:
    from naslung.train.config import TrainConfig

    check_threads(threads)
    try:
        return TrainConfig(arch=arch, epochs=epochs, batch_size=batch, loss=loss, attention=attention,
                           seed=seed, device=device, val_fraction=val_fraction, select_metric=select, lr=lr,
                           num_threads=threads, max_shift=None if max_shift < 0 else max_shift,
                           channels_last=channels_last)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _slug(config: Any) -> str:
    arch = re.sub(r"[^0-9]+", "-", config.arch).strip("-")
    return f"{arch}_{config.loss}_{config.attention}_s{config.seed}"


def _load(data: Path) -> Any:
    """The dataset in memory, remembering its file's content fingerprint (recorded in every run)."""
    from naslung.fingerprint import load_dataset

    try:
        return load_dataset(data)
    except (FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from exc




def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------------------------------------- train
def train(
    data: Path = typer.Option(..., "--data", help="crop dataset file (naslung data prepare)"),
    arch: str = typer.Option("[4,4,[4,4],[4,8],[8,8]]", "--arch", help="architecture, paper notation"),
    fold: int | None = typer.Option(None, "--fold", help="test fold (LUNA16 subset); omit for no test fold"),
    epochs: int = typer.Option(50, "--epochs"),
    batch: int = typer.Option(32, "--batch"),
    loss: str = typer.Option("asoftmax", "--loss", help=LOSS_HELP),
    attention: str = typer.Option("cbam", "--attention", help=ATTENTION_HELP),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    val_fraction: float = typer.Option(0.15, "--val-fraction", help="inner validation share"),
    select: str = typer.Option("f1", "--select", help="epoch picked by val f1 or accuracy"),
    lr: float = typer.Option(2e-4, "--lr"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    max_shift: int = typer.Option(2, "--max-shift", help="crop shift (paper 2; -1: margin)"),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last"),
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/<arch>_<loss>_.../fold_K)"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run in --out"),
    as_json: bool = typer.Option(False, "--json", help="print result.json instead of a table"),
) -> None:
    """Train one model with the test fold held out; the epoch is chosen on an inner validation split."""
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.engine import fit

    config = _config(arch, epochs, batch, loss, attention, seed, device, val_fraction, select, lr, threads,
                     max_shift, channels_last)
    dataset = _load(data)
    out = out or Path("runs") / _slug(config) / (f"fold_{fold}" if fold is not None else "dev")
    try:
        result = fit(dataset, config, test_fold=fold, out_dir=out, resume=resume, progress=not as_json,
                     source=str(data))
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        _dump(result.to_dict())
        return
    _print_metrics(f"{config.arch}  fold {fold}  epoch {result.epoch}  ({result.params:,} parameters)",
                   {"val (chosen epoch)": result.val_metrics, "test": result.test_metrics})
    typer.echo(f"run folder: {out}")


# ---------------------------------------------------------------------------------------------- cv
def cv(
    data: Path = typer.Option(..., "--data", help="crop dataset file"),
    arch: str = typer.Option("[4,4,[4,4],[4,8],[8,8]]", "--arch"),
    folds: str = typer.Option("1-5", "--folds", help="test folds, e.g. 1-5 or 0,3"),
    epochs: int = typer.Option(50, "--epochs"),
    batch: int = typer.Option(32, "--batch"),
    loss: str = typer.Option("asoftmax", "--loss", help=LOSS_HELP),
    attention: str = typer.Option("cbam", "--attention", help=ATTENTION_HELP),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    val_fraction: float = typer.Option(0.15, "--val-fraction"),
    select: str = typer.Option("f1", "--select"),
    lr: float = typer.Option(2e-4, "--lr"),
    threads: int | None = typer.Option(None, "--threads"),
    max_shift: int = typer.Option(2, "--max-shift", help="crop shift (paper 2; -1: margin)"),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last"),
    out: Path | None = typer.Option(None, "--out", help="cv folder (default runs/cv_<arch>_...)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cross-validate over test folds (resumable: finished folds are skipped), with baselines beside it."""
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.cv import run_cv
    from naslung.train.splits import parse_folds

    config = _config(arch, epochs, batch, loss, attention, seed, device, val_fraction, select, lr, threads,
                     max_shift, channels_last)
    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    dataset = _load(data)
    out = out or Path("runs") / f"cv_{_slug(config)}"
    try:
        result = run_cv(dataset, config, fold_list, out, progress=not as_json, source=str(data))
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        _dump(result.to_dict())
        return
    print_cv_table(result.summary, f"{config.arch}  {config.loss}  {config.attention}  folds {folds}")
    typer.echo(f"cv folder: {out}  ({result.seconds:.0f} s of training)")


def print_cv_table(summary: list[dict[str, Any]], title: str) -> None:
    """Rich table: mean +- std (percent) per method."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "accuracy", "sensitivity", "specificity", "F1", "AUC", "params"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for s in summary:
        cells = [f"{pct(s[f'{k}_mean'])} ± {pct(s[f'{k}_std'])}"
                 for k in ("accuracy", "sensitivity", "specificity", "f1", "auc")]
        table.add_row(s["method"], *cells, f"{s['params']:,}" if s.get("params") else "-")
    Console().print(table)


def _print_metrics(title: str, rows: dict[str, dict[str, Any] | None]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("split", "accuracy", "sensitivity", "specificity", "F1", "AUC", "n"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, m in rows.items():
        if m is None:
            continue
        table.add_row(name, *(pct(m[k]) for k in ("accuracy", "sensitivity", "specificity", "f1", "auc")),
                      str(m["n"]))
    Console().print(table)


# ---------------------------------------------------------------------------------------------- evaluate
def evaluate(
    runs: list[Path] = typer.Argument(..., help="run folders or cv folders"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-fold metrics of finished runs, recomputed from their saved predictions."""
    from naslung.train.evaluate import evaluate_runs

    try:
        records = evaluate_runs(runs)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        _dump(records)
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


# ---------------------------------------------------------------------------------------------- ensembles
def _run_list(runs: list[Path] | None, extra: list[Path] | None) -> list[Path]:
    # `--runs A B C` arrives as --runs A plus the positional B C; both forms are accepted.
    found = [*(runs or []), *(extra or [])]
    if not found:
        raise typer.BadParameter("give at least one run folder", param_hint="--runs")
    return found


def ensemble(
    runs: list[Path] | None = typer.Option(None, "--runs", help="run folders (or cv folders)"),
    extra: list[Path] | None = typer.Argument(None, help="more run folders", show_default=False),
    fold: int | None = typer.Option(None, "--fold", help="test fold (default: every fold of cv folders)"),
    vote: str = typer.Option("majority", "--vote", help="majority (paper, section 3.5) or soft"),
    low_agreement: float = typer.Option(0.75, "--low-agreement", help="list nodules below this agreement"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ensemble saved test predictions: majority vote (> floor(n/2) votes; even-n ties are benign)."""
    from naslung.ensemble.vote import common_folds, ensemble_predict, load_members

    paths = _run_list(runs, extra)
    try:
        folds = [fold] if fold is not None else common_folds(paths)
        if not folds:
            raise ValueError("the cv folders share no finished fold")
        results = [ensemble_predict(load_members(paths, f), vote, low_agreement) for f in folds]
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    if as_json:
        _dump([r.to_dict() for r in results] if fold is None else results[0].to_dict())
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


def ensemble_size(
    runs: list[Path] | None = typer.Option(None, "--runs", help="run folders (or cv folders)"),
    extra: list[Path] | None = typer.Argument(None, help="more run folders", show_default=False),
    fold: int = typer.Option(..., "--fold", help="test fold"),
    sizes: str = typer.Option("1,3,5,7,9", "--sizes", help="ensemble sizes n (n <= number of runs)"),
    repeats: int = typer.Option(10, "--repeats"),
    seed: int = typer.Option(0, "--seed"),
    vote: str = typer.Option("majority", "--vote"),
    plot: Path | None = typer.Option(None, "--plot", help="PNG path (default ensemble_size_fold<K>.png)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fig. 7: random n-model subsets repeated (seeded); mean +- std per metric, plus a PNG plot."""
    from naslung.atomic import write_json_atomic
    from naslung.ensemble.size_study import METRICS, plot_size_study, size_study
    from naslung.ensemble.vote import VOTES, load_members

    paths = _run_list(runs, extra)
    if vote not in VOTES:
        raise typer.BadParameter(f"unknown vote {vote!r}; valid: {', '.join(VOTES)}", param_hint="--vote")
    try:
        ns = [int(s) for s in sizes.split(",") if s.strip()]
        members = load_members(paths, fold)
        rows = size_study(members.probs, members.label, ns, repeats, seed, vote)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
    plot = plot or Path(f"ensemble_size_fold{fold}.png")
    plot_size_study(rows, plot, title=f"fold {fold}, {len(paths)} runs, {repeats} repeats ({vote} vote)")
    write_json_atomic(plot.with_suffix(".json"), {"fold": fold, "runs": members.runs, "vote": vote,
                                                  "seed": seed, "rows": rows})
    if as_json:
        _dump({"fold": fold, "runs": members.runs, "rows": rows, "plot": str(plot)})
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
