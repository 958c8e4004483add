from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from suanli.cli.main import app


def test_demo_json_places_jobs() -> None:
    res = CliRunner().invoke(app, ["demo", "--chips", "256", "--jobs", "300", "--json", "--rounds", "5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["cluster"]["devices"] == 256 and out["placements"] > 0
    assert out["rounds"][0]["utilization"] > 0.5


def test_demo_same_seed_same_result() -> None:
    args = ["demo", "--chips", "128", "--jobs", "200", "--json", "--policy", "fair", "--seed", "3"]
    a = json.loads(CliRunner().invoke(app, args).output)
    b = json.loads(CliRunner().invoke(app, args).output)
    for r in a["rounds"] + b["rounds"]:
        r.pop("pass_ms")
    a.pop("mean_pass_ms"), b.pop("mean_pass_ms")
    assert a == b


def test_bad_input_is_one_line_without_traceback() -> None:
    for args in (["demo", "--policy", "nope"], ["demo", "--cluster", "/no/such.yaml"], ["demo", "--models", "X9"]):
        p = subprocess.run([sys.executable, "-m", "suanli.cli.main", *args], capture_output=True, text=True)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr and p.stderr.startswith("error:")
