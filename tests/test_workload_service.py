"""ServiceSpec: validation, the replica jobs it makes, sizing by the planner."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from suanli.errors import SpecError
from suanli.workload.service import ServiceSpec


def spec(**kw: object) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": "s", "command": "python -m x", **kw})


def test_replica_jobs_carry_the_port_and_the_priority_rule() -> None:
    s = spec(priority=10, resources={"accelerators": 2}, env={"A": "1"}, max_retries=5)
    r0 = s.replica_job(0, 4242, above_min=False)
    assert (r0.name, r0.kind.value, r0.priority, r0.preemptible, r0.max_retries) == ("s-r0", "serve", 10, False, 5)
    assert r0.env["PORT"] == "4242" and r0.env["A"] == "1" and r0.env["SUANLI_SERVICE"] == "s"
    assert r0.resources.device_count == 2 and r0.command == ["python", "-m", "x"]
    r3 = s.replica_job(3, 4243, above_min=True)  # autoscaled: never preempts batch work, may be preempted
    assert (r3.name, r3.priority, r3.preemptible) == ("s-r3", 0, True)
    assert spec(priority=-5).replica_job(1, 1, above_min=True).priority == -5


def test_defaults_and_durations() -> None:
    s = spec(autoscaling={"stable_window": "2m", "panic_window": "500ms"}, readiness={"period": "250ms"})
    assert s.served_model == "s" and s.initial_replicas == 1 and s.replicas.upper == 1
    assert (s.autoscaling.stable_window, s.autoscaling.panic_window, s.readiness.period) == (120.0, 0.5, 0.25)
    assert spec(model="m", replicas={"min": 0, "max": 3, "initial": 2}).initial_replicas == 2


@pytest.mark.parametrize(("field", "value", "word"), [
    ("replicas", {"min": 3, "max": 2}, "min"),
    ("replicas", {"min": 1, "max": 2, "initial": 5}, "initial"),
    ("rollout", {"max_surge": 0, "max_unavailable": 0}, "progress"),
    ("autoscaling", {"target_ongoing_requests": 0}, "target_ongoing_requests"),
    ("autoscaling", {"stable_window": "1s", "panic_window": "5s"}, "panic_window"),
    ("readiness", {"path": "health"}, "start with"),
    ("env", {"PORT": "1"}, "PORT"),
    ("command", [], "command"),
    ("kind", "batch", "kind"),
])
def test_bad_specs_name_the_field(field: str, value: object, word: str) -> None:
    with pytest.raises(ValidationError) as e:
        spec(**{field: value})
    assert word in str(e.value)


def test_sizing_from_the_planner() -> None:
    s, row = spec(llm="qwen2.5-72b", replicas={"min": 1, "max": 8},
                  plan={"accelerator": "H100", "qps": 5, "input_tokens": 2000, "output_tokens": 500}).with_plan()
    assert row is not None and row["chips_per_replica"] >= 1
    assert s.resources.device_count == row["chips_per_replica"] and s.resources.model == ["H100"]
    assert s.initial_replicas == min(max(row["replicas"], 1), 8)
    with pytest.raises(SpecError, match="llm"):
        spec(plan={"accelerator": "H100", "qps": 5}).with_plan()
    assert spec().with_plan()[1] is None
