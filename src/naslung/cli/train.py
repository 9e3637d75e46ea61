"""`naslung train | cv | evaluate | ensemble | ensemble-size`: thin commands over naslung.train/ensemble."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import check_threads, fail, pct
from naslung.cli.progress import progress_bar
from naslung.train.config import BUDGETS, TrainConfig
from naslung.train.rundir import CVDir

LOSS_HELP = "asoftmax (angular head) or softmax (linear head)"
ATTENTION_HELP = "cbam, cbam-spatial-first or none"
BUDGET_HELP = "epoch budget: " + "; ".join(
    f"{k}: " + (", ".join(f"{f} {v}" for f, v in fields.items()) or "the defaults")
    for k, fields in BUDGETS.items())
MEMBERS_HELP = "members.json of `naslung search select`: cross-validate each member with its search settings"
CV_OUT_HELP = "cv folder (default runs/cv_<arch>_...; with --members <search>/members_cv/<member>)"
RECIPE_HELP = "naslung (the defaults: cosine lr, CT augmentation, EMA, TTA) or paper (section 4.1.3)"
SET_HELP = "any TrainConfig field as FIELD=VALUE (repeatable), e.g. --set ema_decay=0.99 --set tta=false"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("train")(train)
    app.command("cv")(cv)
    app.command("evaluate")(evaluate)
    app.command("ensemble")(ensemble)
    app.command("ensemble-size")(ensemble_size)


#: TrainConfig's defaults, shown in help texts (never restated as option defaults).
_D = TrainConfig()
HELP = {
    "arch": f"architecture, paper notation (default {_D.arch})",
    "epochs": f"planned epochs (default {_D.epochs})",
    "batch": f"(default {_D.batch_size})",
    "loss": f"{LOSS_HELP} (default {_D.loss})",
    "attention": f"{ATTENTION_HELP} (default {_D.attention})",
    "seed": f"init/shuffle/augmentation seed (default {_D.seed})",
    "split_seed": f"inner validation split seed (default {_D.split_seed})",
    "device": f"auto, cpu or cuda (default {_D.device})",
    "val_fraction": f"inner validation share (default {_D.val_fraction})",
    "select": f"epoch picked by val f1 or accuracy (default {_D.select_metric})",
    "lr": f"peak learning rate (default {_D.lr})",
    "max_shift": f"crop shift, -1: anywhere in the margin (default {_D.max_shift})",
    "config": "TrainConfig JSON (or a run's config.json)",
}


def _config(*, config_file: Path | None = None, budget: str | None = None, recipe: str | None = None,
            sets: list[str] | None = None,
            max_shift: int | None = None, threads: int | None = None, **given: Any) -> TrainConfig:
    """The run's TrainConfig: ``--config`` file, then ``--budget``, then the options given, then ``--set``.

    Options the user did not give are None and keep :class:`TrainConfig`'s default.
    """
    check_threads(threads)
    base: dict[str, Any] = {}
    if config_file is not None:
        base = _read_config_file(config_file)
    given["num_threads"] = threads
    if max_shift is not None:
        given["max_shift"] = None if max_shift < 0 else max_shift
    try:
        config = TrainConfig.resolve(base, budget, recipe, **given)
        return config.replace(**_parse_sets(sets)) if sets else config
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def _read_config_file(path: Path) -> dict[str, Any]:
    """A TrainConfig as JSON: the object itself, or a run's ``config.json`` (its ``config`` entry)."""
    from naslung.atomic import read_json

    try:
        data = read_json(path, "training config")
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: not a JSON object of TrainConfig fields", param_hint="--config")
    return data


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    """``["ema_decay=0.99", "rot90=true"]`` -> ``{"ema_decay": 0.99, "rot90": True}`` (values as JSON)."""
    from dataclasses import fields

    known = {f.name for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(f"--set {item!r}: use FIELD=VALUE with a TrainConfig field "
                             f"({', '.join(sorted(known))})")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw  # a bare string such as cosine
    return out


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
    arch: str | None = typer.Option(None, "--arch", help=HELP["arch"]),
    fold: int | None = typer.Option(None, "--fold", help="test fold (LUNA16 subset); omit for no test fold"),
    budget: str | None = typer.Option(None, "--budget", help=BUDGET_HELP),
    recipe: str | None = typer.Option(None, "--recipe", help=RECIPE_HELP),
    epochs: int | None = typer.Option(None, "--epochs", help=HELP["epochs"]),
    batch: int | None = typer.Option(None, "--batch", help=HELP["batch"]),
    loss: str | None = typer.Option(None, "--loss", help=HELP["loss"]),
    attention: str | None = typer.Option(None, "--attention", help=HELP["attention"]),
    seed: int | None = typer.Option(None, "--seed", help=HELP["seed"]),
    split_seed: int | None = typer.Option(None, "--split-seed", help=HELP["split_seed"]),
    device: str | None = typer.Option(None, "--device", help=HELP["device"]),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help=HELP["val_fraction"]),
    select: str | None = typer.Option(None, "--select", help=HELP["select"]),
    lr: float | None = typer.Option(None, "--lr", help=HELP["lr"]),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads"),
    max_shift: int | None = typer.Option(None, "--max-shift", help=HELP["max_shift"]),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="3-D only"),
    config_file: Path | None = typer.Option(None, "--config", help=HELP["config"]),
    sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help="run folder (default runs/<arch>_<loss>_.../fold_K)"),
    resume: bool = typer.Option(False, "--resume", help="continue a killed run in --out"),
    as_json: bool = typer.Option(False, "--json", help="print result.json instead of a table"),
) -> None:
    """Train one model with the test fold held out; the epoch is chosen on an inner validation split."""
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.engine import fit

    config = _config(config_file=config_file, budget=budget, recipe=recipe, sets=sets, max_shift=max_shift,
                     threads=threads,
                     arch=arch, epochs=epochs, batch_size=batch, loss=loss, attention=attention, seed=seed,
                     split_seed=split_seed, device=device, val_fraction=val_fraction, select_metric=select,
                     lr=lr, channels_last=channels_last)
    dataset = _load(data)
    if out is None:
        base = Path("runs") / _slug(config)
        out = CVDir(base).run(fold).path if fold is not None else base / "dev"
    try:
        result = fit(dataset, config, test_fold=fold, out_dir=out, resume=resume,
                     progress=progress_bar(as_json), source=str(data))
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
    arch: str | None = typer.Option(None, "--arch", help=HELP["arch"]),
    members_file: Path | None = typer.Option(None, "--members", help=MEMBERS_HELP),
    folds: str = typer.Option("1-5", "--folds", help="test folds, e.g. 1-5 or 0,3"),
    budget: str | None = typer.Option(None, "--budget", help=BUDGET_HELP),
    recipe: str | None = typer.Option(None, "--recipe", help=RECIPE_HELP),
    epochs: int | None = typer.Option(None, "--epochs", help=HELP["epochs"]),
    batch: int | None = typer.Option(None, "--batch", help=HELP["batch"]),
    loss: str | None = typer.Option(None, "--loss", help=HELP["loss"]),
    attention: str | None = typer.Option(None, "--attention", help=HELP["attention"]),
    seed: int | None = typer.Option(None, "--seed", help=HELP["seed"]),
    split_seed: int | None = typer.Option(None, "--split-seed", help=HELP["split_seed"]),
    device: str | None = typer.Option(None, "--device", help=HELP["device"]),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help=HELP["val_fraction"]),
    select: str | None = typer.Option(None, "--select", help=HELP["select"]),
    lr: float | None = typer.Option(None, "--lr", help=HELP["lr"]),
    threads: int | None = typer.Option(None, "--threads"),
    max_shift: int | None = typer.Option(None, "--max-shift", help=HELP["max_shift"]),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last", help="3-D only"),
    config_file: Path | None = typer.Option(None, "--config", help=HELP["config"]),
    sets: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    out: Path | None = typer.Option(None, "--out", help=CV_OUT_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cross-validate over test folds (resumable: finished folds are skipped), with baselines beside it."""
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.cv import run_cv
    from naslung.train.splits import parse_folds

    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--folds") from exc
    if members_file is not None:
        others = [arch, batch, loss, attention, seed, split_seed, val_fraction, select, lr, max_shift,
                  channels_last, config_file, sets, recipe]
        _cv_members(data, members_file, fold_list, out, as_json, budget=budget, epochs=epochs,
                    threads=threads, device=device, others=others)
        return
    config = _config(config_file=config_file, budget=budget, recipe=recipe, sets=sets, max_shift=max_shift,
                     threads=threads,
                     arch=arch, epochs=epochs, batch_size=batch, loss=loss, attention=attention, seed=seed,
                     split_seed=split_seed, device=device, val_fraction=val_fraction, select_metric=select,
                     lr=lr, channels_last=channels_last)
    dataset = _load(data)
    out = out or Path("runs") / f"cv_{_slug(config)}"
    try:
        result = run_cv(dataset, config, fold_list, out, progress=progress_bar(as_json), source=str(data))
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        _dump(result.to_dict())
        return
    print_cv_table(result.summary, f"{config.arch}  {config.loss}  {config.attention}  folds {folds}")
    typer.echo(f"cv folder: {out}  ({result.seconds:.0f} s of training)")


def _cv_members(data: Path, members_file: Path, folds: list[int], out: Path | None, as_json: bool, *,
                budget: str | None, epochs: int | None, threads: int | None, device: str | None,
                others: list[Any]) -> None:
    """``cv --members``: each member's own TrainConfig; only the budget, threads and device may change."""
    from naslung.search.members import read_members
    from naslung.train.checkpoint import CheckpointError
    from naslung.train.cv import run_members_cv

    if any(v not in (None, []) for v in others):
        raise typer.BadParameter("with --members each member trains with the search's settings; only "
                                 "--budget, --epochs, --threads and --device may be given",
                                 param_hint="--members")
    check_threads(threads)
    try:
        members = read_members(members_file)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--members") from exc
    dataset = _load(data)
    out = out or members.path.parent / "members_cv"
    try:
        results = run_members_cv(dataset, members, folds, out, budget=budget, epochs=epochs, threads=threads,
                                 device=device, progress=progress_bar(as_json), source=str(data))
    except (CheckpointError, FileExistsError, ValueError) as exc:
        fail(exc)
    if as_json:
        _dump({name: r.to_dict() for name, r in results.items()})
        return
    for name, result in results.items():
        print_cv_table(result.summary, f"{name}  folds {folds}")
    typer.echo(f"member cv folders: {out}/<member>  "
               f"(ensemble them: naslung ensemble --members {members.path})")


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
