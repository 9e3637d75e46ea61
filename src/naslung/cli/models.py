"""`naslung models list | show | build | docs`: the bundled real-CT models (naslung.zoo)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import typer

from naslung.cli.common import fail

app = typer.Typer(help="bundled real-CT models: list, show their cards, rebuild them", no_args_is_help=True)


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every bundled model name: dims, architecture(s), parameters, built or not, cross-validated metrics."""
    from naslung.cli.train_options import dump_json
    from naslung.zoo.registry import RECIPES, read_card

    rows = []
    for name, recipe in RECIPES.items():
        try:
            card = read_card(name)
        except ValueError as exc:
            fail(exc)
        members = (card or {}).get("members") or []
        summary = (((card or {}).get("metrics") or {}).get("summary") or {}).get("model") or {}
        rows.append({"name": name, "kind": recipe.kind, "dims": recipe.dims, "built": card is not None,
                     "archs": [m["arch"] for m in members] or ([recipe.arch] if recipe.arch else []),
                     "params": sum(int(m["params"]) for m in members) if members else None,
                     "cv": ({k: summary.get(f"{k}_mean") for k in ("accuracy", "f1", "auc")}
                            if summary else None)})
    if as_json:
        dump_json(rows)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from naslung.cli.common import pct

    table = Table(title="bundled models (cv: mean over test folds of the same recipe, %)")
    for col in ("name", "dims", "arch(s)", "params", "status", "cv accuracy", "cv F1", "cv AUC"):
        right = col.startswith("cv") or col in ("dims", "params")
        table.add_column(col, justify="right" if right else "left", no_wrap=col in ("name", "arch(s)"))
    for r in rows:
        archs = "; ".join(r["archs"]) if r["archs"] else "members.json"
        cv = r["cv"] or {}
        table.add_row(r["name"], f"{r['dims']}-D", escape(archs), f"{r['params']:,}" if r["params"] else "-",
                      "built" if r["built"] else "not built",
                      *(pct(cv.get(k)) for k in ("accuracy", "f1", "auc")))
    Console().print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="a bundled model name (naslung models list)")) -> None:
    """The model card: data, license, rebuild command, checksum, cross-validated metrics, input, limits."""
    from naslung.zoo.card import card_text

    try:
        typer.echo(card_text(name), nl=False)
    except ValueError as exc:
        fail(exc)


@app.command("docs")
def docs(
    out: Path = typer.Option(..., "--out", help="Markdown file to write (docs/models.md)"),
) -> None:
    """Write every card as one Markdown page (docs/models.md)."""
    from naslung.atomic import write_text_atomic
    from naslung.zoo.card import DOCS_HEADER, render_all

    if out.exists() and not out.read_text(encoding="utf-8", errors="replace").startswith(DOCS_HEADER[:17]):
        fail(f"--out {out}: not a naslung models page; naslung will not replace it")
    write_text_atomic(out, render_all())
    typer.echo(str(out))


def _voi_commit(vois: Path) -> str | None:
    """The git commit of the VOI checkout, when it is one."""
    try:
        done = subprocess.run(["git", "-C", str(vois), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and len(text) == 40 else None


@app.command("build")
def build(
    name: str = typer.Argument(..., help="the bundled model to rebuild (naslung models list)"),
    vois: Path = typer.Option(..., "--vois", help="a checkout of the public LIDC VOI set "
                              "(github.com/PabloLION/ct-slicing), as for `data prepare --vois`"),
    cv: Path | None = typer.Option(None, "--cv", help="the `naslung cv` folder of the same recipe on test "
                                   "folds 1-5 (for an ensemble: the `cv --members` folder); fills the card's "
                                   "metrics"),
    members: Path | None = typer.Option(None, "--members", help="ensembles: the members.json of `naslung "
                                        "search select` (default: the members the bundled card records)"),
    threads: int | None = typer.Option(None, "--threads", help="torch threads (recorded in the card)"),
    device: str | None = typer.Option(None, "--device", help="cpu (deterministic), cuda or auto"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the bundled model's files"),
    check: bool = typer.Option(False, "--check", help="rebuild and compare the checksums with the bundled "
                               "card; write nothing"),
    retrain: bool = typer.Option(False, "--retrain", help="discard the cached training runs of this build "
                                 "(otherwise a finished run is read back and a killed one resumes)"),
) -> None:
    """Rebuild a bundled model from the VOI set: crops in the user cache, every fold trained, weights and card
    written atomically into the models folder; prints the sha256."""
    from rich.console import Console
    from rich.markup import escape

    from naslung.cli.common import check_threads
    from naslung.cli.progress import progress_bar
    from naslung.data.ct_slicing import prepare_voi_set
    from naslung.data.errors import DataError
    from naslung.data.prepare import PrepareConfig
    from naslung.fingerprint import load_dataset
    from naslung.paths import cache_dir
    from naslung.zoo.build import build_bundle, check_destination, member_configs
    from naslung.zoo.registry import model_dir, recipe

    err = Console(stderr=True)
    warn = lambda m: err.print(f"[yellow]warning:[/] {escape(m)}")  # noqa: E731
    check_threads(threads)
    try:
        rec = recipe(name)
        if not check:
            check_destination(name, None, overwrite)
        configs = member_configs(rec, members, threads=threads, device=device)
        crops = cache_dir("zoo", "crops") / f"vois{rec.dims}d.h5"
        prepare_command = f"naslung data prepare --vois CT_SLICING --out vois{rec.dims}d.h5" + (
            " --dims 2" if rec.dims == 2 else "")
        prepare_voi_set(vois, PrepareConfig(luna_dir=vois, out=crops, dims=rec.dims,
                                            command=prepare_command), progress=progress_bar(False),
                        on_warning=warn)
        dataset = load_dataset(crops)
        parts = ["naslung", "models", "build", name, "--vois", "CT_SLICING"]
        if members is not None:
            parts += ["--members", "SEARCH/members.json"]
        if cv is not None:
            parts += ["--cv", "CVDIR" if rec.kind == "single" else "MEMBERS_CV"]
        for option, value in (("--threads", threads), ("--device", device)):
            if value is not None:
                parts += [option, str(value)]
        report = build_bundle(rec, dataset, configs, command=shlex.join(parts),
                              prepare_command=prepare_command, source=str(crops),
                              voi_commit=_voi_commit(vois),
                              cv=cv, overwrite=overwrite, check=check, retrain=retrain,
                              progress=progress_bar(False), on_warning=warn)
    except (DataError, FileNotFoundError, ValueError) as exc:
        fail(exc)
    card = report.card
    for m in card["members"]:
        typer.echo(f"{m['sha256']}  {m['weights']}")
    typer.echo(f"sha256 of {name}: {card['sha256']}")
    diff = report.differences()
    if report.previous:
        if diff:
            for weights, (before, now) in diff.items():
                typer.echo(f"differs from the bundled card: {weights} was {before}, now {now}")
        else:
            typer.echo("identical to the bundled card's checksums")
    if report.folder is not None:
        typer.echo(f"wrote {report.folder}; regenerate the docs: naslung models docs --out docs/models.md")
    else:
        typer.echo(f"--check: nothing written ({model_dir(name)} unchanged)")
