"""Opt-in escalation for chargers that keep drawing more than offered. Schema: tenant.

Stand-in until the "sizing" branch's module is merged (same function and signature; theirs
wins): the balancing run calls ``site_escalations_apply`` at its end with the connectors that
overdraw and since when.
"""

from datetime import datetime

from balancing.models import Site
from chargepoint.models import ChargingSession, Connector


def site_escalations_apply(
    *, site: Site, overdrawing: list[tuple[Connector, ChargingSession | None, datetime]], now: datetime
) -> list[str]:
    """Apply the site's escalation to the overdrawing connectors; one line per action taken."""
    return []
