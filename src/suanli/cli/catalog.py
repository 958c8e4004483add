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
                      ("FP4 TF", "right"),
                      ("INT8 TOPS", "right"), ("link", "left"), ("link GB/s", "right"), ("PCIe", "right"),
                      ("TDP W", "right"), ("price $", "right"), ("scale-up", "right")]:
        t.add_column(col, justify=just, no_wrap=col in ("key", "vendor"))  # type: ignore[arg-type]
    for a in accs:
        t.add_row(a.key, a.vendor, *[_fmt(a.value(f)) for f in FIGURE_FIELDS])
    console.print(t)
    if sources:
        for a in accs:
            console.print(f"[bold]{a.key}[/] ({a.vendor} {a.name})")
            for k, s in a.sources.items():
                console.print(f"  [{k}] {s}", highlight=False)


@app.command("models")
def models_cmd(json_out: JsonOpt = False) -> None:
    """List the LLM catalog: architecture, total / active parameters, KV-cache bytes per token, source."""
    from suanli.catalog.llms import llms

    models = llms()
    if json_out:
        out = []
        for m in models:
            d: dict[str, object] = {"key": m.key, "name": m.name, "family": m.family, "aliases": list(m.aliases)}
            d.update(m.architecture.model_dump(exclude={"moe"}))
            d["moe"] = m.architecture.moe.model_dump() if m.architecture.moe else None
            d.update({"total_params_b": m.total_params_b, "active_params_b": m.active_params_b,
                      "kv_bytes_per_token_bf16": m.kv_bytes_per_token_bf16, "published": m.published,
                      "source": m.source, "notes": m.notes})
            out.append(d)
        print_json(out)
        return
    t = Table(title="LLMs (parameters recomputed from the architecture; KV bytes/token in BF16)")
    for col, just in [("key", "left"), ("layers", "right"), ("hidden", "right"), ("heads/kv", "right"),
                      ("attn", "left"), ("experts k/E+s", "right"), ("total B", "right"),
                      ("active B", "right"), ("KV B/token", "right"), ("max pos", "right")]:
        t.add_column(col, justify=just, no_wrap=col == "key")  # type: ignore[arg-type]
    for m in models:
        a = m.architecture
        moe = f"{a.moe.experts_per_token}/{a.moe.routed_experts}+{a.moe.shared_experts}" if a.moe else "-"
        t.add_row(m.key, str(a.layers), f"{a.hidden:,}", f"{a.heads}/{a.kv_heads}", a.attention, moe,
                  f"{m.total_params_b:,.2f}", f"{m.active_params_b:,.2f}", f"{m.kv_bytes_per_token_bf16:,}",
                  f"{a.max_positions:,}")
    console.print(t)
    console.print("Sources: suanli catalog models --json (one source per model).", highlight=False)
