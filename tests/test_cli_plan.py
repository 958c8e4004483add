"""``suanli plan``: tables, JSON contract, unknown values as null, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from suanli.cli.main import app

runner = CliRunner()

TRAIN_KEYS = {"accelerator", "chips", "tokens_per_s", "days", "chip_hours", "mfu", "energy_kwh", "usd"}
SERVE_KEYS = {"accelerator", "chips", "tokens_per_s", "tokens_per_s_per_chip", "ttft_s", "tpot_s", "replicas",
              "usd_per_million_tokens"}


def _json(args: list[str]) -> list[dict[str, object]]:
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert isinstance(data, list)
    return data


def test_train_json_contract_and_nulls() -> None:
    data = _json(["plan", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--accelerator", "H100,H800,K100",
                  "--chips", "64", "--json"])
    assert [d["accelerator"] for d in data] == ["H100", "H800", "K100"]
    for d in data:
        assert d.keys() >= TRAIN_KEYS
    h100, h800, k100 = data
    assert h100["usd"] and h100["days"] and 0 < h100["mfu"] < 1  # type: ignore[operator]
    assert h800["usd"] is None and h800["chip_hours"]  # price unknown, time known
    assert k100["tokens_per_s"] is None and k100["days"] is None and k100["reason"]
    assert h100["assumptions"]["amortisation_years"] == 4.0  # type: ignore[index]


def test_train_without_chips_plans_a_count() -> None:
    data = _json(["plan", "train", "--model", "deepseek-v3", "--tokens", "14.8T", "--accelerator", "H800,BR100,910B",
                  "--precision", "fp8", "--json", "--target-days", "90"])
    for d in data:
        assert d["chips"] and d["min_chips_memory"] and d["chips"] >= d["min_chips_memory"]  # type: ignore[operator]
        assert d["days"] and d["layout"]


def test_serve_json_contract() -> None:
    data = _json(["plan", "serve", "--model", "qwen2.5-72b", "--accelerator", "H200,910B,S4000", "--input-tokens",
                  "2000", "--output-tokens", "500", "--qps", "20", "--ttft-slo", "2s", "--tpot-slo", "100ms",
                  "--json"])
    for d in data:
        assert d.keys() >= SERVE_KEYS
        assert d["tokens_per_s"] and d["replicas"] and d["chips"]
        assert d["requests_per_s"] >= 20  # type: ignore[operator]
    assert data[2]["usd_per_million_tokens"] is None  # S4000 price and TDP unknown


def test_serve_fixed_chips() -> None:
    data = _json(["plan", "serve", "--model", "llama-3.1-8b", "--accelerator", "H20", "--chips", "16", "--json"])
    assert data[0]["chips"] <= 16 and data[0]["replicas"] >= 1  # type: ignore[operator]


def test_tables_print_assumptions() -> None:
    r = runner.invoke(app, ["plan", "train", "--model", "llama-3.1-8b", "--tokens", "500B", "--accelerator", "H100",
                            "--chips", "32", "--usd-per-kwh", "0.2"])
    assert r.exit_code == 0, r.output
    assert "Assumptions" in r.output and "0.2/kWh" in r.output
    r = runner.invoke(app, ["plan", "serve", "--model", "mixtral-8x7b", "--accelerator", "H100,K100"])
    assert r.exit_code == 0 and "unknown" in r.output


def test_validate_command() -> None:
    r = runner.invoke(app, ["plan", "validate", "--json"])
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert len(rows) >= 10 and all(row["error"] is not None for row in rows)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["plan", "train", "--model", "gpt-9", "--tokens", "1T", "--accelerator", "H100"], "unknown model"),
        (["plan", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--accelerator", "TPUv9"],
         "unknown accelerator"),
        (["plan", "train", "--model", "llama-3.1-8b", "--tokens", "abc", "--accelerator", "H100"], "--tokens"),
        (["plan", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--accelerator", "H100", "--chips", "-5"],
         "--chips"),
        (["plan", "train", "--model", "llama-3.1-8b", "--tokens", "1T", "--accelerator", "H100", "--precision",
          "int3"], "precision"),
        (["plan", "serve", "--model", "llama-3.1-8b", "--accelerator", "H100", "--tpot-slo", "fast"], "--tpot-slo"),
        (["plan", "serve", "--model", "llama-3.1-8b", "--accelerator", "H100", "--qps", "-1"], "--qps"),
        (["plan", "serve", "--model", "llama-3.1-8b", "--accelerator", "H100", "--chips", "0"], "--chips"),
        (["plan", "serve", "--model", "llama-3.1-8b", "--accelerator", "H100", "--pue", "0.5"], "PUE"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and needle in r.output
    assert r.output.count("error:") == 1 and r.output.lstrip().startswith("error:")  # one message (rich may wrap it)
