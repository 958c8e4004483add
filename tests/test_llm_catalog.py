"""The LLM catalog: parameter counts and KV bytes recomputed from the architecture, aliases, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.catalog.llms import computed_kv_bytes_per_token, computed_params, llm, llms, resolve_llm
from suanli.cli.main import app
from suanli.errors import UnknownName

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "research"

REQUIRED = [
    "DeepSeek-V3", "DeepSeek-R1", "DeepSeek-R1-Distill-Qwen-7B", "DeepSeek-R1-Distill-Qwen-32B",
    "Qwen2.5-7B", "Qwen2.5-14B", "Qwen2.5-32B", "Qwen2.5-72B", "Qwen3-8B", "Qwen3-32B", "Qwen3-235B-A22B",
    "Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.1-405B", "Llama-3.3-70B", "Llama-2-70B", "Mixtral-8x7B",
    "Qwen3-30B-A3B", "Llama-4-Maverick-17B-128E", "Llama-4-Scout-17B-16E",
]


def test_catalog_has_the_required_models() -> None:
    assert {m.key for m in llms()} >= set(REQUIRED)


@pytest.mark.parametrize("key", REQUIRED)
def test_params_recomputed_from_architecture_match_within_1pct(key: str) -> None:
    m = llm(key)
    p = computed_params(m.architecture)
    assert p.total / 1e9 == pytest.approx(m.total_params_b, rel=0.01)
    assert p.active / 1e9 == pytest.approx(m.active_params_b, rel=0.01)
    assert p.active <= p.total


@pytest.mark.parametrize("key", REQUIRED)
def test_kv_bytes_per_token_match(key: str) -> None:
    m = llm(key)
    assert computed_kv_bytes_per_token(m.architecture) == m.kv_bytes_per_token_bf16


def test_published_headline_sizes() -> None:
    # headline figures from the model cards / reports
    assert llm("deepseek-v3").total_params_b == pytest.approx(671, rel=0.01)
    assert llm("deepseek-v3").active_params_b == pytest.approx(37, rel=0.02)
    assert llm("qwen3-235b-a22b").active_params_b == pytest.approx(22, rel=0.02)
    assert llm("mixtral-8x7b").total_params_b == pytest.approx(46.7, rel=0.01)
    assert llm("llama-3.1-405b").total_params_b == pytest.approx(405, rel=0.01)
    # MoE models of the serving calibration set (the published totals include Llama 4's vision encoder; the
    # catalog counts the text model only)
    assert llm("qwen3-30b-a3b").total_params_b == pytest.approx(30.5, rel=0.01)
    assert llm("qwen3-30b-a3b").active_params_b == pytest.approx(3.3, rel=0.02)
    assert llm("llama-4-maverick").total_params_b == pytest.approx(400, rel=0.01)
    assert llm("llama-4-maverick").active_params_b == pytest.approx(17, rel=0.015)
    assert llm("llama-4-scout").total_params_b == pytest.approx(109, rel=0.015)
    assert llm("llama-4-scout").active_params_b == pytest.approx(17, rel=0.015)
    ds = llm("deepseek-v3").architecture
    assert ds.moe is not None and ds.moe.dense_layers == 3 and ds.kv_lora_rank == 512 and ds.qk_rope_head_dim == 64


@pytest.mark.parametrize(
    "alias,key",
    [("deepseek-v3", "DeepSeek-V3"), ("qwen2.5-72b", "Qwen2.5-72B"), ("llama-3.1-405b", "Llama-3.1-405B"),
     ("llama2-70b", "Llama-2-70B"), ("mixtral-8x7b", "Mixtral-8x7B"), ("LLAMA 2 70B", "Llama-2-70B"),
     ("Qwen3_235B_A22B", "Qwen3-235B-A22B"), ("deepseek-r1", "DeepSeek-R1")],
)
def test_aliases_resolve_case_insensitively(alias: str, key: str) -> None:
    assert resolve_llm(alias) == key


def test_llama4_interleaved_moe_layers() -> None:
    # interleave_moe_layer_step 2: layers 1, 3, ..., 47 are MoE, the other 24 dense (intermediate_size_mlp);
    # step 1 (Scout): every layer is MoE
    mav = llm("llama-4-maverick").architecture
    assert mav.moe is not None and mav.moe.moe_layer_step == 2
    assert mav.moe_layers == 24 and mav.dense_layers == 24 and mav.intermediate == 16384
    assert mav.moe.moe_intermediate == 8192 and mav.moe.shared_experts == 1
    p = computed_params(mav)
    assert p.dense_mlp == 24 * 3 * 5120 * 16384
    assert p.shared_experts == 24 * 3 * 5120 * 8192
    scout = llm("llama-4-scout").architecture
    assert scout.moe_layers == 48 and scout.dense_layers == 0 and computed_params(scout).dense_mlp == 0


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownName) as e:
        resolve_llm("gpt-5")
    assert "gpt-5" in str(e.value) and "Llama-2-70B" in str(e.value)


def test_every_entry_names_a_source() -> None:
    for m in llms():
        assert m.source.strip()


def test_agrees_with_shared_research_csv() -> None:
    path = SHARED / "llm_models.csv"
    if not path.exists():
        pytest.skip(f"shared research data not found at {path}")
    with path.open(encoding="utf-8") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    for key, row in rows.items():
        m = llm(key)
        a = m.architecture
        assert a.layers == int(row["num_hidden_layers"]) and a.hidden == int(row["hidden_size"])
        assert a.heads == int(row["num_attention_heads"]) and a.vocab == int(row["vocab_size"])
        assert m.total_params_b == pytest.approx(float(row["total_params_b_computed"]), rel=0.005)
        assert m.kv_bytes_per_token_bf16 == int(row["kv_cache_bytes_per_token_bf16"])


def test_cli_models_json_and_table() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["catalog", "models", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert isinstance(data, list) and {d["key"] for d in data} >= set(REQUIRED)
    ds = next(d for d in data if d["key"] == "DeepSeek-V3")
    assert ds["moe"]["routed_experts"] == 256 and ds["kv_lora_rank"] == 512 and ds["source"]
    r = runner.invoke(app, ["catalog", "models"])
    assert r.exit_code == 0 and "Mixtral-8x7B" in r.output
