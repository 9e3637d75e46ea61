"""`naslung search`: POP architecture search (``naslung search --data ...``) and ``naslung search select``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import fail, from_alias, pct
from naslung.models.latency import LATENCY_PATHS
from naslung.options import ATTENTIONS, DEVICES, EXECUTORS, LOSSES, METRICS, SEED_MAX, choices
from naslung.outputs import SEARCH, check_folder_output
from naslung.search.config import SearchConfig
from naslung.search.select import DEFAULT_WEIGHT, MIN_AUC, MIN_BALANCED_ACCURACY
from naslung.train.config import RECIPES

app = typer.Typer(
    help="POP architecture search (paper section 3.4). Run `naslung search --data FILE ...`; "
    "`naslung search select` picks ensemble members from a finished search.",
    invoke_without_command=True,
)


def register(root: typer.Typer) -> None:
    """Add the ``search`` command group to the top-level app."""
    root.add_typer(app, name="search")


def _data_note(data: Path) -> str:
    """The plot title's phantom note (:func:`naslung.data.source.title_of_file`)."""
    from naslung.data.source import title_of_file

    return title_of_file(data)


#: Where a search goes when --out is not given.
DEFAULT_OUT = Path("runs/search")
#: SearchConfig's defaults, shown in help texts (never restated as option defaults: unset options are None).
_D = SearchConfig(out=str(DEFAULT_OUT))


def _default(value: Any) -> str:
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    return f"(default {'none' if value is None else value})"


HELP = {
    "budget_trials": f"stop after this many trained candidates {_default(_D.budget_trials)}",
    "budget_minutes": f"stop starting trials after this many minutes {_default(_D.budget_minutes)}",
    "patience": f"stop when the front is unchanged for K trials {_default(_D.patience)}",
    "epochs": f"training epochs per candidate (paper: 10) {_default(_D.train.epochs)}",
    "recipe": f"training recipe of every candidate: {choices(tuple(RECIPES))} (default: the TrainConfig "
              "defaults, as naslung train/cv)",
    "metric": f"inner-validation objective: {choices(METRICS)} {_default(_D.metric)}",
    "latency_budget_ms": f"sample only candidates predicted at or under it {_default(_D.latency_budget_ms)}",
    "attention": f"{choices(ATTENTIONS)} {_default(_D.train.attention)}",
    "loss": f"{choices(LOSSES)} ('none'+'softmax': NAS (base)) {_default(_D.train.loss)}",
    "seed": f"search, trial and inner-split seed {_default(_D.seed)}",
    "exclude_folds": "folds the search never sees, e.g. 1-5, or none "
                     f"{_default(_D.exclude_folds)}: the paper's test folds",
    "executor": f"{choices(EXECUTORS)} (local: sequential; ray: Ray Tune) {_default(_D.executor.name)}",
    "concurrency": "parallel trials (default 2 on ray, 1 locally)",
    "cpus_per_trial": f"{_default(_D.executor.cpus_per_trial)}",
    "gpus_per_trial": f"{_default(_D.executor.gpus_per_trial)}",
    "ray_address": "auto or HOST:PORT (default: a local Ray)",
    "channels": f"channel set of the space (eq. 6) {_default(_D.space.channels)}",
    "min_depth": f"smallest L+M+N {_default(_D.space.depth_range[0])}",
    "max_depth": f"largest L+M+N {_default(_D.space.depth_range[1])}",
    "batch_size": f"{_default(_D.train.batch_size)}",
    "device": f"training device: {choices(DEVICES)} {_default(_D.train.device)}",
    "threads": "torch CPU threads for training (default: torch's)",
    "latency_samples": f"candidates timed to fit the latency model {_default(_D.latency.samples)}",
    "latency_repeats": f"timed runs per latency (median) {_default(_D.latency.repeats)}",
    "latency_threads": f"CPU threads for latency timing {_default(_D.latency.threads)}",
    "latency_device": f"{choices(DEVICES)} {_default(_D.latency.device)}",
    "latency_path": f"what is timed: {choices(LATENCY_PATHS)} (folded: the BN-folded serving path) "
                    f"{_default(_D.latency.path)}",
}


