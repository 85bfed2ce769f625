"""Stored replay states of a site's simulated month (``SimulationCheckpoint``): read and write.

A state is resumed only when the inputs the replay read before its step are the same now
(``billing.whatif.replay_inputs_key`` over the sessions arriving before it and the replay's
settings, ``REPLAY_VERSION`` among them); otherwise the caller replays the month from its
start, as without a checkpoint.
Only the latest two months are kept (``checkpoints_prune``): a state is ~100-150 kB for a busy
site's month, and a report of an older month is regenerated rarely (it replays the month whole).

Schema: tenant.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any

from balancing.models import Site
from billing import whatif
from billing.models import SimulationCheckpoint
from billing.tariffs import TariffSpec, previous_months
from billing.whatif import PlannedSession, ReplayState, replay_inputs_key


def replay_settings(spec: TariffSpec, **settings: Any) -> dict[str, Any]:
    """What a replay reads besides its sessions: its keyword settings, a digest of the tariff and
    the replay's version (a state made by another version of the code is not resumed)."""
    return settings | {"tariff": hashlib.sha256(repr(spec).encode()).hexdigest(), "replay": whatif.REPLAY_VERSION}


def checkpoint_state(
    site: Site, *, month: date, policy: str, sessions: list[PlannedSession], settings: dict[str, Any]
) -> ReplayState | None:
    """The stored state of this site's month under ``policy``, if its inputs are unchanged."""
    checkpoint = SimulationCheckpoint.objects.filter(site=site, month=month, policy=policy).first()
    if checkpoint is None:
        return None
    key = replay_inputs_key(sessions, before=checkpoint.cut, settings=settings)
    return checkpoint.state if key == checkpoint.inputs_key else None


def checkpoint_save(
    site: Site,
    *,
    month: date,
    policy: str,
    state: ReplayState,
    sessions: list[PlannedSession],
    settings: dict[str, Any],
) -> SimulationCheckpoint:
    """Store ``state`` (where a replay stopped) as the site's checkpoint for the month."""
    cut = datetime.fromisoformat(state["at"])
    checkpoint, _ = SimulationCheckpoint.objects.update_or_create(
        site=site,
        month=month,
        policy=policy,
        defaults={
            "cut": cut,
            "inputs_key": replay_inputs_key(sessions, before=cut, settings=settings),
            "state": state,
        },
    )
    return checkpoint


KEEP_MONTHS = 2  # the month in progress and the one before (its report is generated in the new month)


def checkpoints_prune(*, latest: date) -> int:
    """Delete the checkpoints of months before the ``KEEP_MONTHS`` ending with ``latest``; the count."""
    oldest_kept = previous_months(latest.year, latest.month, KEEP_MONTHS - 1)[0]
    deleted, _ = SimulationCheckpoint.objects.filter(month__lt=oldest_kept).delete()
    return deleted
