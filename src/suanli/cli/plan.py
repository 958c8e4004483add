"""``suanli plan``: how many chips of which type, how fast, at what cost - for training and for serving an LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from suanli.cli.common import console, fail, print_json
from suanli.errors import SuanliError

app = typer.Typer(help="Plan LLM training and serving across accelerator types (chips, speed, cost).",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per accelerator.")]
AccOpt = Annotated[str, typer.Option("--accelerator", "-a", help="Comma-separated accelerators, e.g. H200,910B,S4000.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name or alias (see: suanli catalog models).")]
ChipsOpt = Annotated[str | None, typer.Option("--chips", help="Fix the number of chips per accelerator type.")]
YearsOpt = Annotated[float, typer.Option("--amortisation-years", help="Years over which the price is amortised.")]
UtilOpt = Annotated[float, typer.Option("--utilisation", help="Share of its life a chip does paid work (0-1).")]
KwhOpt = Annotated[float, typer.Option("--usd-per-kwh", help="Electricity price, USD per kWh.")]
PueOpt = Annotated[float, typer.Option("--pue", help="Data-centre power usage effectiveness.")]
NetOpt = Annotated[float, typer.Option("--scaleout-gbps", help="Per-chip scale-out bandwidth, GB/s each way.")]
NodeOpt = Annotated[int | None, typer.Option("--scaleup-size", help="Chips per scale-up domain (NVLink/HCCS node); "
                                             "default 8, or the whole domain of a rack-scale system (GB200-NVL72: "
                                             "72, CloudMatrix384: 384).")]


def _money_cluster(years: float, util: float, kwh: float, pue: float, net: float, node: int | None
                   ) -> tuple[Any, Any]:
    from suanli.perf.assumptions import Cluster, Money
    from suanli.perf.units import InvalidQuantity

    if years <= 0 or not 0 < util <= 1 or kwh < 0 or pue < 1 or net <= 0 or (node is not None and node < 1):
        raise InvalidQuantity("assumptions out of range: amortisation years > 0, 0 < utilisation <= 1, "
                              "usd/kWh >= 0, PUE >= 1, scale-out GB/s > 0, scale-up size >= 1")
    return Money(amortisation_years=years, utilisation=util, usd_per_kwh=kwh, pue=pue), Cluster(
        scaleup_size=node, scaleout_gbps=net)


def _chips(text: str | None) -> int | None:
    from suanli.perf.units import parse_positive_int

    return None if text is None else parse_positive_int(text, "--chips")


def _n(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "[dim]unknown[/]" if v is None else fmt.format(v)


def _assumptions(money: Any, cluster: Any) -> dict[str, Any]:
    return {"amortisation_years": money.amortisation_years, "utilisation": money.utilisation,
            "usd_per_kwh": money.usd_per_kwh, "pue": money.pue, "idle_power_frac": money.idle_power_frac,
            "scaleup_size": cluster.scaleup_size, "scaleout_gbps": cluster.scaleout_gbps}


def _footer(rows: list[Any], money: Any, cluster: Any) -> None:
    node = (f"{cluster.scaleup_size} chips per scale-up domain" if cluster.scaleup_size else
            "8 chips per scale-up domain (a rack-scale system: its whole domain, e.g. 72 for GB200-NVL72)")
    console.print(f"Assumptions: {money.describe()}; {node}, "
                  f"{cluster.scaleout_gbps:g} GB/s scale-out per chip (override with --amortisation-years, "
                  "--utilisation, --usd-per-kwh, --pue, --scaleup-size, --scaleout-gbps).", highlight=False)
    fams = sorted({(r.family, r.confidence, r.uncertainty) for r in rows}, key=str)
    for fam, conf, unc in fams:
        band = f" +-{unc:.0%}" if unc is not None else ""
        console.print(f"Calibration {fam}: {conf}{band} (see docs/planner.md).", highlight=False)
    for r in rows:
        for msg in ([r.reason] if r.reason else []) + list(r.notes):
            console.print(f"  {r.accelerator}: {msg}", highlight=False)


@app.command("train")
def train_cmd(
    model: ModelOpt,
    tokens: Annotated[str, typer.Option("--tokens", help="Training tokens, e.g. 14.8T, 500B, 1e12.")],
    accelerator: AccOpt,
    chips: ChipsOpt = None,
    seq: Annotated[str, typer.Option("--seq", help="Sequence length (tokens).")] = "4096",
    precision: Annotated[str, typer.Option("--precision", help="bf16, fp8 or fp4 (FP8 / NVFP4 GEMMs; fp4 only "
                                           "where the chip has FP4 tensor units).")] = "bf16",
    method: Annotated[str, typer.Option("--method", help="pretrain, full (full fine-tuning) or lora (frozen base "
                                        "+ LoRA adapters).")] = "pretrain",
    lora_rank: Annotated[str, typer.Option("--lora-rank", help="LoRA adapter rank (--method lora).")] = "16",
    global_batch: Annotated[str | None, typer.Option("--global-batch", help="Tokens per optimizer step "
                                                     "(default 16M; 4M under 20B params).")] = None,
    target_days: Annotated[str, typer.Option("--target-days", help="Without --chips: plan the smallest "
                                             "power-of-two chip count that finishes within this.")] = "60",
    json_out: JsonOpt = False,
    years: YearsOpt = 4.0,
    util: UtilOpt = 0.8,
    kwh: KwhOpt = 0.10,
    pue: PueOpt = 1.3,
    net: NetOpt = 50.0,
    node: NodeOpt = None,
) -> None:
    """Chips, parallel layout, step time, MFU, days, chip-hours, energy and cost to train MODEL on TOKENS."""
    try:
        from suanli.perf.api import plan_train
        from suanli.perf.units import InvalidQuantity, parse_accelerators, parse_positive_int, parse_tokens

        money, cluster = _money_cluster(years, util, kwh, pue, net, node)
        n_tokens = parse_tokens(tokens, "--tokens")
        gbt = parse_tokens(global_batch, "--global-batch") if global_batch is not None else None
        try:
            days = float(target_days)
        except ValueError:
            raise InvalidQuantity(f"--target-days {target_days!r} is not a number") from None
        if precision not in ("bf16", "fp8", "fp4"):
            raise InvalidQuantity(f"--precision must be bf16, fp8 or fp4, got {precision!r}")
        if method not in ("pretrain", "full", "lora"):
            raise InvalidQuantity(f"--method must be pretrain, full or lora, got {method!r}")
        rows = plan_train(model, parse_accelerators(accelerator), n_tokens, seq=parse_positive_int(seq, "--seq"),
                          precision=precision, chips=_chips(chips), global_batch_tokens=gbt, target_days=days,
                          cluster=cluster, money=money, method=method,
                          lora_rank=parse_positive_int(lora_rank, "--lora-rank"))
    except SuanliError as e:
        fail(str(e))
    if json_out:
        print_json([{**r.to_dict(), "assumptions": _assumptions(money, cluster)} for r in rows])
        return
    what = {"pretrain": "Training", "full": "Full fine-tuning", "lora": f"LoRA (rank {lora_rank}) fine-tuning"}[method]
    t = Table(title=f"{what} {rows[0].model} on {n_tokens:.3g} tokens (seq {seq}, {precision})")
    for col in ("accelerator", "min chips (mem)", "chips", "layout", "GB/chip", "tokens/s", "MFU", "days",
                "chip-hours", "energy MWh", "cost $"):
        t.add_column(col, justify="left" if col in ("accelerator", "layout") else "right",
                     no_wrap=col == "accelerator")
    for r in rows:
        if r.reason:
            t.add_row(r.accelerator, *(["-"] * 10))
            continue
        t.add_row(r.accelerator, _n(r.min_chips_memory), _n(r.chips), r.layout or "-",
                  _n(r.memory_per_chip_gb, "{:.0f}"), _n(r.tokens_per_s), _n(r.mfu, "{:.1%}"), _n(r.days, "{:,.1f}"),
                  _n(r.chip_hours), _n(None if r.energy_kwh is None else r.energy_kwh / 1000, "{:,.0f}"),
                  _n(r.usd, "{:,.0f}"))
    console.print(t)
    _footer(rows, money, cluster)


@app.command("serve")
def serve_cmd(
    model: ModelOpt,
    accelerator: AccOpt,
    input_tokens: Annotated[str, typer.Option("--input-tokens", help="Mean prompt length.")] = "2000",
    output_tokens: Annotated[str, typer.Option("--output-tokens", help="Mean generated length.")] = "500",
    qps: Annotated[str | None, typer.Option("--qps", help="Target requests per second (sizes the replicas).")] = None,
    ttft_slo: Annotated[str | None, typer.Option("--ttft-slo", help="Time-to-first-token SLO, e.g. 2s.")] = None,
    tpot_slo: Annotated[str | None, typer.Option("--tpot-slo", help="Time-per-output-token SLO, e.g. 100ms.")] = None,
    chips: ChipsOpt = None,
    precision: Annotated[str, typer.Option("--precision", help="auto, bf16, fp8 or fp4 (weights/GEMMs).")] = "auto",
    max_batch: Annotated[str | None, typer.Option("--max-batch", help="Limit on sequences in flight per replica "
                                                  "(default: ranks x --max-batch-per-rank).")] = None,
    max_batch_per_rank: Annotated[str, typer.Option("--max-batch-per-rank", help="Engine limit on sequences per "
                                                    "scheduler rank (a TP group, or one attention-DP rank).")
                                  ] = "1024",
    image_tokens: Annotated[str, typer.Option("--image-tokens", help="Image tokens per request (multimodal "
                                              "models): vision encoder + prefill.")] = "0",
    json_out: JsonOpt = False,
    years: YearsOpt = 4.0,
    util: UtilOpt = 0.8,
    kwh: KwhOpt = 0.10,
    pue: PueOpt = 1.3,
    net: NetOpt = 50.0,
    node: NodeOpt = None,
) -> None:
    """Chips per replica, batch, prefill/decode throughput, TTFT/TPOT, replicas and $/M tokens to serve MODEL."""
    try:
        from suanli.perf.api import plan_serve
        from suanli.perf.units import (
            InvalidQuantity,
            parse_accelerators,
            parse_count,
            parse_duration,
            parse_positive_int,
            parse_tokens,
        )

        money, cluster = _money_cluster(years, util, kwh, pue, net, node)
        q = None
        if qps is not None:
            try:
                q = float(qps)
            except ValueError:
                raise InvalidQuantity(f"--qps {qps!r} is not a number") from None
            if not q > 0:
                raise InvalidQuantity(f"--qps must be positive, got {qps!r}")
        rows = plan_serve(
            model, parse_accelerators(accelerator), input_tokens=parse_tokens(input_tokens, "--input-tokens"),
            output_tokens=parse_tokens(output_tokens, "--output-tokens"), qps=q,
            ttft_slo_s=parse_duration(ttft_slo, "--ttft-slo") if ttft_slo else None,
            tpot_slo_s=parse_duration(tpot_slo, "--tpot-slo") if tpot_slo else None, precision=precision,
            chips=_chips(chips), max_batch=parse_positive_int(max_batch, "--max-batch") if max_batch else None,
            max_batch_per_rank=parse_positive_int(max_batch_per_rank, "--max-batch-per-rank"),
            image_tokens=parse_count(image_tokens, "--image-tokens"), cluster=cluster, money=money)
    except SuanliError as e:
        fail(str(e))
    if json_out:
        print_json([{**r.to_dict(), "assumptions": _assumptions(money, cluster)} for r in rows])
        return
    title = f"Serving {rows[0].model}: {input_tokens} in / {output_tokens} out tokens"
    if image_tokens not in ("0", ""):
        title += f" (+ {image_tokens} image tokens)"
    if q:
        title += f", {q:g} req/s"
    latency_bound = bool(ttft_slo or tpot_slo)
    if latency_bound:
        title += " - TTFT/TPOT are p99 under Poisson arrivals"
    t = Table(title=title)
    p99 = " p99" if latency_bound else ""
    for col in ("accelerator", "prec", "replica", "replicas", "chips", "batch", "prefill tok/s", "decode tok/s",
                "out tok/s", "tok/s/chip", f"TTFT{p99} s", f"TPOT{p99} ms", "$/M tok"):
        t.add_column(col, justify="left" if col in ("accelerator", "replica", "prec") else "right",
                     no_wrap=col == "accelerator")
    for r in rows:
        if r.reason:  # no plan (SLO not reachable, does not fit, figures unknown): no numbers, the reason below
            t.add_row(r.accelerator, r.precision or "-", *(["-"] * 11))
            continue
        rep = "-"
        if r.chips_per_replica:
            par = f"EP{r.ep}" if r.ep and r.ep > 1 else f"TP{r.tp}" + (f"xPP{r.pp}" if r.pp and r.pp > 1 else "")
            rep = f"{r.chips_per_replica} ({par})"
        t.add_row(r.accelerator, r.precision or "-", rep, _n(r.replicas), _n(r.chips),
                  f"{r.batch}/{r.max_batch}" if r.batch else "-", _n(r.prefill_tokens_per_s),
                  _n(r.decode_tokens_per_s), _n(r.tokens_per_s), _n(r.tokens_per_s_per_chip), _n(r.ttft_s, "{:.2f}"),
                  _n(None if r.tpot_s is None else r.tpot_s * 1e3, "{:.0f}"), _n(r.usd_per_million_tokens, "{:.3f}"))
    console.print(t)
    _footer(rows, money, cluster)


@app.command("migrate")
def migrate_cmd(
    from_report: Annotated[Path, typer.Option("--from-report", help="usage.json of 'suanli report --out' or "
                                              "'suanli sim --out' (or 'suanli report --by model --json').")],
    to: Annotated[str, typer.Option("--to", help="Comma-separated target accelerators, e.g. BR100,910B,H20.")],
    llm: Annotated[str | None, typer.Option("--llm", help="Override: all the work is this model (its per-chip "
                                            "throughput sets the speeds); default: each job's LLM from the report's "
                                            "mix, BF16 peak ratio (low confidence) for work without one.")] = None,
    kind: Annotated[str, typer.Option("--kind", help="train or serve (with --llm).")] = "train",
    fleet: Annotated[Path | None, typer.Option("--fleet", help="Fleet file with accounting figures (tariff, PUE, "
                                               "prices, utilisation).")] = None,
    window_days: Annotated[float | None, typer.Option("--window-days", help="Window the work must fit in "
                                                      "(default: the report's, else 30).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """The same work re-planned on other chip types: chip-hours, chips needed, energy, cost, confidence."""
    from suanli.accounting.migrate import by_model, migrate, read_mix
    from suanli.accounting.pricing import Accounting

    try:
        if window_days is not None and not window_days > 0:
            raise SuanliError(f"--window-days must be positive, not {window_days:g}")
        mix, window = read_mix(from_report)
        useful, alloc = by_model(mix)
        rows = migrate(useful, alloc, to.split(","), window_s=window_days * 86400.0 if window_days else window,
                       llm=llm, kind=kind, acct=Accounting.from_file(fleet), mix=mix)
    except SuanliError as e:
        fail(str(e))
    if json_out:
        print_json(rows)
        return
    named = sorted({f"{g['llm']} {g['kind']}" for g in mix if g["llm"]})
    speeds = (f"speeds: {llm} {kind}" if llm else "speeds: " + ", ".join(named) + (
        " (+ BF16 peak for the rest)" if any(not g["llm"] for g in mix) else "") if named else "speeds: BF16 peak")
    t = Table(title=f"{from_report.name} re-planned ({speeds})")
    for c in ("accelerator", "role", "speed", "chip-hours", "useful", "chips (same window)", "energy kWh", "USD",
              "USD / useful chip-h", "confidence"):
        t.add_column(c, justify="left" if c in ("accelerator", "role", "confidence") else "right")
    for r in rows:
        t.add_row(r["accelerator"], r["role"], _n(r["speed"], "{:.2f}"), _n(r["chip_hours"]),
                  _n(r["useful_chip_hours"]), _n(r["chips_needed"]), _n(r["energy_kwh"]), _n(r["usd"]),
                  _n(r["usd_per_useful_chip_hour"], "{:,.2f}"), r["confidence"])
    console.print(t)
    for r in rows:
        if r["reason"]:
            console.print(f"  {r['accelerator']}: {r['reason']}", highlight=False)
    for n in rows[-1].get("notes") or []:
        console.print(f"  note: {n}", highlight=False)


@app.command("validate")
def validate_cmd(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the docs table (markdown).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run the model against the published results it is checked on (predicted, published, error)."""
    from suanli.perf.validation import markdown_table, run_all

    results = run_all()
    if json_out:
        print_json([{"key": r.check.key, "what": r.check.what, "unit": r.check.unit, "predicted": r.predicted,
                     "published": r.check.published, "error": r.error, "planner": r.detail,
                     "source": r.check.source} for r in results])
        return
    if markdown:
        typer.echo(markdown_table(results))
        return
    t = Table(title="Planner vs published results (no constant fitted on these rows)")
    for col in ("check", "unit", "predicted", "published", "error", "planner's choice"):
        t.add_column(col, justify="right" if col in ("predicted", "published", "error") else "left")
    for r in results:
        err = "-" if r.error is None else f"{r.error:+.1%}"
        style = "" if r.error is not None and abs(r.error) <= 0.15 else "red"
        pred = "unknown" if r.predicted is None else f"{r.predicted:,.3g}"
        t.add_row(r.check.key, r.check.unit, pred, f"{r.check.published:,.3g}", f"[{style}]{err}[/]" if style else err,
                  r.detail)
    console.print(t)


