"""``suanli mock-engine`` (an OpenAI-compatible mock LLM server) and ``suanli bench serve`` (endpoint benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from suanli.cli.common import console, err_console, fail, print_json
from suanli.errors import SuanliError

bench_app = typer.Typer(help="Benchmarks against live endpoints.", no_args_is_help=True)


def mock_engine(
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, envvar="PORT",
                                      help="port on --host (default: $PORT, else 8000)")] = 8000,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    model: Annotated[str, typer.Option("--model", help="model name it answers to")] = "mock-llm",
    ttft: Annotated[float | None, typer.Option("--ttft", help="seconds to the first token (default 0.05)")] = None,
    tpot: Annotated[float | None, typer.Option("--tpot", help="seconds per further token (default 0.01)")] = None,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", help="requests decoded at once; the rest "
                                              "wait in the queue")] = 8,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="output tokens when a request names none")] = 16,
    profile: Annotated[str | None, typer.Option("--profile", help="MODEL@ACCELERATOR: take TTFT and TPOT from "
                                                "the planner, e.g. qwen2.5-7b@H100")] = None,
) -> None:
    """Run an OpenAI-compatible mock LLM engine (/v1/models, /v1/completions, /v1/chat/completions, /health,
    /metrics) with given or planner-predicted TTFT/TPOT and a real request queue."""
    from suanli.serve.mock import config_from, serve

    try:
        cfg = config_from(model=model, ttft=ttft, tpot=tpot, max_num_seqs=max_num_seqs, max_tokens=max_tokens,
                          profile=profile)
    except SuanliError as e:
        fail(str(e))
    err_console.print(f"mock engine {cfg.model} on http://{host}:{port} (TTFT {cfg.ttft_s * 1e3:.1f} ms, "
                      f"TPOT {cfg.tpot_s * 1e3:.2f} ms, {cfg.max_num_seqs} sequences at once)", highlight=False)
    serve(cfg, host, port)


def _fmt(v: float | None, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v * scale)


@bench_app.command("serve")
def bench_serve(
    endpoint: Annotated[str, typer.Option("--endpoint", help="OpenAI-compatible base URL, e.g. "
                                          "http://127.0.0.1:8000 or http://127.0.0.1:8470/v1/services/mock")],
    model: Annotated[str, typer.Option("--model", "-m", help="model name sent in each request")],
    scenario: Annotated[str, typer.Option("--scenario", help="server (Poisson arrivals at --qps) or offline "
                                          "(all requests at once)")] = "server",
    qps: Annotated[float | None, typer.Option("--qps", help="server: mean arrivals per second")] = None,
    input_tokens: Annotated[int, typer.Option("--input-tokens", help="synthetic prompt length (words)")] = 128,
    output_tokens: Annotated[int, typer.Option("--output-tokens", help="max_tokens of each request")] = 64,
    dataset: Annotated[Path | None, typer.Option("--dataset", help="JSON / JSON-lines prompts ('prompt', "
                                                 "'messages' or ShareGPT 'conversations')")] = None,
    duration: Annotated[float, typer.Option("--duration", help="server: seconds of arrivals")] = 30.0,
    requests: Annotated[int | None, typer.Option("--requests", help="offline: requests sent at once (default 64); "
                                                 "server: at most this many")] = None,
    api: Annotated[str, typer.Option("--api", help="completions or chat")] = "completions",
    token: Annotated[str | None, typer.Option("--token", envvar="SUANLI_TOKEN", help="bearer token (gateway "
                                              "tenant token or the engine's API key)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="arrival-time seed")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="also write the JSON result to this file "
                                             "(input of suanli plan calibrate)")] = None,
) -> None:
    """Benchmark an OpenAI-compatible endpoint MLPerf-style: throughput, TTFT and TPOT p50/p90/p99, errors."""
    import asyncio
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from suanli.serve.loadgen import BenchConfig, load_dataset, run

    try:
        prompts = load_dataset(dataset) if dataset else []
        cfg = BenchConfig(endpoint=endpoint, model=model, scenario=scenario, qps=qps, input_tokens=input_tokens,
                          output_tokens=output_tokens, duration_s=duration, requests=requests, api=api, token=token,
                          seed=seed, prompts=prompts)
    except SuanliError as e:
        fail(str(e))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(f"{scenario} {endpoint}", total=None)

        def progress(done: int, expected: int) -> None:
            bar.update(task, completed=done, total=max(expected, done))

        res = asyncio.run(run(cfg, progress))
    if out is not None:
        out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    if json_out:
        print_json(res)
    else:
        console.print(f"{res['scenario']} against {res['endpoint']} ({res['model']}): {res['completed']} of "
                      f"{res['requests']} requests in {res['duration_s']:.1f} s, {res['errors']} errors",
                      highlight=False)
        console.print(f"  throughput  {_fmt(res['output_tokens_per_s'])} output tokens/s, "
                      f"{_fmt(res['requests_per_s'], fmt='{:.2f}')} requests/s, "
                      f"{_fmt(res['mean_concurrency'])} in flight on average", highlight=False)
        for name in ("ttft", "tpot", "latency"):
            ps = ", ".join(f"p{q} {_fmt(res[f'{name}_p{q}_s'], 1e3)} ms" for q in (50, 90, 99))
            console.print(f"  {name.upper():<8}    {ps}", highlight=False)
        for kind, n in res["error_kinds"].items():
            console.print(f"  {n} x {kind}", highlight=False)
    if res["completed"] == 0:
        raise typer.Exit(1)
