"""The `lengthwise` command line: one app, one sub-app per package."""

from __future__ import annotations

import typer

from lengthwise.bench.cli import bench_app
from lengthwise.engine.cli import engine_app
from lengthwise.gateway.cli import serve
from lengthwise.predict.offline.cli import predict_app
from lengthwise.sim.cli import sim_app

app = typer.Typer(
    name="lengthwise",
    help="Length-aware scheduling for LLM serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.add_typer(bench_app, name="bench")
app.add_typer(engine_app, name="engine")
app.add_typer(predict_app, name="predict")
app.add_typer(sim_app, name="sim")
app.command("serve")(serve)


@app.callback()
def main() -> None:
    """Length-aware scheduling for LLM serving."""


@app.command()
def version() -> None:
    """Print the version."""
    from lengthwise import __version__

    typer.echo(__version__)
