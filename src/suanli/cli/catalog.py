"""``suanli catalog``: the facts suanli knows about accelerators and LLMs, with their sources."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from suanli.catalog.accelerators import FIGURE_FIELDS, accelerators
from suanli.cli.common import console, print_json

app = typer.Typer(help="Show the accelerator and LLM catalogs (every figure with its public source).",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fmt(v: object) -> str:
    if v is None:
        return "[dim]unknown[/]"
    if isinstance(v, float) and v.is_integer():
        return f"{int(v):,}"
    if isinstance(v, int | float):
        return f"{v:,}"
    return str(v)


@app.command("accelerators")
def accelerators_cmd(
    json_out: JsonOpt = False,
    sources: Annotated[bool, typer.Option("--sources", help="Also list every figure's source.")] = False,
) -> None:
    """List the accelerator catalog (unknown figures show as unknown / null)."""
    accs = accelerators()
    if json_out:
        out = []
        for a in accs:
            d: dict[str, object] = {"key": a.key, "vendor": a.vendor, "name": a.name, "aliases": list(a.aliases)}
            for f in FIGURE_FIELDS:
                d[f] = a.value(f)
            d["sources"] = {f: a.source_of(f) for f in FIGURE_FIELDS if a.source_of(f)}
            out.append(d)
        print_json(out)
        return
    t = Table(title="Accelerators (dense peaks; unknown = no credible public figure)")
    for col, just in [("key", "left"), ("vendor", "left"), ("dies", "right"), ("mem GB", "right"),
                      ("mem type", "left"), ("mem BW GB/s", "right"), ("BF16 TF", "right"), ("FP8 TF", "right"),
                      ("INT8 TOPS", "right"), ("link", "left"), ("link GB/s", "right"), ("PCIe", "right"),
                      ("TDP W", "right"), ("price $", "right")]:
        t.add_column(col, justify=just, no_wrap=col in ("key", "vendor"))  # type: ignore[arg-type]
    for a in accs:
        t.add_row(a.key, a.vendor, *[_fmt(a.value(f)) for f in FIGURE_FIELDS])
    console.print(t)
    if sources:
        for a in accs:
            console.print(f"[bold]{a.key}[/] ({a.vendor} {a.name})")
            for k, s in a.sources.items():
                console.print(f"  [{k}] {s}", highlight=False)
