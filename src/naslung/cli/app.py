"""The ``naslung`` command: a thin Typer layer over the library functions."""

from __future__ import annotations

import typer

from naslung.cli import (
    ablate,
    arch,
    cv,
    data,
    demo,
    ensemble,
    explain,
    export,
    models,
    predict,
    report,
    reproduce,
    search,
    train,
)
from naslung.cli.common import NaslungGroup

app = typer.Typer(
    name="naslung",
    cls=NaslungGroup,
    help="NAS-Lung: searched, trained, ensembled and explained pulmonary-nodule classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(arch.app, name="arch")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
train.register(app)
cv.register(app)
ensemble.register(app)
search.register(app)
demo.register(app)
export.register(app)
explain.register(app)
predict.register(app)
report.register(app)
ablate.register(app)
reproduce.register(app)


def main() -> None:
    app()