@app.command("calibrate")
def calibrate_cmd(
    from_: Annotated[Path, typer.Option("--from", help="JSON result of suanli bench serve (--json or --out)")],
    accelerator: Annotated[str, typer.Option("--accelerator", "-a", help="the chips behind the endpoint")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="catalog model behind the endpoint "
                                              "(default: the model named in the result)")] = None,
    chips: Annotated[int, typer.Option("--chips", help="chips per replica")] = 1,
    replicas: Annotated[int, typer.Option("--replicas", help="replicas behind the endpoint")] = 1,
    calibration_file: Annotated[Path | None, typer.Option("--calibration-file", help="where measurements are "
                                                          "kept (default $SUANLI_CALIBRATION_FILE, else "
                                                          "~/.suanli/calibration.json)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the fit without recording the measurement")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Record a measured endpoint and fit that vendor's serving factor on all its measurements (before/after)."""
    import json
    import os

    from suanli.perf import measured

    if calibration_file is not None:
        os.environ[measured.ENV] = str(calibration_file)
    try:
        try:
            result = json.loads(from_.read_text(encoding="utf-8"))
        except OSError as e:
            raise SuanliError(f"--from {from_}: {e.strerror or e}") from None
        except ValueError as e:
            raise SuanliError(f"--from {from_}: not JSON ({e})") from None
        if isinstance(result, list) and len(result) == 1:
            result = result[0]
        if not isinstance(result, dict):
            raise SuanliError(f"--from {from_}: expected one JSON object from suanli bench serve")
        m = measured.measurement_from_result(result, accelerator=accelerator, model=model, chips_per_replica=chips,
                                             replicas=replicas, source=str(from_))
        existing = measured.load()
        fit = measured.fit_vendor(m.vendor, [*existing, m])
        if fit is None:
            raise SuanliError(f"the planner has no estimate for {m.model} on {chips} x {m.accelerator} "
                              "(figures unknown or the model does not fit): nothing to calibrate")
        path = measured.calibration_file() if dry_run else measured.save([*existing, m])
    except SuanliError as e:
        fail(str(e))
    before, after = fit.base, fit.fitted
    out = {
        "vendor": fit.vendor, "family_before": before.family, "family_after": after.family,
        "serve_eff_before": before.serve_eff, "serve_eff_after": after.serve_eff,
        "serve_eff_fp4_before": before.serve_eff_fp4, "serve_eff_fp4_after": after.serve_eff_fp4,
        "ratio": fit.ratio, "measurements": len(fit.rows), "rms_error_before": fit.rms("before"),
        "rms_error_after": fit.rms("after"), "uncertainty_after": after.uncertainty,
        "calibration_file": str(path), "recorded": not dry_run,
        "rows": [{"accelerator": r.measurement.accelerator, "model": r.measurement.model,
                  "chips_per_replica": r.measurement.chips_per_replica, "replicas": r.measurement.replicas,
                  "batch": r.measurement.batch, "measured_tokens_per_s": r.measurement.output_tokens_per_s,
                  "predicted_before": r.before, "predicted_after": r.after, "error_before": r.error("before"),
                  "error_after": r.error("after")} for r in fit.rows],
    }
    if json_out:
        print_json(out)
        return
    t = Table(title=f"{fit.vendor}: {len(fit.rows)} measurement(s), output tokens/s")
    for col in ("accelerator", "model", "replica", "batch", "measured", "before", "error", "after", "error "):
        t.add_column(col, justify="left" if col in ("accelerator", "model") else "right")
    for r in fit.rows:
        mm = r.measurement
        eb, ea = r.error("before"), r.error("after")
        t.add_row(mm.accelerator, mm.model, f"{mm.replicas}x{mm.chips_per_replica}", str(mm.batch),
                  f"{mm.output_tokens_per_s:,.1f}", _n(r.before, "{:,.1f}"), _n(eb, "{:+.1%}"),
                  _n(r.after, "{:,.1f}"), _n(ea, "{:+.1%}"))
    console.print(t)
    rb, ra = fit.rms("before"), fit.rms("after")
    console.print(f"serving factor: {before.family} {before.serve_eff:.3f} (fp4 {before.serve_eff_fp4:.3f}) -> "
                  f"{after.family} {after.serve_eff:.3f} (fp4 {after.serve_eff_fp4:.3f}), x{fit.ratio:.3f}; "
                  f"RMS error on the measurements {_n(rb, '{:.1%}')} -> {_n(ra, '{:.1%}')}; band +-"
                  f"{after.uncertainty:.0%}", highlight=False)
    if after.serve_eff > 1.0:
        console.print("  note: a serving factor above 1 means the catalog figures understate this chip or the "
                      "measurement's batch/replica count is wrong.", highlight=False)
    verb = "would be recorded in" if dry_run else "recorded in"
    console.print(f"{verb} {path}; suanli plan uses it for every {fit.vendor} accelerator.", highlight=False)
