"""Keep each site's simulated cost-aware month replayed up to the last local midnight.

The monthly report simulates the cost-aware policy at every site that ran the static cap: a
replay of each 15-minute step with cars, about a second per busy site and month. An hourly task
(``billing.tasks.simulation_checkpoints``) takes each such site's replay of the month so far up
to its last local midnight (before the arrival of any session still open, whose facts are not
final) and stores the state (``SimulationCheckpoint``); the report resumes from it and replays
only what came after. Each run resumes from the stored state where its inputs are unchanged,
so a day costs one day's replay. Checkpoints of older months are deleted as it goes.

Schema: tenant.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta

from billing.intervals import interval_floor
from billing.models import SimulationCheckpoint
from billing.reports.builder import (
    SIMULATION_STEP_MINUTES,
    cost_aware_run,
    month_profiles,
    planned_sessions,
    site_policy,
)
from billing.selectors import site_list, site_timezone, tariff_in_force, tariff_spec
from billing.simulation_checkpoints import checkpoints_prune
from billing.tariffs import TariffError

logger = logging.getLogger(__name__)


def simulation_checkpoints_advance(*, now: datetime, budget_s: float | None = None) -> int:
    """Move each site's cost-aware checkpoint up to its last local midnight; returns the sites moved.

    ``budget_s``: stop starting new sites after this long (a site's first replay of a month is
    about a second); the sites left are taken by the next hourly run, each checkpoint being stored
    as soon as it is made.
    """
    moved = 0
    began = time.perf_counter()
    checkpoints_prune(latest=now.date())
    for site in site_list():
        if budget_s is not None and moved and time.perf_counter() - began > budget_s:
            logger.info("simulation checkpoints: %d sites moved in %.0f s; the rest next run", moved, budget_s)
            break
        if site_policy(site) == "cost_aware":
            continue  # the report bills its metered load; nothing to simulate
        tz = site_timezone(site)
        midnight = datetime.combine(now.astimezone(tz).date(), datetime.min.time(), tzinfo=tz)
        day = (midnight - timedelta(seconds=1)).date()  # the month of the last full day
        tariff = tariff_in_force(site=site, on=date(day.year, day.month, 1))
        if tariff is None:
            continue
        try:
            spec = tariff_spec(tariff)
        except TariffError:
            continue  # the report names the problem; no simulation to keep
        month = date(day.year, day.month, 1)
        stored = SimulationCheckpoint.objects.filter(site=site, month=month, policy="cost_aware").first()
        if stored is not None and stored.cut >= midnight:
            continue
        profiles = month_profiles(site, day.year, day.month)
        cut = min(midnight, profiles.end)
        still_open = [facts.load.started_at for facts in profiles.sessions if facts.load.stopped_at is None]
        if still_open:
            cut = min(cut, interval_floor(min(still_open), SIMULATION_STEP_MINUTES))
        planned = planned_sessions(profiles.sessions, until=profiles.end)
        if not planned or (stored is not None and stored.cut >= cut):
            continue
        started = time.perf_counter()
        cost_aware_run(planned, site, spec, tz, month=month, checkpoint_at=cut)
        moved += 1
        logger.info(
            "simulation checkpoint of site %s moved to %s (%.1f s)",
            site.slug,
            cut.isoformat(),
            time.perf_counter() - started,
        )
    return moved
