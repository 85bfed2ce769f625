"""Parse and validate a problem dict into frozen dataclasses the solver can trust.

Validation is strict on purpose: a mistyped key such as ``limit_A`` silently ignored would
mean no limit at all, so unknown keys are errors too. Every error names the field by its
path in the input (``evses[3].node``) so the caller can fix the one thing that is wrong.
Nodes and EVSEs are sorted by id here, which makes everything downstream independent of
the order of the input lists.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

PHASE_NAMES = ("L1", "L2", "L3")
_PHASE_INDEX = {name: i for i, name in enumerate(PHASE_NAMES)}

DEFAULT_MIN_ON_S = 300.0
DEFAULT_MIN_OFF_S = 300.0
DEFAULT_UNUSED_MARGIN_A = 2.0
DEFAULT_PERIOD_S = 300.0
DEFAULT_STEP_A = 1.0
DEFAULT_PRIORITY = 1.0

_PROBLEM_KEYS = frozenset(
    {
        "voltage_v",
        "nodes",
        "evses",
        "now",
        "phases",
        "min_on_s",
        "min_off_s",
        "unused_margin_a",
        "period_s",
        "deadline_first",
        "max_raise_a",
    }
)
_NODE_KEYS = frozenset({"id", "parent", "limit_a", "limit_kw"})
_EVSE_KEYS = frozenset(
    {
        "id",
        "node",
        "phases",
        "min_a",
        "max_a",
        "step_a",
        "ev_max_a",
        "measured_a",
        "offered_a",
        "priority",
        "energy_needed_kwh",
        "departure",
        "active",
        "paused_since",
        "charging_since",
        "session_kwh",
        "fixed_a",
        "resumes_after_pause",
    }
)


class ProblemError(ValueError):
    """Malformed problem input; ``field`` is the path of the offending field, e.g. ``evses[3].node``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Node(NamedTuple):
    """One node of the site tree; limits are per site phase (A) and for the whole subtree (kW)."""

    id: str
    parent: str | None
    limit_a: tuple[float | None, ...]
    limit_kw: float | None


class Evse(NamedTuple):
    """One charging point (connector) with the state the glue knows about it; currents in A.

    A NamedTuple rather than a frozen dataclass: as immutable, and five times cheaper to
    build, which matters at 10,000 EVSEs a call."""

    id: str
    node: str
    phases: tuple[int, ...]
    min_a: float
    max_a: float
    active: bool
    step_a: float = DEFAULT_STEP_A
    ev_max_a: float | None = None
    measured_a: float | None = None
    offered_a: float | None = None
    priority: float = DEFAULT_PRIORITY
    energy_needed_kwh: float | None = None
    departure: datetime | None = None
    paused_since: datetime | None = None
    charging_since: datetime | None = None
    session_kwh: float | None = None
    fixed_a: float | None = None
    resumes_after_pause: bool = True


