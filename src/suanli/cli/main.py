"""Entry point of the ``suanli`` command."""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

import typer

from suanli import __version__
from suanli.cli import sim as sim_cli
from suanli.cli.common import err_console
from suanli.errors import SuanliError


@cache
def _app() -> typer.Typer:
    """The whole command (every subcommand imported; ``suanli.cli.main.app``)."""
    from suanli.cli import catalog
    from suanli.cli import client as client_cli
    from suanli.cli import plan as plan_cli
    from suanli.cli import replay as replay_cli
    from suanli.cli import report as report_cli
    from suanli.cli import serve as serve_cli
    from suanli.cli import services as services_cli
    from suanli.cli import up as up_cli
    from suanli.cli.demo import demo

    app = typer.Typer(
        name="suanli",
        help="suanli (算力): run a multi-vendor AI-accelerator fleet - schedule, simulate, plan.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.add_typer(catalog.app, name="catalog")
    app.add_typer(plan_cli.app, name="plan")
    app.command("sim")(sim_cli.sim)
    app.command("up")(up_cli.up)
    app.command("replay")(replay_cli.replay)
    app.command("report")(report_cli.report)
    client_cli.register(app)
    services_cli.register(app)
    app.command("demo")(demo)
    app.command("mock-engine")(serve_cli.mock_engine)
    app.add_typer(serve_cli.bench_app, name="bench")

    @app.command("version")
    def version() -> None:
        """Print the suanli version."""
        typer.echo(__version__)

    return app


def _sim_only() -> typer.Typer:
    """``suanli sim ...`` as a one-command app: the simulator's user waits for the simulation, not for the imports
    of every other command (control plane, planner, reports)."""
    one = typer.Typer(name="suanli", pretty_exceptions_enable=False, add_completion=False)

    @one.callback()
    def _group() -> None:  # a group, so that "sim" stays the subcommand's name
        pass

    one.command("sim")(sim_cli.sim)
    return one


def run() -> None:
    """Console-script entry: user errors become a one-line message and exit code 2, never a traceback."""
    try:
        if sys.argv[1:2] == ["sim"] and not {"--help", "-h"} & set(sys.argv[2:]):
            _sim_only()()
        else:
            _app()()
    except SuanliError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use: `suanli sim` does not import the other commands
        return _app()
    raise AttributeError(name)


if __name__ == "__main__":
    run()
