from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from suanli.catalog import accelerator, accelerators
from suanli.catalog.accelerators import FIGURE_FIELDS, Accelerator
from suanli.cli.main import app
from suanli.errors import UnknownFigure, UnknownName

REQUIRED = ["A100-80GB", "H100", "H800", "H200", "H20", "L20", "B200", "BR100", "BR104", "S4000", "C500", "910B",
            "910C", "MLU370-X8", "R300", "BI-V150"]


def test_catalog_has_the_required_accelerators() -> None:
    keys = {a.key for a in accelerators()}
    assert set(REQUIRED) <= keys


@pytest.mark.parametrize("alias,key", [("h100", "H100"), ("H100-SXM", "H100"), ("ascend-910b", "910B"),
                                       ("Biren BR100", "BR100"), ("mtt_s4000", "S4000"), ("a100", "A100-80GB")])
def test_aliases_resolve(alias: str, key: str) -> None:
    assert accelerator(alias).key == key


def test_unknown_accelerator_lists_known_names() -> None:
    with pytest.raises(UnknownName, match=r"unknown accelerator 'X9'.*H100"):
        accelerator("X9")


def test_every_known_figure_names_a_source() -> None:
    for a in accelerators():
        for f in FIGURE_FIELDS:
            if a.value(f) is not None:
                assert a.source_of(f), f"{a.key}.{f} has no source"


def test_a_figure_without_source_is_rejected() -> None:
    d = accelerator("H100").model_dump()
    d["tdp_w"] = {"value": 700, "source": None}
    with pytest.raises(ValueError, match="no source"):
        Accelerator.model_validate(d)


def test_unknown_figures_stay_unknown_and_say_so() -> None:
    k100 = accelerator("K100")
    assert k100.bf16_tflops.value is None
    with pytest.raises(UnknownFigure, match="K100: bf16_tflops is unknown"):
        k100.require("bf16_tflops", "step time")


def test_multi_die_packages() -> None:
    assert accelerator("BR100").dies_or_one == 2
    assert accelerator("B200").dies_or_one == 2
    assert accelerator("910C").dies_or_one == 2
    assert accelerator("H100").dies_or_one == 1


def test_catalog_agrees_with_the_research_table(shared) -> None:
    """Our hand-written figures match the public research table they were taken from."""
    rows = list(csv.DictReader((shared / "research" / "accelerators.csv").open()))
    pairs = {"H100": "H100 SXM 80GB", "H200": "H200 SXM 141GB", "BR100": "BR100", "S4000": "MTT S4000",
             "910B": "Ascend 910B", "B200": "B200", "MLU370-X8": "MLU370-X8", "H20": "H20"}
    for key, prefix in pairs.items():
        row = next(r for r in rows if r["model"] == prefix or r["model"].startswith(prefix + " "))
        a = accelerator(key)
        assert float(row["mem_gb"]) == a.value("memory_gb"), key
        assert float(row["bf16_tflops"]) == a.value("bf16_tflops"), key
        if row["mem_bw_gbps"]:
            assert float(row["mem_bw_gbps"]) == a.value("memory_bw_gbps"), key


def test_cli_catalog_accelerators_json() -> None:
    res = CliRunner().invoke(app, ["catalog", "accelerators", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    br = next(d for d in data if d["key"] == "BR100")
    assert br["dies"] == 2 and br["fp8_tflops"] is None and "TomsHardware" in br["sources"]["bf16_tflops"]


def test_cli_catalog_accelerators_table() -> None:
    res = CliRunner().invoke(app, ["catalog", "accelerators"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "BR100" in res.output and "unknown" in res.output


@pytest.mark.parametrize("alias,key", [("V100", "V100-16GB"), ("V100M16", "V100-16GB"), ("V100M32", "V100-32GB"),
                                       ("P100", "P100"), ("K80", "K80"), ("T4", "T4"), ("A100-40GB", "A100-40GB"),
                                       ("A10", "A10"), ("A800", "A800"), ("L40S", "L40S")])
def test_older_gpus_of_public_traces_resolve(alias: str, key: str) -> None:
    assert accelerator(alias).key == key


def test_older_gpus_have_fp16_not_bf16() -> None:
    v = accelerator("V100-32GB")
    assert v.bf16_tflops.value is None and v.fp16_tflops.value == 125
    assert v.memory_gb.value == 32 and accelerator("V100").memory_gb.value == 16
    assert accelerator("K80").fp16_tflops.value is None  # Kepler: no fast FP16, stays unknown
    assert accelerator("A800").interconnect_bw_gbps.value == 400 < accelerator("A100-80GB").interconnect_bw_gbps.value
    assert accelerator("A100-40GB").memory_bw_gbps.value < accelerator("A100-80GB").memory_bw_gbps.value