@dataclass(frozen=True, slots=True)
class Problem:
    """A validated problem: nodes and EVSEs sorted by id, times timezone-aware."""

    voltage_v: float
    phase_count: int
    nodes: tuple[Node, ...]
    evses: tuple[Evse, ...]
    now: datetime
    min_on_s: float
    min_off_s: float
    unused_margin_a: float
    period_s: float
    root: str
    deadline_first: bool = True
    max_raise_a: float | None = None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _number(obj: dict[str, Any], key: str, path: str, *, required: bool) -> float | None:
    """Read a finite number >= 0; booleans are rejected although Python treats them as ints."""
    value = obj.get(key)
    if value is None:
        if required:
            raise ProblemError(f"{path}.{key}" if path else key, "required number is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProblemError(f"{path}.{key}" if path else key, f"must be a number, not {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ProblemError(f"{path}.{key}" if path else key, f"must be a finite number, not {value!r}")
    if number < 0:
        raise ProblemError(f"{path}.{key}" if path else key, f"must be at least 0, not {value!r}")
    return number


def _required_number(obj: dict[str, Any], key: str, path: str) -> float:
    value = _number(obj, key, path, required=True)
    if value is None:  # pragma: no cover - required=True raises instead
        raise ProblemError(f"{path}.{key}" if path else key, "required number is missing")
    return value


def _time(obj: dict[str, Any], key: str, path: str, *, required: bool) -> datetime | None:
    value = obj.get(key)
    field = f"{path}.{key}" if path else key
    if value is None:
        if required:
            raise ProblemError(field, "required timestamp is missing")
        return None
    if not isinstance(value, str):
        raise ProblemError(field, f"must be an ISO 8601 timestamp string, not {_type_name(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProblemError(field, f"not an ISO 8601 timestamp: {value!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ProblemError(field, f"timestamp must carry a time zone (e.g. 'Z' or '+02:00'): {value!r}")
    return moment


def _text(obj: dict[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    field = f"{path}.{key}"
    if value is None:
        raise ProblemError(field, "required string is missing")
    if not isinstance(value, str) or not value:
        raise ProblemError(field, f"must be a non-empty string, not {value!r}")
    return value


def _check_keys(obj: object, allowed: frozenset[str], path: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ProblemError(path or "problem", f"must be an object, not {_type_name(obj)}")
    unknown = obj.keys() - allowed
    if unknown:
        name = sorted(str(key) for key in unknown)[0]
        where = f"{path}.{name}" if path else name
        raise ProblemError(where, f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return obj


def _limit_a(node: dict[str, Any], path: str) -> list[float | None] | None:
    value = node.get("limit_a")
    if value is None:
        return None
    field = f"{path}.limit_a"
    if not isinstance(value, list):
        raise ProblemError(field, f"must be a list of per-phase limits [L1, L2, L3] in A, not {_type_name(value)}")
    if len(value) not in (1, 3):
        raise ProblemError(field, f"must have 1 (single-phase site) or 3 values, not {len(value)}")
    limits: list[float | None] = []
    for i, entry in enumerate(value):
        cls = entry.__class__
        if (cls is float or cls is int) and 0 <= entry < _INF:
            limits.append(float(entry))
            continue
        if entry is None:
            limits.append(None)
            continue
        if isinstance(entry, bool) or not isinstance(entry, int | float):
            raise ProblemError(f"{field}[{i}]", f"must be a number or null, not {_type_name(entry)}")
        number = float(entry)
        if not math.isfinite(number) or number < 0:
            raise ProblemError(f"{field}[{i}]", f"must be a finite number >= 0, not {entry!r}")
        limits.append(number)
    return limits


def _parse_nodes(raw: object, phase_hint: int | None) -> tuple[tuple[Node, ...], str, int]:
    if not isinstance(raw, list):
        raise ProblemError("nodes", f"must be a list of nodes, not {_type_name(raw)}")
    if not raw:
        raise ProblemError("nodes", "must hold at least the root node")
    parsed: list[tuple[str, str | None, list[float | None] | None, float | None, str]] = []
    seen: dict[str, str] = {}
    roots: list[str] = []
    for i, item in enumerate(raw):
        path = f"nodes[{i}]"
        node = item if item.__class__ is dict and item.keys() <= _NODE_KEYS else _check_keys(item, _NODE_KEYS, path)
        node_id = node.get("id")
        if node_id.__class__ is not str or not node_id:
            node_id = _text(node, "id", path)
        if node_id in seen:
            raise ProblemError(f"{path}.id", f"duplicate node id {node_id!r} (also {seen[node_id]})")
        seen[node_id] = path
        parent = node.get("parent")
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise ProblemError(f"{path}.parent", f"must be a node id or null, not {parent!r}")
        if parent is None:
            roots.append(node_id)
        parsed.append((node_id, parent, _limit_a(node, path), _number(node, "limit_kw", path, required=False), path))
    if len(roots) != 1:
        which = ", ".join(repr(r) for r in roots) if roots else "none"
        raise ProblemError("nodes", f"need exactly one root (parent null), found {len(roots)}: {which}")
    root = roots[0]
    parent_of = {node_id: parent for node_id, parent, _, _, _ in parsed}
    for _, parent, _, _, path in parsed:
        if parent is not None and parent not in parent_of:
            raise ProblemError(f"{path}.parent", f"unknown node {parent!r}")
    if not _all_reach(root, parent_of):
        _reject_cycles(parent_of, {node_id: path for node_id, _, _, _, path in parsed})

    if phase_hint is not None:
        phase_count = phase_hint
    else:
        root_limit = next(limit for node_id, _, limit, _, _ in parsed if node_id == root)
        phase_count = 1 if root_limit is not None and len(root_limit) == 1 else 3
    nodes = []
    for node_id, parent, limit, limit_kw, path in parsed:
        if limit is None:
            per_phase: tuple[float | None, ...] = (None,) * phase_count
        elif len(limit) == 1 and phase_count == 3:
            raise ProblemError(f"{path}.limit_a", "1 value given but the site has 3 phases: give [L1, L2, L3]")
        else:
            per_phase = tuple(limit[:phase_count])
        nodes.append(Node(node_id, parent, per_phase, limit_kw))
    nodes.sort(key=_by_id)
    return tuple(nodes), root, phase_count


def _all_reach(root: str, parent_of: dict[str, str | None]) -> bool:
    """Whether every node is below ``root`` (the cheap test; ``_reject_cycles`` names the cycle)."""
    children: dict[str, list[str]] = {}
    for node_id, parent in parent_of.items():
        if parent is not None:
            children.setdefault(parent, []).append(node_id)
    order = [root]
    for node_id in order:
        order.extend(children.get(node_id, ()))
    return len(order) == len(parent_of)


def _reject_cycles(parent_of: dict[str, str | None], path_of: dict[str, str]) -> None:
    """Every node must reach the root; with one root, a node that cannot sits on a cycle."""
    reaches_root: set[str] = set()
    for start in sorted(parent_of):
        trail: list[str] = []
        on_trail: set[str] = set()
        node: str | None = start
        while node is not None and node not in reaches_root:
            if node in on_trail:
                cycle = [*trail[trail.index(node) :], node]
                raise ProblemError(f"{path_of[node]}.parent", "cycle: " + " -> ".join(repr(n) for n in cycle))
            trail.append(node)
            on_trail.add(node)
            node = parent_of[node]
        reaches_root.update(trail)


def _parse_phases(value: object, path: str, phase_count: int) -> tuple[int, ...]:
    field = f"{path}.phases"
    if value is None:
        raise ProblemError(field, "required list of phases is missing")
    if not isinstance(value, list) or not value:
        raise ProblemError(field, f"must be a non-empty list such as ['L1'] or ['L1', 'L2', 'L3'], not {value!r}")
    indices: list[int] = []
    for entry in value:
        index = _PHASE_INDEX.get(entry) if isinstance(entry, str) else None
        if index is None:
            raise ProblemError(field, f"unknown phase {entry!r} (use 'L1', 'L2', 'L3')")
        if index in indices:
            raise ProblemError(field, f"phase {entry!r} listed twice")
        if index >= phase_count:
            raise ProblemError(field, f"phase {entry!r} does not exist on this single-phase site (only 'L1')")
        indices.append(index)
    return tuple(sorted(indices))


_OPTIONAL_NUMBERS = ("ev_max_a", "measured_a", "offered_a", "energy_needed_kwh", "session_kwh", "fixed_a")
_OPTIONAL_TIMES = ("departure", "paused_since", "charging_since")
_INF = math.inf
_by_id = operator.itemgetter(0)
"""Sort key of a ``Node`` or an ``Evse``: its id (the first field)."""


def _phase_table(phase_count: int) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Every valid ``phases`` list (any order) for the site, so the common case is one lookup."""
    names = PHASE_NAMES[:phase_count]
    table: dict[tuple[str, ...], tuple[int, ...]] = {}
    for mask in range(1, 1 << phase_count):
        chosen = [k for k in range(phase_count) if mask >> k & 1]
        for order in itertools.permutations(chosen):
            table[tuple(names[k] for k in order)] = tuple(chosen)
    return table


def _is_amps(value: object) -> bool:
    """Fast path: an int or float in [0, inf); NaN fails the comparison and takes the slow path."""
    cls = value.__class__
    return (cls is float or cls is int) and 0 <= value < _INF  # type: ignore[operator]


def _amps_or_none(value: object) -> float | None:
    """``value`` as a float if it is a well-formed current, else None (then the full parser reports it)."""
    cls = value.__class__
    if (cls is float or cls is int) and 0 <= value < _INF:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    return None


def _time_or_none(value: object) -> datetime | None:
    """``value`` as an aware datetime if it is a well-formed timestamp, else None."""
    if value.__class__ is not str:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    return moment


def _fast_evse(item: object, node_ids: set[str], phase_table: dict[tuple[str, ...], tuple[int, ...]]) -> Evse | None:
    """The EVSE of a well-formed ``item`` without building error paths, or None if anything is unusual.

    None sends the item through ``_parse_evse``, which accepts it too (the same EVSE) or
    raises the error naming the field, so errors and their order do not depend on this path.
    """
    if item.__class__ is not dict:
        return None
    evse: dict[str, Any] = item
    get = evse.get
    evse_id = get("id")
    node = get("node")
    if evse_id.__class__ is not str or not evse_id or node.__class__ is not str or node not in node_ids:
        return None
    raw_phases = get("phases")
    if raw_phases.__class__ is not list:
        return None
    try:
        phases = phase_table.get(tuple(raw_phases))
    except TypeError:
        return None
    min_a: Any = get("min_a")
    max_a: Any = get("max_a")
    active = get("active")
    cls = min_a.__class__
    if phases is None or not ((cls is float or cls is int) and 0 <= min_a < _INF) or active.__class__ is not bool:
        return None
    cls = max_a.__class__
    if not ((cls is float or cls is int) and min_a <= max_a < _INF):
        return None
    present = 6  # keys read so far; if that is all the dict holds, no key is unknown
    step_a: Any = get("step_a")
    if step_a is None:
        step_a = DEFAULT_STEP_A
    else:
        cls = step_a.__class__
        if not ((cls is float or cls is int) and 0 < step_a < _INF):
            return None
        step_a = float(step_a)
        present += 1
    priority: Any = get("priority")
    if priority is None:
        priority = DEFAULT_PRIORITY
    else:
        cls = priority.__class__
        if not ((cls is float or cls is int) and 0 < priority < _INF):
            return None
        priority = float(priority)
        present += 1
    ev_max_a: Any = get("ev_max_a")
    if ev_max_a is not None:
        cls = ev_max_a.__class__
        if not ((cls is float or cls is int) and 0 <= ev_max_a < _INF):
            return None
        ev_max_a = float(ev_max_a)
        present += 1
    if len(evse) == present:
        return Evse(evse_id, node, phases, float(min_a), float(max_a), active, step_a, ev_max_a, priority=priority)
    if not evse.keys() <= _EVSE_KEYS:
        return None
    numbers: list[float | None] = []
    for key in ("measured_a", "offered_a", "energy_needed_kwh", "session_kwh", "fixed_a"):
        value = get(key)
        if value is not None:
            value = _amps_or_none(value)
            if value is None:
                return None
        numbers.append(value)
    times: list[datetime | None] = []
    for key in _OPTIONAL_TIMES:
        value = get(key)
        if value is not None:
            value = _time_or_none(value)
            if value is None:
                return None
        times.append(value)
    departure, paused_since, charging_since = times
    if paused_since is not None and charging_since is not None:
        return None
    resumes = get("resumes_after_pause")
    if resumes is None:
        resumes = True
    elif resumes.__class__ is not bool:
        return None
    measured_a, offered_a, energy_needed_kwh, session_kwh, fixed_a = numbers
    return Evse(
        evse_id,
        node,
        phases,
        float(min_a),
        float(max_a),
        active,
        step_a,
        ev_max_a,
        measured_a=measured_a,
        offered_a=offered_a,
        priority=priority,
        energy_needed_kwh=energy_needed_kwh,
        departure=departure,
        paused_since=paused_since,
        charging_since=charging_since,
        session_kwh=session_kwh,
        fixed_a=fixed_a,
        resumes_after_pause=resumes,
    )


def _parse_evse(
    item: object, i: int, node_ids: set[str], phase_count: int, phase_table: dict[tuple[str, ...], tuple[int, ...]]
) -> Evse:
    path = f"evses[{i}]"
    if not isinstance(item, dict) or not item.keys() <= _EVSE_KEYS:
        _check_keys(item, _EVSE_KEYS, path)
    evse: dict[str, Any] = item  # type: ignore[assignment]
    evse_id = evse.get("id")
    if evse_id.__class__ is not str or not evse_id:
        evse_id = _text(evse, "id", path)
    node = evse.get("node")
    if node.__class__ is not str or node not in node_ids:
        if node is None:
            raise ProblemError(f"{path}.node", "required node id is missing")
        if not isinstance(node, str):
            raise ProblemError(f"{path}.node", f"must be a node id string, not {_type_name(node)}")
        raise ProblemError(f"{path}.node", f"unknown node {node!r}")
    raw_phases = evse.get("phases")
    phases = None
    if isinstance(raw_phases, list):
        try:
            phases = phase_table.get(tuple(raw_phases))
        except TypeError:
            phases = None
    if phases is None:
        phases = _parse_phases(raw_phases, path, phase_count)
    min_a: float = evse.get("min_a")  # type: ignore[assignment]
    if not _is_amps(min_a):
        min_a = _required_number(evse, "min_a", path)
    max_a: float = evse.get("max_a")  # type: ignore[assignment]
    if not _is_amps(max_a):
        max_a = _required_number(evse, "max_a", path)
    if max_a < min_a:
        raise ProblemError(f"{path}.max_a", f"must be at least min_a ({min_a:g}), not {max_a:g}")
    active = evse.get("active")
    if active.__class__ is not bool:
        if active is None:
            raise ProblemError(f"{path}.active", "required boolean is missing")
        raise ProblemError(f"{path}.active", f"must be true or false, not {_type_name(active)}")
    options: dict[str, Any] = {}
    step_a = evse.get("step_a")
    if step_a is not None:
        if not _is_amps(step_a):
            step_a = _required_number(evse, "step_a", path)
        if step_a <= 0:
            raise ProblemError(f"{path}.step_a", f"must be greater than 0, not {step_a:g}")
        options["step_a"] = float(step_a)
    priority = evse.get("priority")
    if priority is not None:
        if not _is_amps(priority):
            priority = _required_number(evse, "priority", path)
        if priority <= 0:
            raise ProblemError(f"{path}.priority", f"must be greater than 0, not {priority:g}")
        options["priority"] = float(priority)
    for key in _OPTIONAL_NUMBERS:
        value = evse.get(key)
        if value is not None:
            options[key] = float(value) if _is_amps(value) else _required_number(evse, key, path)
    for key in _OPTIONAL_TIMES:
        if evse.get(key) is not None:
            options[key] = _time(evse, key, path, required=False)
    resumes = evse.get("resumes_after_pause")
    if resumes is not None:
        if not isinstance(resumes, bool):
            raise ProblemError(f"{path}.resumes_after_pause", f"must be true or false, not {_type_name(resumes)}")
        options["resumes_after_pause"] = resumes
    if "paused_since" in options and "charging_since" in options:
        raise ProblemError(f"{path}.paused_since", "give paused_since or charging_since, not both")
    return Evse(id=evse_id, node=node, phases=phases, min_a=float(min_a), max_a=float(max_a), active=active, **options)


def parse_problem(raw: object) -> Problem:
    """Validate ``raw`` (decoded JSON) and return the sorted, typed problem, or raise ProblemError."""
    problem = _check_keys(raw, _PROBLEM_KEYS, "")
    voltage_v = _required_number(problem, "voltage_v", "")
    if voltage_v <= 0:
        raise ProblemError("voltage_v", f"must be greater than 0, not {voltage_v:g}")
    phase_hint = problem.get("phases")
    if phase_hint is not None and (isinstance(phase_hint, bool) or phase_hint not in (1, 3)):
        raise ProblemError("phases", f"must be 1 or 3, not {phase_hint!r}")
    now = _time(problem, "now", "", required=True)
    if now is None:  # pragma: no cover - required=True raises instead
        raise ProblemError("now", "required timestamp is missing")
    nodes, root, phase_count = _parse_nodes(problem.get("nodes"), phase_hint)
    raw_evses = problem.get("evses")
    if raw_evses is None:
        raise ProblemError("evses", "required list is missing (use [] for none)")
    if not isinstance(raw_evses, list):
        raise ProblemError("evses", f"must be a list, not {_type_name(raw_evses)}")
    node_ids = {node.id for node in nodes}
    table = _phase_table(phase_count)
    evses = [
        _fast_evse(item, node_ids, table) or _parse_evse(item, i, node_ids, phase_count, table)
        for i, item in enumerate(raw_evses)
    ]
    if len({evse.id for evse in evses}) != len(evses):
        seen: dict[str, int] = {}
        for i, evse in enumerate(evses):
            if evse.id in seen:
                raise ProblemError(f"evses[{i}].id", f"duplicate EVSE id {evse.id!r} (also evses[{seen[evse.id]}])")
            seen[evse.id] = i
    evses.sort(key=_by_id)

    def option(key: str, default: float) -> float:
        value = _number(problem, key, "", required=False)
        return default if value is None else value

    period_s = option("period_s", DEFAULT_PERIOD_S)
    if period_s <= 0:
        raise ProblemError("period_s", f"must be greater than 0, not {period_s:g}")
    deadline_first = problem.get("deadline_first", True)
    if not isinstance(deadline_first, bool):
        raise ProblemError("deadline_first", f"must be true or false, not {_type_name(deadline_first)}")
    max_raise_a = _number(problem, "max_raise_a", "", required=False)
    if max_raise_a is not None and max_raise_a <= 0:
        raise ProblemError("max_raise_a", f"must be greater than 0, not {max_raise_a:g}")
    return Problem(
        deadline_first=deadline_first,
        max_raise_a=max_raise_a,
        voltage_v=voltage_v,
        phase_count=phase_count,
        nodes=nodes,
        evses=tuple(evses),
        now=now,
        min_on_s=option("min_on_s", DEFAULT_MIN_ON_S),
        min_off_s=option("min_off_s", DEFAULT_MIN_OFF_S),
        unused_margin_a=option("unused_margin_a", DEFAULT_UNUSED_MARGIN_A),
        period_s=period_s,
        root=root,
    )
