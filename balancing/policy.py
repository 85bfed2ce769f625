"""The hook a balancing policy plugs into ``build_problem``. Schema: tenant.

Balancing must not import billing (billing imports balancing), yet a cost-aware site needs its
tariff and this month's billing demand to choose its cap. So billing registers one function
here when Django starts (``billing.apps.BillingConfig.ready``), and ``build_problem`` calls it
for sites whose ``balancing_policy`` is ``cost_aware``, after the static limits and the EVSEs
are built. Without a registered hook every site balances statically.

The hook decides, it does not apply: it returns the whole-site cap in force (which replaces the
demand cap among the arbiter's candidates, ``balancing.limits``), the most each planned car may
take now, and a record for the run. ``build_problem`` applies that to the engine input.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from balancing.limits import SiteLimits
from balancing.models import Site


@dataclass(frozen=True)
class PolicyInput:
    """What the hook sees: the site, the time, the static limits and the engine's EVSEs (read only)."""

    site: Site
    now: datetime
    limits: SiteLimits
    evses: list[dict[str, Any]]


@dataclass
class PolicyDecision:
    """What a policy asks of this run.

    ``cap_kw``: the whole-site cap (kW, building included) to use instead of the site's demand
    cap, with ``cap_source`` ("month_peak:flat") and ``cap_reason`` (a sentence); None keeps the
    demand cap. ``car_kw``: per EVSE id, the most it may take now (kW; 0: it waits this run).
    ``record``: stored as the run's ``limits["policy"]``.
    """

    cap_kw: float | None = None
    cap_source: str = ""
    cap_reason: str = ""
    car_kw: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


PolicyHook = Callable[[PolicyInput], PolicyDecision]

_hooks: dict[str, PolicyHook] = {}


def policy_register(*, name: str, hook: PolicyHook) -> None:
    """Use ``hook`` for sites whose ``balancing_policy`` is ``name`` (the last registration wins)."""
    _hooks[name] = hook


def policy_hook(name: str) -> PolicyHook | None:
    """The hook registered for the policy ``name``; None for ``static`` or when none is registered."""
    return _hooks.get(name)
