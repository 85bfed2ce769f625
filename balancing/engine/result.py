"""The shape of the engine's result (see the package docstring, *Result*).

A ``TypedDict``, not a class: the result is the plain JSON object ``solve`` has always returned,
stored as it is in ``BalancingRun.result`` and printed by ``python -m balancing.engine``, so
nothing that reads or stores it changes; the type only names its keys for the code around it.
Its parts are keyed by EVSE or node id, which a ``TypedDict`` cannot name: they are dicts.
"""

from typing import TypedDict


class Result(TypedDict):
    """What ``solve`` returns: every key, always."""

    allocations_a: dict[str, float]
    """EVSE id -> A for every EVSE; 0 means paused."""
    node_load_a: dict[str, list[float]]
    """Node id -> the allocated sum below it, A per site phase."""
    node_load_kw: dict[str, float]
    """Node id -> the allocated power below it, kW."""
    paused: list[str]
    """Ids of EVSEs that are active (or fixed) and got 0."""
    notes: list[str]
    """One line per EVSE, ``"<id>: <A> A, <reason>"``."""
    reasons: dict[str, str]
    """EVSE id -> why it got what it got."""
    warnings: list[str]
    """Site-level problems, e.g. a limit overloaded by fixed currents alone."""
