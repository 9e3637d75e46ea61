"""`naslung search`: POP architecture search (``naslung search --data ...``) and ``naslung search select``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from naslung.cli.common import fail, pct
from naslung.search.select import DEFAULT_WEIGHT

app = typer.Typer(
    help="POP architecture search (paper section 3.4). Run `naslung search --data FILE ...`; "
    "`naslung search select` picks ensemble members from a finished search.",
    invoke_without_command=True,
)


def register(root: typer.Typer) -> None:
    """Add the ``search`` command group to the top-level app."""
    root.add_typer(app, name="search")




def _data_note(data: Path) -> str:
    """``"phantom data"`` when the dataset was rendered by the LIDC phantom (its numbers are not LIDC's)."""
    from naslung.explain.provenance import is_phantom

    try:
        from naslung.data.dataset import read_attrs

        prov = read_attrs(data).get("provenance") or {}
    except (OSError, ValueError):
        return ""
    # The provenance's "phantom" entry, not the word: real LUNA16 datasets carry "phantom": null.
    return "phantom data (not LIDC accuracy)" if is_phantom(prov) else ""


@app.callback()
def search(
    ctx: typer.Context,
    data: Path | None = typer.Option(
        None, "--data", help="crop dataset file (naslung data prepare / phantom)"
    ),
    out: Path = typer.Option(Path("runs/search"), "--out", help="search folder"),
    budget_trials: int | None = typer.Option(
        50, "--budget-trials", help="stop after this many trials in total"
    ),
    budget_minutes: float | None = typer.Option(
        None, "--budget-minutes", help="stop starting trials after this many minutes"
    ),
    patience: int | None = typer.Option(
        None, "--patience", help="stop when the front is unchanged for K trials"
    ),
    epochs: int = typer.Option(10, "--epochs", help="training epochs per candidate (paper: 10)"),
    metric: str = typer.Option("accuracy", "--metric", help="inner-validation objective: accuracy or f1"),
    latency_budget_ms: float | None = typer.Option(
        None, "--latency-budget-ms", help="sample only candidates predicted at or under it"
    ),
    attention: str = typer.Option("cbam", "--attention", help="cbam, cbam-spatial-first or none"),
    loss: str = typer.Option("asoftmax", "--loss", help="asoftmax or softmax ('none'+'softmax': NAS (base))"),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="continue the search in --out from trials.jsonl"),
    exclude_folds: str = typer.Option(
        "1-5", "--exclude-folds", help="folds the search never sees (default: the paper's test folds)"
    ),
    executor: str = typer.Option("local", "--executor", help="local (sequential) or ray (Ray Tune)"),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help="parallel trials (ray only; default 2)"
    ),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="auto or HOST:PORT (default: local Ray)"
    ),
    channels: str = typer.Option("4,8,16,32,64,128", "--channels", help="channel set of the space (eq. 6)"),
    min_depth: int = typer.Option(3, "--min-depth", help="smallest L+M+N"),
    max_depth: int = typer.Option(9, "--max-depth", help="largest L+M+N"),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="training device: auto, cpu or cuda"),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads for training"),
    latency_samples: int = typer.Option(
        40, "--latency-samples", help="candidates timed to fit the latency model"
    ),
    latency_repeats: int = typer.Option(10, "--latency-repeats", help="timed runs per latency (median)"),
    latency_threads: int = typer.Option(1, "--latency-threads", help="CPU threads for latency timing"),
    latency_device: str = typer.Option("cpu", "--latency-device", help="cpu, cuda or auto"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Search the space of eq. 5-6 with POP; writes trials.jsonl, pareto.json and pareto.png into --out."""
    if ctx.invoked_subcommand is not None:
        return
    if data is None:
        raise typer.BadParameter("a search needs --data (a naslung crop dataset file)", param_hint="--data")
    from naslung.search.objective import parse_folds
    from naslung.search.runner import SearchConfig
    from naslung.search.space import parse_channels

    try:
        config = SearchConfig(
            out=str(out),
            data=str(data),
            budget_trials=budget_trials,
            budget_minutes=budget_minutes,
            patience=patience,
            epochs=epochs,
            metric=metric,
            latency_budget_ms=latency_budget_ms,
            attention=attention,
            loss=loss,
            seed=seed,
            exclude_folds=parse_folds(exclude_folds),
            executor=executor,
            concurrency=concurrency or (2 if executor == "ray" else 1),
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            ray_address=ray_address,
            channels=parse_channels(channels),
            depth_range=(min_depth, max_depth),
            batch_size=batch_size,
            device=device,
            num_threads=threads,
            latency_samples=latency_samples,
            latency_repeats=latency_repeats,
            latency_threads=latency_threads,
            latency_device=latency_device,
        )
        _check_train_options(attention, loss)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    note = _data_note(data)
    try:
        result = _run_with_progress(config, resume, quiet=as_json, note=note)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(exc)
        return
    summary = {**result.summary, "latency_model": result.latency_model.metrics, "out": str(out), "note": note}
    if as_json:
        from naslung.search.runner import front_records

        typer.echo(
            json.dumps(
                {"summary": summary, "front": front_records(result.state, result.records)},
                indent=2,
                default=str,
            )
        )
    else:
        _print_summary(result, summary)


def _check_train_options(attention: str, loss: str) -> None:
    from naslung.train.config import ATTENTIONS, LOSSES

    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTIONS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")


def _run_with_progress(config: Any, resume: bool, quiet: bool, note: str) -> Any:
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

    from naslung.search.runner import front_records

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
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Pick ensemble members (Pareto front by score, then score - w*ln(latency)); writes OUT/members.json."""
    from naslung.search.members import write_members
    from naslung.search.select import select_from_dir

    if epochs is not None and epochs < 1:
        raise typer.BadParameter(f"must be >= 1, got {epochs}", param_hint="--epochs")
    try:
        chosen = select_from_dir(out, top, weight)
        members_path = write_members(out, chosen, top=top, weight=weight, epochs=epochs)
    except (FileNotFoundError, ValueError) as exc:
        fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(chosen, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Selected members ({len(chosen)} of --top {top}; inner-validation numbers)")
    for col in ("rank", "spec", "score %", "latency ms", "params", "front"):
        table.add_column(col)
    for r in chosen:
        table.add_row(
            str(r["rank"]),
            r["spec"],
            pct(r["score"]),
            f"{r['latency_ms']:.2f}",
            "-" if r["params"] is None else f"{r['params']:,}",
            "yes" if r["on_front"] else "",
        )
    Console().print(table)
    typer.echo(f"members file: {members_path}  (train them: naslung cv --members {members_path} --data ...)")
