"""`naslung arch ...`: inspect an architecture (cost, latency) and check it against the search space."""

from __future__ import annotations

import json
from typing import Any

import typer

from naslung.cli.common import check_threads
from naslung.options import ATTENTIONS, HEADS

app = typer.Typer(
    help="Inspect NAS-Lung architectures: cost, latency, search-space membership.", no_args_is_help=True
)


def _parse_spec(text: str) -> Any:
    from naslung.models.spec import ArchSpec

    try:
        return ArchSpec.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SPEC") from None


@app.command("info")
def info(
    spec: str = typer.Argument(..., help='Architecture, e.g. "[4,4,[4,4],[4,8],[8,8]]".'),
    dims: int = typer.Option(3, "--dims", help="Spatial dimensions: 3 (volumes) or 2 (slices)."),
    attention: str = typer.Option("cbam", help=" | ".join(ATTENTIONS) + "."),
    head: str = typer.Option("angular", help=" | ".join(HEADS) + "."),
    cbam_kernel: int = typer.Option(7, "--cbam-kernel", help="Side of CBAM's spatial-gate conv: 3 or 7."),
    size: int = typer.Option(32, help="Input side (divisible by 8)."),
    threads: int | None = typer.Option(None, help="CPU threads for the timing (default: torch's current)."),
    device: str = typer.Option("cpu", help="cpu | cuda."),
    repeats: int = typer.Option(20, min=1, help="Timed runs per latency figure (after warm-up)."),
    path: str = typer.Option(
        "folded",
        "--path",
        help="What is timed: folded (the serving path that predictions run and the search times: batch norm "
        "folded, FFT gates, channels-last in 3-D) or eager (the unfolded eval model).",
    ),
    refresh: bool = typer.Option(
        False,
        "--refresh",
        "--no-cache",
        help="Measure again and replace the cached figures (the cache is keyed by CPU model, instruction "
        "set, threads and torch; each figure records the load average when it was measured).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Parameters, MACs, activation bytes, batch-1 latency and batch-32 throughput of SPEC."""
    from naslung.models.cost import analytic_cost, check_memory, profile
    from naslung.models.factory import build_model
    from naslung.models.latency import LATENCY_PATHS, measure_latency
    from naslung.models.machine import dispatch_isa
    from naslung.models.spec import space_violations
    from naslung.options import check_option

    arch = _parse_spec(spec)
    check_threads(threads)
    _check_device(device)
    if size < 8 or size % 8:
        raise typer.BadParameter(
            f"the input side must be a positive multiple of 8, got {size}", param_hint="--size"
        )
    try:
        if device == "cpu":  # refuse a model too large for memory before building it
            cost = analytic_cost(arch, size=size, spatial_dims=dims, attention=attention, head=head,
                                 cbam_kernel=cbam_kernel)
            check_memory(cost, str(arch), 32, train=False)
        model = build_model(arch, attention=attention, head=head, spatial_dims=dims, cbam_kernel=cbam_kernel)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    cost = profile(model, (1, 1, *([size] * dims)))
    options = {
        "attention": attention,
        "head": head,
        "cbam_kernel": cbam_kernel,
        "spatial_dims": dims,
        "input_size": size,
        "device": device,
    }
    try:
        check_option("path", path, LATENCY_PATHS)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--path") from None
    timing = {"threads": threads, "repeats": repeats, "refresh": refresh, "path": path}
    try:
        b1 = measure_latency(arch, batch_size=1, **options, **timing)
        b32 = measure_latency(arch, batch_size=32, **options, **timing)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    violations = space_violations(arch)
    record = {
        "spec": str(arch),
        **{k: v for k, v in options.items()},
        "params": cost["params"],
        "macs": cost["macs"],
        "activation_bytes": cost["activation_bytes"],
        "path": path,
        "latency_ms_b1": b1["median_ms"],
        "throughput_per_s": b32["throughput_per_s"],
        "latency_ms_b32": b32["median_ms"],
        "threads": b1["key"]["threads"],
        "device_name": b1["key"]["device"],
        "isa": b1["key"]["isa"],
        "dispatch": dispatch_isa() if device == "cpu" else None,
        "torch": b1["key"]["torch"],
        "cached": b1["cached"] or b32["cached"],
        "load_1min_at_measurement": b1.get("load_1min"),
        "measured_at": b1.get("measured_at"),
        "in_search_space": not violations,
        "space_violations": violations,
    }
    if as_json:
        typer.echo(json.dumps(record))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{arch}  ({dims}-D, {attention}, {head} head, input {size})", show_header=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{cost['params']:,}")
    table.add_row("MACs (batch 1)", f"{cost['macs']:,}")
    table.add_row("conv activations (batch 1)", f"{cost['activation_bytes'] / 2**20:.2f} MiB")
    table.add_row("timed path", "serving (folded)" if path == "folded" else "eager")
    table.add_row("latency, batch 1 (median)", f"{b1['median_ms']:.2f} ms")
    table.add_row("throughput, batch 32", f"{b32['throughput_per_s']:.1f} samples/s")
    table.add_row("device", f"{record['device_name']}, {record['threads']} threads, torch {record['torch']}")
    table.add_row("instruction set", record["isa"] or "-")
    if record["dispatch"]:
        table.add_row("kernels ran on", record["dispatch"])
    table.add_row("timings", _provenance(b1))
    table.add_row("in search space (eq. 5-6)", "yes" if not violations else "no: " + "; ".join(violations))
    Console().print(table)


def _check_device(device: str) -> None:
    """``--device`` is cpu, or cuda where a CUDA device is present (a ``typer.BadParameter`` otherwise)."""
    from naslung.options import check_option

    try:
        check_option("device", device, ("cpu", "cuda"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("cuda: no CUDA device is available here", param_hint="--device")


def _provenance(result: dict[str, Any]) -> str:
    """``"measured now (load 0.40)"`` or ``"cached from 2025-01-02 10:00 (load 3.10); --refresh ..."``."""
    import time

    load = result.get("load_1min")
    load_text = f"load {load:.2f}" if isinstance(load, (int, float)) else "load unknown"
    if not result.get("cached"):
        return f"measured now ({load_text})"
    when = result.get("measured_at")
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "earlier"
    return f"cached from {stamp} ({load_text}); --refresh to measure again"


@app.command("check")
def check(
    spec: str = typer.Argument(..., help="Architecture in the paper's notation."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Say whether SPEC lies in the search space of eq. 5-6, and why not. Exit code 1 when it does not."""
    from naslung.models.spec import space_violations

    arch = _parse_spec(spec)
    violations = space_violations(arch)
    if as_json:
        typer.echo(
            json.dumps({"spec": str(arch), "in_search_space": not violations, "violations": violations})
        )
    elif violations:
        typer.echo(f"{arch} is outside the search space:")
        for reason in violations:
            typer.echo(f"  - {reason}")
    else:
        typer.echo(f"{arch} is in the search space (depths L,M,N = {arch.depths}).")
    if violations:
        raise typer.Exit(code=1)
