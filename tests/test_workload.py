from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suanli.errors import SpecError
from suanli.specfile import parse_yaml
from suanli.workload import TRANSITIONS, JobSpec, JobState, check_transition
from suanli.workload.states import TERMINAL, InvalidTransition

JOB = """\
name: llama-sft
tenant: nlp
queue: research
priority: 10
kind: train
resources: {accelerators: 16, model: [br100, H100-SXM], per_node: 8, cpu: 64, memory: 512Gi}
expected_runtime: 6h
command: python train.py --epochs 3
env: {EPOCHS: 3}
"""


def test_jobspec_from_yaml() -> None:
    spec = parse_yaml(JOB, JobSpec, "job.yaml")
    j = spec.to_job(7, submit_time=5.0)
    assert (j.count, j.models, j.per_node, j.gang) == (16, ("BR100", "H100"), 8, True)
    assert j.expected_runtime == 6 * 3600 and j.cpu_milli == 64_000 and j.mem_mib == 512 * 1024
    assert spec.command == ["python", "train.py", "--epochs", "3"] and spec.env == {"EPOCHS": "3"}


def test_fractional_request() -> None:
    j = JobSpec(name="dev", resources={"accelerators": 0.25}).to_job(1)
    assert (j.count, j.milli, j.gang) == (1, 250, False)
    assert JobSpec(name="x", resources={"milli": 300}).to_job(2).milli == 300


@pytest.mark.parametrize("body,msg", [
    ("name: x\nresources: {accelerators: 1.5}\n", "whole number"),
    ("name: x\nresources: {accelerators: 2, per_node: 4}\n", "per_node"),
    ("name: x\nresources: {model: [X9]}\n", "unknown accelerator"),
    ("name: 'bad name!'\n", "job.yaml:1: name"),
    ("name: x\nexpected_runtime: soon\n", "job.yaml:2: expected_runtime"),
    ("name: x\npriority: 5000\n", "job.yaml:2: priority"),
])
def test_bad_job_specs(body: str, msg: str) -> None:
    with pytest.raises((SpecError, KeyError)) as e:
        parse_yaml(body, JobSpec, "job.yaml")
    assert msg in str(e.value)


def test_state_machine() -> None:
    assert check_transition("pending", "running") is JobState.RUNNING
    with pytest.raises(InvalidTransition, match="from succeeded to running"):
        check_transition(JobState.SUCCEEDED, JobState.RUNNING)
    for t in TERMINAL:
        assert not TRANSITIONS[t]


@given(st.lists(st.sampled_from(list(JobState)), max_size=12))
def test_every_walk_through_the_machine_stops_at_terminal_states(path: list[JobState]) -> None:
    cur = JobState.PENDING
    for nxt in path:
        if nxt in TRANSITIONS[cur]:
            cur = check_transition(cur, nxt)
        else:
            with pytest.raises(InvalidTransition):
                check_transition(cur, nxt)
    if cur in TERMINAL:
        assert all(not TRANSITIONS[cur] for _ in [0])