@app.callback()
def search(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None, "--data", help="crop dataset file (naslung data prepare / phantom)"
    ),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="search folder"),
    max_trials: int | None = typer.Option(None, "--max-trials", help=HELP["budget_trials"]),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help=HELP["budget_minutes"]),
    patience: int | None = typer.Option(None, "--patience", help=HELP["patience"]),
    epochs: int | None = typer.Option(None, "--epochs", help=HELP["epochs"]),
    recipe: str | None = typer.Option(None, "--recipe", help=HELP["recipe"]),
    metric: str | None = typer.Option(None, "--metric", help=HELP["metric"]),
    max_latency_ms: float | None = typer.Option(None, "--max-latency-ms", help=HELP["latency_budget_ms"]),
    attention: str | None = typer.Option(None, "--attention", help=HELP["attention"]),
    loss: str | None = typer.Option(None, "--loss", help=HELP["loss"]),
    seed: int | None = typer.Option(None, "--seed", min=0, max=SEED_MAX, help=HELP["seed"]),
    resume: bool = typer.Option(False, "--resume", help="continue the search in --out from trials.jsonl"),
    exclude_folds: str | None = typer.Option(None, "--exclude-folds", help=HELP["exclude_folds"]),
    executor: str | None = typer.Option(None, "--executor", help=HELP["executor"]),
    concurrency: int | None = typer.Option(None, "--concurrency", help=HELP["concurrency"]),
    cpus_per_trial: float | None = typer.Option(None, "--cpus-per-trial", help=HELP["cpus_per_trial"]),
    gpus_per_trial: float | None = typer.Option(None, "--gpus-per-trial", help=HELP["gpus_per_trial"]),
    ray_address: str | None = typer.Option(None, "--ray-address", help=HELP["ray_address"]),
    channels: str | None = typer.Option(None, "--channels", help=HELP["channels"]),
    min_depth: int | None = typer.Option(None, "--min-depth", help=HELP["min_depth"]),
    max_depth: int | None = typer.Option(None, "--max-depth", help=HELP["max_depth"]),
    batch_size: int | None = typer.Option(None, "--batch-size", help=HELP["batch_size"]),
    device: str | None = typer.Option(None, "--device", help=HELP["device"]),
    threads: int | None = typer.Option(None, "--threads", help=HELP["threads"]),
    latency_samples: int | None = typer.Option(None, "--latency-samples", help=HELP["latency_samples"]),
    latency_repeats: int | None = typer.Option(None, "--latency-repeats", help=HELP["latency_repeats"]),
    latency_threads: int | None = typer.Option(None, "--latency-threads", help=HELP["latency_threads"]),
    latency_device: str | None = typer.Option(None, "--latency-device", help=HELP["latency_device"]),
    latency_path: str | None = typer.Option(None, "--latency-path", help=HELP["latency_path"]),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    # former names (hidden; README, "What changed")
    budget_trials: int | None = typer.Option(None, "--budget-trials", hidden=True),
    budget_minutes: float | None = typer.Option(None, "--budget-minutes", hidden=True),
    latency_budget_ms: float | None = typer.Option(None, "--latency-budget-ms", hidden=True),
) -> None:
    """Search the space of eq. 5-6 with POP; writes trials.jsonl, pareto.json and pareto.png into --out."""
    if ctx.invoked_subcommand is not None:
        return
    if data is None:
        raise typer.BadParameter("a search needs --data (a naslung crop dataset file)", param_hint="--data")
    from naslung.search.space import parse_channels
    from naslung.train.splits import parse_folds

    try:
        config = SearchConfig.resolve(
            recipe=recipe,
            out=str(out),
            data=str(data),
            budget_trials=from_alias(max_trials, budget_trials, "--max-trials", "--budget-trials"),
            budget_minutes=from_alias(max_minutes, budget_minutes, "--max-minutes", "--budget-minutes"),
            patience=patience,
            latency_budget_ms=from_alias(max_latency_ms, latency_budget_ms, "--max-latency-ms",
                                         "--latency-budget-ms"),
            metric=metric,
            seed=seed,
            exclude_folds=None if exclude_folds is None else parse_folds(exclude_folds, allow_empty=True),
            epochs=epochs,
            attention=attention,
            loss=loss,
            batch_size=batch_size,
            device=device,
            num_threads=threads,
            executor=executor,
            concurrency=concurrency,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            ray_address=ray_address,
            channels=None if channels is None else parse_channels(channels),
            min_depth=min_depth,
            max_depth=max_depth,
            latency_samples=latency_samples,
            latency_repeats=latency_repeats,
            latency_threads=latency_threads,
            latency_device=latency_device,
            latency_path=latency_path,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_folder_output(out, SEARCH, "--out", inputs=[("--data", data)])
    if gpus_per_trial:
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter(f"{gpus_per_trial:g}: no CUDA device is available here, so trials "
                                     f"cannot hold GPUs", param_hint="--gpus-per-trial")
    if resume and not (out / "trials.jsonl").is_file() and not (out / "search_config.json").is_file():
        fail(f"--resume: nothing to resume in {out} (no trials.jsonl or search_config.json); run without "
             f"--resume to start a new search")
    note = _data_note(data)
    try:
        result = _run_with_progress(config, resume, quiet=as_json, note=note)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(exc)
        return
    summary = {**result.summary, "latency_model": result.latency_model.metrics, "out": str(out), "note": note}
    if as_json:
        from naslung.search.driver import front_records

        typer.echo(
            json.dumps(
                {"summary": summary, "front": front_records(result.state, result.records)},
                indent=2,
                default=str,
            )
        )
    else:
        _print_summary(result, summary)


def _run_with_progress(config: SearchConfig, resume: bool, quiet: bool, note: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from naslung.search.runner import run_search

    console = Console(stderr=True, quiet=quiet)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    task = bar.add_task("POP search", total=config.budget_trials, info="")
    started = False

    def show() -> None:
        # The bar appears with the first news, so that a set-up error prints its one line alone.
        nonlocal started
        if not started:
            bar.start()
            started = True

    def on_status(msg: str) -> None:
        show()
        bar.update(task, info=msg)

    def on_record(r: dict[str, Any]) -> None:
        show()
        score = "failed" if r["score"] is None else f"{r['metric']} {pct(r['score'])}"
        bar.update(
            task,
            completed=r["trial"] + 1,
            info=f"{r['spec']} {score}  pruned {r['pruned']:,}  left {r['remaining']:,}",
        )

    try:
        return run_search(config, resume=resume, on_record=on_record, on_status=on_status, plot_note=note)
    finally:
        if started:
            bar.stop()


def _print_summary(result: Any, summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from naslung.search.driver import front_records

    console = Console()
    s = summary
    lm = s["latency_model"]
    counts = Table(title=f"POP search ({s['stop_reason'] or 'stopped'})", show_header=False)
    for label, value in (
        ("space", f"{s['space']:,}"),
        ("trained", f"{s['trained']} ({s['new_trials']} this run)"),
        ("failed", str(s["failed"])),
        ("pruned", f"{s['pruned']:,} ({100 * s['pruned_fraction']:.1f}%)"),
        ("remaining", f"{s['remaining']:,}"),
        ("out of latency budget", f"{s['out_of_budget']:,}"),
        ("front", str(s["front"])),
        ("time", f"{s['seconds']:.0f} s"),
        (
            "latency model",
            f"MAPE {100 * lm.get('mape', math.nan):.1f}%, R2 {lm.get('r2', math.nan):.2f} "
            f"(held-out n={lm.get('n', 0)}); on the trained: MAPE {pct(s['latency_mape_trained'])}%",
        ),
        ("output", s["out"]),
    ):
        counts.add_row(label, value)
    console.print(counts)
    front = Table(
        title="Pareto front (inner validation; measured latency)" + (f" - {s['note']}" if s["note"] else "")
    )
    for col in ("spec", "score %", "latency ms", "params", "MMACs"):
        front.add_column(col)
    for r in front_records(result.state, result.records):
        front.add_row(
            r["spec"],
            pct(r["score"]),
            f"{r['latency_ms']:.2f}",
            f"{r['params']:,}",
            f"{r['macs'] / 1e6:.1f}",
        )
    console.print(front)


@app.command("select")
def select(
    out: Path = typer.Option(..., "--out", help="a finished search folder"),
    top: int = typer.Option(9, "--top", help="members to pick (the paper's ensemble has 9)"),
    weight: float = typer.Option(DEFAULT_WEIGHT, "--weight", help="latency weight w in score - w*ln(ms)"),
    epochs: int | None = typer.Option(None, "--epochs", help="final training epochs written into each member "
                                      "(default: the search's per-candidate epochs)"),
    min_auc: float = typer.Option(MIN_AUC, "--min-auc", help="drop trials whose inner-validation AUC is "
                                  "under it (0.5: chance; 0 turns the floor off)"),
    min_balanced_accuracy: float = typer.Option(
        MIN_BALANCED_ACCURACY, "--min-balanced-accuracy",
        help="drop trials whose inner-validation (sensitivity + specificity) / 2 is under it (0.5: the "
             "majority class; 0 turns the floor off)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (the chosen members; notes on stderr)"),
) -> None:
    """Pick ensemble members: drop trials at the class prior (--min-auc, --min-balanced-accuracy), then the
    Pareto front of the rest by score, then score - w*ln(latency), scores inside the 95% bootstrap interval
    of a better one tied (fewer parameters first); writes OUT/members.json."""
    from naslung.search.members import write_members
    from naslung.search.select import check_selected, selection_from_dir

    if epochs is not None and epochs < 1:
        raise typer.BadParameter(f"must be >= 1, got {epochs}", param_hint="--epochs")
    try:
        selection = selection_from_dir(out, top, weight, min_auc, min_balanced_accuracy)
        for line in selection.messages():
            typer.echo(line, err=True)
        check_selected(selection)
        chosen = selection.chosen
        members_path = write_members(out, chosen, top=top, weight=weight, epochs=epochs,
                                     selection=selection.to_dict())
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(chosen, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Selected members ({len(chosen)} of --top {top}; inner-validation numbers; floor "
                        f"{selection.floor_text()})")
    for col in ("rank", "spec", "score %", "95% interval", "AUC %", "bal. acc %", "latency ms", "params",
                "front", "tier"):
        table.add_column(col)
    for r in chosen:
        interval = "-" if r["score_ci"] is None else f"{pct(r['score_lo'])}-{pct(r['score_hi'])}"
        table.add_row(
            str(r["rank"]),
            r["spec"],
            pct(r["score"]),
            interval,
            pct(r["auc"]),
            pct(r["balanced_accuracy"]),
            f"{r['latency_ms']:.2f}",
            "-" if r["params"] is None else f"{r['params']:,}",
            "yes" if r["on_front"] else "",
            str(r["tier"]),
        )
    Console().print(table)
    typer.echo("tier: members of one tier score inside the 95% bootstrap interval of its best; they are "
               "ordered by fewer parameters, then lower latency")
    typer.echo(f"members file: {members_path}  (train them: naslung cv --members {members_path} --data ...)")
