"""The balancing engine: share a site's electrical capacity among its EV chargers.

Pure Python, no Django, no I/O: JSON-compatible dicts in, dicts out, so it runs the same in
the Celery task, in the tests, in ACN-Sim and on the command line
(``python -m balancing.engine < problem.json``). Entry points:

- ``solve(problem) -> result``; raises ``ProblemError`` (a ``ValueError``) naming the field
  when the input is malformed, e.g. ``evses[3].node: unknown node 'panel-9'``.
- ``check(problem, result) -> list[str]``: the invariants every result must keep, checked
  independently of the solver (empty list = valid). Call it before pushing profiles.

Problem
-------
Top level:

- ``voltage_v`` (number > 0, required): line-to-neutral volts, for kW <-> A.
- ``now`` (ISO 8601 timestamp with zone, required): the time of this run.
- ``nodes`` (list, required): the site tree, exactly one root (``parent`` null), no cycles.
- ``evses`` (list, required; ``[]`` allowed): the charging points.
- ``phases`` (1 or 3, optional): phases of the site. Default: 1 if the root's ``limit_a``
  has one value, else 3. On a single-phase site only ``L1`` exists.
- ``min_on_s`` (s, default 300): an EVSE that started charging less than this ago is kept
  on when others must pause (no flapping).
- ``min_off_s`` (s, default 300): an EVSE paused less than this ago stays paused.
- ``unused_margin_a`` (A, default 2): headroom above the measured draw for a car that uses
  much less than offered (see ``measured_a``).
- ``period_s`` (s > 0, default 300): time until the next run; an EVSE with
  ``energy_needed_kwh`` gets at most the current that delivers it within this period (by its
  ``departure`` instead, when the car leaves before the period ends).
- ``deadline_first`` (bool, default true): when not every car can charge, the deadline-aware
  EVSEs (below) ask for their required current, least laxity first, before other EVSEs get
  their minimum: the most energy is delivered by departure, at the price of more pauses.
  False: the fewest EVSEs pause (everyone's minimum first) and required currents come next.
  Either way, a sliver of a limit below the next EVSE's minimum is not stranded: an admitted
  EVSE above its own minimum lends what admits the next one (36 A: 30 + 6 A, not 32 A alone).

- ``max_raise_a`` (A > 0, optional): raises in steps. An EVSE's current rises by at most
  this much per run above its ``offered_a`` (a car without ``offered_a`` starts at most at
  ``max(min_a, max_raise_a)``), so a site's load comes on gradually, e.g. while a building
  meter lags; lowerings are never held back. Absent: raises take effect at once.

Node:

- ``id`` (non-empty string, unique, required); ``parent`` (node id or null, required for
  the tree to make sense; absent means null, i.e. a root).
- ``limit_a`` (optional): per-phase current limit in A for everything below the node,
  ``[L1, L2, L3]``; an entry may be null (no limit on that phase). A single-phase site writes
  ``[L1]`` (or three values, of which L2 and L3 are ignored). One value on a three-phase
  site is an error, since it is ambiguous. Absent: no current limit at this node.
- ``limit_kw`` (kW >= 0, optional): cap on the summed power of all EVSEs below the node.

EVSE (one connector):

- ``id`` (string, unique, required); ``node`` (node id, required): where it is connected.
- ``phases`` (required): which phases it draws from, e.g. ``["L2"]`` or
  ``["L1", "L2", "L3"]``; each must exist on the site. An EVSE on k phases draws its current
  on each of them; its power is ``k * current * voltage_v / 1000`` kW.
- ``min_a``, ``max_a`` (A, required, ``0 <= min_a <= max_a``): the charger's range
  (6 A minimum by IEC 61851 / J1772). ``step_a`` (A > 0, default 1): the resolution the
  charger takes; allowed currents are 0 and the multiples of ``step_a`` within
  ``[min_a, min(max_a, ev_max_a)]``.
- ``active`` (bool, required): a car is plugged in and wants energy; inactive EVSEs get 0.
- ``ev_max_a`` (A, optional): what the car accepts, if known.
- ``measured_a``, ``offered_a`` (A, optional): present draw (max over its phases) and the
  limit in force. When the car draws less than ``offered_a - unused_margin_a / 2``, it is held
  at ``measured_a + unused_margin_a`` (never below ``min_a``) and the rest goes to others;
  once its draw comes that close to what it is offered, the hold is lifted and it may rise.
- ``priority`` (> 0, default 1): weight of its fair share; an EVSE of priority 2 gets twice
  the current of priority 1 under the same constraint (weighted max-min fairness), and when
  not all can charge, higher priority keeps charging first.
- ``energy_needed_kwh`` (kWh, optional) and ``departure`` (timestamp, optional): with both
  (and departure in the future) the EVSE is deadline-aware: it is first given the current
  that finishes its energy by departure (least laxity first), then shares the rest fairly;
  when not all can charge, deadline-aware EVSEs go first by least laxity (see
  ``deadline_first``). Without them, plain max-min fairness applies. A car whose
  ``energy_needed_kwh`` takes less than ``min_a`` for one period (its last few hundred Wh)
  comes last when not all can charge: it would leave most of its pilot, and so of the limit,
  unused.
- ``charging_since`` / ``paused_since`` (timestamps, optional, exclusive): when its present
  on or off spell began, for the minimum on/off times and the rotation.
- ``session_kwh`` (kWh, optional): energy delivered this session, for the rotation: when not
  all can charge, the ones that received least go first, then the longest waiting.
- ``resumes_after_pause`` (bool, default true): false for a car known not to resume charging
  by itself after its current went to 0 (some cars fall asleep). Unless already paused, it is
  kept on like an EVSE within ``min_on_s``: paused only when the limits leave no other way.
- ``fixed_a`` (A, optional): a current the engine cannot change now (an offline charger
  keeping its last profile, a lowering not yet confirmed). It is allocated as given, even if
  inactive, and booked before anything else is shared.

Result
------
Typed as ``balancing.engine.result.Result``.

- ``allocations_a``: ``{evse_id: A}`` for every EVSE; 0 means paused.
- ``node_load_a``: ``{node_id: [A per site phase]}``, the allocated sum below each node.
- ``node_load_kw``: ``{node_id: kW}``.
- ``paused``: ids of EVSEs that are active (or fixed) and got 0.
- ``notes``: one line per EVSE, ``"<id>: <A> A, <reason>"``, e.g.
  ``"CP001/1: 16 A, car accepts 16 A"`` or ``"... limited by node panel-1 L2 (63 A)"``.
- ``reasons``: ``{evse_id: reason}``, the same reasons for machines.
- ``warnings``: site-level problems, e.g. a limit overloaded by fixed currents alone.

Guarantees, for every valid problem: per node and phase the allocated sum is at most
``limit_a`` and the power at most ``limit_kw`` (unless fixed currents alone exceed a limit,
then nothing else below it charges); every EVSE gets 0 or an allowed current; inactive EVSEs
get 0; the same problem gives the same result whatever the order of ``nodes`` and ``evses``.
"""

from balancing.engine.check import check
from balancing.engine.model import ProblemError
from balancing.engine.result import Result
from balancing.engine.solver import solve

__all__ = ["ProblemError", "Result", "check", "solve"]
