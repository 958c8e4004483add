"""``suanli plan migrate``: a report's work re-planned on other chip types, checked by hand (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suanli.accounting.migrate import migrate, read_report
from suanli.cli.main import app


def report(tmp_path: Path) -> Path:
    p = tmp_path / "usage.json"
    p.write_text(json.dumps({
        "context": {"since": 0.0, "until": 10 * 86400.0}, "by": ["tenant"], "rows": [],
        "by_model": [{"model": "H100", "chip_hours": 12_500.0, "useful_chip_hours": 10_000.0}]}))
    return p


def test_migrate_by_hand(tmp_path: Path) -> None:
    useful, alloc, window = read_report(report(tmp_path))
    assert useful == {"H100": 10_000.0} and alloc == {"H100": 12_500.0} and window == 10 * 86400.0
    rows = {r["accelerator"]: r for r in migrate(useful, alloc, ["B200", "BR100", "C550"], window_s=window)}
    src, b = rows["H100"], rows["B200"]
    assert src["role"] == "source" and src["chip_hours"] == 12_500.0
    # no --llm: speeds by BF16 dense peak (catalog: H100 989, B200 2,250 TFLOPS)
    assert b["useful_chip_hours"] == pytest.approx(10_000 * 989 / 2250)
    alloc_b = 10_000 * 989 / 2250 / 0.8  # the report's goodput (0.8) kept
    assert b["chip_hours"] == pytest.approx(alloc_b)
    assert b["chips_needed"] == 29  # 5,494 chip-h in 10 days at 80% utilisation: 28.6 -> 29
    # energy: TDP 1,000 W x (0.3 + 0.7 x 0.6) x PUE 1.3; dollars: $40,000 over 4 years at 80% + $0.10/kWh
    kwh = alloc_b * 1000 * 0.72 * 1.3 / 1000
    assert b["energy_kwh"] == pytest.approx(kwh)
    assert b["usd"] == pytest.approx(alloc_b * 40_000 / (4 * 8760 * 0.8) + kwh * 0.10)
    assert b["confidence"] == "low"
    assert rows["BR100"]["usd"] is None and rows["BR100"]["energy_kwh"] is not None  # price unknown: not zero
    assert rows["C550"]["chip_hours"] is None and "unknown" in rows["C550"]["reason"]  # BF16 peak unpublished


def test_migrate_cli_json_and_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["plan", "migrate", "--from-report", str(report(tmp_path)), "--to", "H200,B200",
                                   "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["accelerator"] for r in rows] == ["H100", "H200", "B200"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"tenant": "a", "chip_hours": 1.0}], "by": ["tenant"]}))
    for args, needle in ((["--from-report", str(bad), "--to", "B200"], "no rows by accelerator model"),
                         (["--from-report", str(tmp_path / "nope.json"), "--to", "B200"], "no such file"),
                         (["--from-report", str(report(tmp_path)), "--to", "Z9000"], "Z9000")):
        r = subprocess.run([sys.executable, "-m", "suanli.cli.main", "plan", "migrate", *args],
                           capture_output=True, text=True, timeout=60)
        err = " ".join(r.stderr.split())  # the console wraps long lines
        assert r.returncode == 2 and needle in err and "Traceback" not in err and err.count("error:") == 1, err


def test_migrate_the_twins_report(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["sim", "--chips", "32", "--jobs", "100", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["plan", "migrate", "--from-report", str(tmp_path / "usage-fifo" / "usage.json"),
                                   "--to", "910B", "--json"])
    assert res.exit_code == 0, res.output
    src, tgt = json.loads(res.output)
    assert src["accelerator"] == "H100" and tgt["accelerator"] == "910B"
    assert tgt["useful_chip_hours"] == pytest.approx(src["useful_chip_hours"] * 989 / 376)


def test_the_mix_comes_from_the_usage_records(tmp_path: Path) -> None:
    """Jobs name their LLM; the records carry it; `suanli report --out` writes the mix; `plan migrate` re-plans
    each part at its own LLM's speeds without --llm (--llm still overrides)."""
    from suanli.control import db
    from suanli.control.store import Step, Store
    from suanli.control.types import AttemptOutcome
    from suanli.perf.api import relative_speed
    from suanli.workload.spec import JobSpec
    from suanli.workload.states import JobState

    url = db.sqlite_url(tmp_path / "m.db")
    store = Store.open(url)
    store.ensure_defaults()
    t0 = 1_700_000_000.0

    def run(name: str, llm: str | None, kind: str, model: str, chips: int, hours: float) -> None:
        spec = JobSpec.model_validate({"name": name, "command": ["true"], "kind": kind,
                                       **({"llm": llm} if llm else {})})
        jid = int(store.submit(spec)["id"])
        aid, _ = store.begin_attempt(jid, t0, {"nodes": [f"{model}-0"], "local": [list(range(chips))],
                                               "milli": 1000, "model": model}, "t")
        store.finish_attempt(jid, aid, t0 + hours * 3600, AttemptOutcome.SUCCEEDED, 0, None,
                             [Step(JobState.RUNNING, JobState.SUCCEEDED, "ok")])

    run("pre", "qwen2.5-7b", "train", "H100", 8, 10.0)  # 80 useful H100 chip-hours of qwen2.5-7b training
    run("chat", "qwen2.5-72b", "serve", "H100", 4, 5.0)  # 20 of qwen2.5-72b serving
    run("misc", None, "batch", "H100", 2, 5.0)  # 10 without an LLM: BF16 peaks
    store.close()
    assert {r["llm"] for r in Store.open(url).usage_records()} == {"qwen2.5-7b", "qwen2.5-72b", ""}
    out = tmp_path / "month"
    res = CliRunner().invoke(app, ["report", "--db", url, "--since", "2023-11-01", "--until", "2023-12-01",
                                   "--by", "llm", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    by_llm = {r["llm"]: r["chip_hours"] for r in json.loads(res.output[: res.output.rindex("]") + 1])}
    assert by_llm == pytest.approx({"qwen2.5-7b": 80.0, "qwen2.5-72b": 20.0, "": 10.0})
    mix = json.loads((out / "usage.json").read_text())["mix"]
    assert {(r["llm"], r["kind"], r["model"]) for r in mix} == {("qwen2.5-7b", "train", "H100"),
                                                                ("qwen2.5-72b", "serve", "H100"), ("", "batch", "H100")}
    res = CliRunner().invoke(app, ["plan", "migrate", "--from-report", str(out / "usage.json"), "--to", "910B",
                                   "--json"])
    assert res.exit_code == 0, res.output
    src, tgt = json.loads(res.output)
    train = relative_speed(["H100", "910B"], "qwen2.5-7b", "train")
    serve = relative_speed(["H100", "910B"], "qwen2.5-72b", "serve")
    peak = relative_speed(["H100", "910B"])
    want = {"qwen2.5-7b": 80 * train["H100"] / train["910B"], "qwen2.5-72b": 20 * serve["H100"] / serve["910B"],
            "": 10 * peak["H100"] / peak["910B"]}
    assert tgt["mix"] == pytest.approx(want)
    assert tgt["useful_chip_hours"] == pytest.approx(sum(want.values()))
    assert src["useful_chip_hours"] == pytest.approx(110.0) and tgt["confidence"] == "low"  # the part without LLM
    # --llm overrides the mix: all of it at qwen2.5-7b training speeds
    res = CliRunner().invoke(app, ["plan", "migrate", "--from-report", str(out / "usage.json"), "--to", "910B",
                                   "--llm", "qwen2.5-7b", "--json"])
    tgt = json.loads(res.output)[1]
    assert tgt["useful_chip_hours"] == pytest.approx(110 * train["H100"] / train["910B"])
    # an LLM the catalog does not know: BF16 peaks, with a note (not an error)
    rows = migrate({"H100": 10.0}, {"H100": 10.0}, ["910B"], mix=[
        {"llm": "my-own-model", "kind": "train", "model": "H100", "useful": 10.0, "alloc": 10.0}])
    assert rows[1]["useful_chip_hours"] == pytest.approx(10 * peak["H100"] / peak["910B"])
    assert "my-own-model" in rows[1]["notes"][0]
