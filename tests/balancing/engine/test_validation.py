"""Malformed input raises one clear ProblemError naming the field; the CLI exits 2 with it."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from balancing.engine import ProblemError, check, solve
from tests.balancing.engine.problems import evse, site

REPO = Path(__file__).resolve().parents[3]


def _valid() -> dict[str, Any]:
    return site(
        [100, 100, 100],
        {"id": "panel-1", "parent": "site", "limit_a": [63, 63, 63]},
        {"id": "panel-2", "parent": "site", "limit_a": [63, 63, 63]},
        limit_kw=20.0,
        evses=[evse("CP1", "panel-1"), evse("CP2", "panel-1"), evse("CP3", "panel-2"), evse("CP4", "panel-2")],
    )


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(problem: dict[str, Any]) -> None:
        target = problem
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(problem: dict[str, Any]) -> None:
        target = problem
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown node", _set(["evses", 3, "node"], "panel-9"), "evses[3].node: unknown node 'panel-9'"),
    ("cycle", _set(["nodes", 0, "parent"], "panel-1"), "nodes: need exactly one root"),
    (
        "cycle below root",
        lambda p: p["nodes"].extend(
            [{"id": "x", "parent": "y", "limit_a": [1, 1, 1]}, {"id": "y", "parent": "x", "limit_a": [1, 1, 1]}]
        ),
        "nodes[3].parent: cycle: 'x' -> 'y' -> 'x'",
    ),
    ("two roots", _set(["nodes", 1, "parent"], None), "nodes: need exactly one root (parent null), found 2"),
    ("unknown parent", _set(["nodes", 2, "parent"], "nowhere"), "nodes[2].parent: unknown node 'nowhere'"),
    ("negative limit", _set(["nodes", 1, "limit_a"], [63, -1, 63]), "nodes[1].limit_a[1]: must be a finite number"),
    ("negative kW", _set(["nodes", 0, "limit_kw"], -5), "limit_kw: must be at least 0"),
    ("NaN limit", _set(["nodes", 0, "limit_kw"], math.nan), "nodes[0].limit_kw: must be a finite number"),
    ("inf current", _set(["evses", 0, "max_a"], math.inf), "evses[0].max_a: must be a finite number"),
    ("string current", _set(["evses", 1, "min_a"], "6"), "evses[1].min_a: must be a number, not str"),
    ("bool current", _set(["evses", 1, "max_a"], True), "evses[1].max_a: must be a number, not bool"),
    ("missing max", _delete(["evses", 2, "max_a"]), "evses[2].max_a: required number is missing"),
    ("missing active", _delete(["evses", 2, "active"]), "evses[2].active: required boolean is missing"),
    ("missing voltage", _delete(["voltage_v"]), "voltage_v: required number is missing"),
    ("zero voltage", _set(["voltage_v"], 0), "voltage_v: must be greater than 0"),
    ("missing now", _delete(["now"]), "now: required timestamp is missing"),
    ("naive now", _set(["now"], "2026-05-01T09:00:00"), "now: timestamp must carry a time zone"),
    ("bad departure", _set(["evses", 0, "departure"], "tomorrow"), "evses[0].departure: not an ISO 8601"),
    ("max below min", _set(["evses", 0, "max_a"], 5), "evses[0].max_a: must be at least min_a (6)"),
    ("zero step", _set(["evses", 0, "step_a"], 0), "evses[0].step_a: must be greater than 0"),
    ("zero priority", _set(["evses", 0, "priority"], 0), "evses[0].priority: must be greater than 0"),
    ("unknown phase", _set(["evses", 0, "phases"], ["L4"]), "evses[0].phases: unknown phase 'L4'"),
    ("no phase", _set(["evses", 0, "phases"], []), "evses[0].phases: must be a non-empty list"),
    ("phase twice", _set(["evses", 0, "phases"], ["L1", "L1"]), "evses[0].phases: phase 'L1' listed twice"),
    ("duplicate evse", _set(["evses", 1, "id"], "CP1"), "evses[1].id: duplicate EVSE id 'CP1'"),
    ("duplicate node", _set(["nodes", 2, "id"], "panel-1"), "nodes[2].id: duplicate node id 'panel-1'"),
    ("typo", _set(["nodes", 1, "limit_A"], [10, 10, 10]), "nodes[1].limit_A: unknown field"),
    ("evses not list", _set(["evses"], {"CP1": {}}), "evses: must be a list, not dict"),
    ("evse not object", _set(["evses", 0], "CP1"), "evses[0]: must be an object, not str"),
    ("two limits", _set(["nodes", 1, "limit_a"], [63, 63]), "nodes[1].limit_a: must have 1 (single-phase site) or 3"),
    ("one limit on 3 phases", _set(["nodes", 1, "limit_a"], [63]), "nodes[1].limit_a: 1 value given but the site"),
    ("resume flag", _set(["evses", 0, "resumes_after_pause"], "no"), "evses[0].resumes_after_pause: must be true"),
    ("both spells", lambda p: p["evses"][0].update(paused_since=p["now"], charging_since=p["now"]), "exclusive"),
]


@pytest.mark.parametrize(("mutate", "message"), [(m, s) for _, m, s in CASES], ids=[c[0] for c in CASES])
def test_malformed_problem_raises_one_error_naming_the_field(
    mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    problem = _valid()
    mutate(problem)
    with pytest.raises(ProblemError) as caught:
        solve(problem)
    text = str(caught.value)
    assert message in text or (message == "exclusive" and "not both" in text), text
    assert isinstance(caught.value, ValueError)
    assert "\n" not in text


def test_a_phase_a_single_phase_site_lacks_is_rejected() -> None:
    problem = site([40], evses=[evse("CP1"), evse("CP2", phases=("L2",))])
    with pytest.raises(ProblemError, match=r"^evses\[1\]\.phases: phase 'L2' does not exist on this single-phase"):
        solve(problem)


def test_a_single_phase_site_may_write_three_limits_with_unused_ones() -> None:
    short = site([40], evses=[evse("CP1"), evse("CP2")])
    long = site([40, 0, 0], evses=[evse("CP1"), evse("CP2")], phases=1)
    assert solve(short)["allocations_a"] == solve(long)["allocations_a"] == {"CP1": 20, "CP2": 20}
    assert solve(long)["node_load_a"]["site"] == [40]


def test_the_valid_base_problem_solves_cleanly() -> None:
    problem = _valid()
    result = solve(problem)
    assert check(problem, result) == []
    assert solve(copy.deepcopy(problem)) == result


def test_check_reports_an_allocation_over_a_limit_and_off_its_step() -> None:
    problem = _valid()
    result = solve(problem)
    bad = {**result, "allocations_a": {**result["allocations_a"], "CP1": 50.5, "CP4": -1}}
    violations = check(problem, bad)
    assert any("node panel-1 L1" in v and "> limit 63 A" in v for v in violations)
    assert any("not a multiple of step_a" in v for v in violations)
    assert any("above the allowed 32 A" in v for v in violations)
    assert any("CP4" in v and "finite current >= 0" in v for v in violations)
    assert check(problem, {**result, "allocations_a": {"CP1": 6}})[0] == "allocations_a['CP2']: missing"


def _cli(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancing.engine"], input=stdin, capture_output=True, text=True, cwd=REPO, check=False
    )


def test_cli_prints_the_result_json() -> None:
    problem = _valid()
    done = _cli(json.dumps(problem))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == solve(problem)


def test_cli_exits_2_with_the_field_on_one_line_for_a_malformed_problem() -> None:
    problem = _valid()
    problem["evses"][3]["node"] = "panel-9"
    done = _cli(json.dumps(problem))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: evses[3].node: unknown node 'panel-9'\n"


@pytest.mark.parametrize("text", ["{not json", '{"voltage_v": NaN}', "[1, 2]", ""])
def test_cli_exits_2_on_input_that_is_not_a_problem(text: str) -> None:
    done = _cli(text)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1


def test_the_engine_imports_nothing_from_django_or_numeric_libraries() -> None:
    code = (
        "import json, sys, balancing.engine; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'django', 'celery', 'numpy', 'scipy', 'evplatform', 'tenants'})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(done.stdout) == []
