"""A campus of three sites for the access tests: a group "Engineering" holds north and south;
the library is outside it. Each site has a circuit, a schedule, a charger with a connector, a
session, a recent meter reading, a site meter reading, a balancing run and an open alert, so
that every list and every page has a row of each site to show or to hide."""

from dataclasses import dataclass
from datetime import time, timedelta
from decimal import Decimal

from django.utils import timezone

from balancing.models import (
    BalancingRun,
    Circuit,
    Site,
    SiteAlert,
    SiteGrant,
    SiteGroup,
    SiteLimitSchedule,
    SiteMeterReading,
)
from chargepoint.models import ChargingSession, ChargingStation
from tenants.accounts.models import Role, User
from tests.factories import ChargingSessionFactory, ChargingStationFactory, ConnectorFactory, MeterReadingFactory

PASSWORD = "correct-horse-battery-9"


@dataclass
class Campus:
    group: SiteGroup
    north: Site
    south: Site
    library: Site
    stations: dict[str, ChargingStation]
    circuits: dict[str, Circuit]
    schedules: dict[str, SiteLimitSchedule]
    runs: dict[str, BalancingRun]
    sessions: dict[str, ChargingSession]


def campus_build(prefix: str = "scope", *, group: bool = True) -> Campus:
    """The three sites and their rows; with ``group``, the Engineering group of north and south
    (without: ``Campus.group`` is None, for a test that makes the group itself)."""
    now = timezone.now()
    sites = {}
    stations, circuits, schedules, runs, sessions = {}, {}, {}, {}, {}
    for name in ("north", "south", "library"):
        site = Site.objects.create(
            slug=f"{prefix}-{name}",
            name=f"{prefix.title()} {name.title()} Hall",
            limit_a=Decimal("63"),
            demand_cap_kw=Decimal("20"),
            timezone="UTC",
        )
        sites[name] = site
        circuits[name] = Circuit.objects.create(site=site, name=f"Panel {name}", kind="panel", limit_a=Decimal("63"))
        schedules[name] = SiteLimitSchedule.objects.create(
            site=site, name=f"Evening {name}", weekdays="01234", start_time=time(17), end_time=time(21), limit_kw=10
        )
        station = ChargingStationFactory(charge_point_id=f"{prefix.upper()}-{name.upper()}-CP", site=site)
        stations[name] = station
        connector = ConnectorFactory(station=station, connector_id=1)
        sessions[name] = ChargingSessionFactory(connector=connector, started_at=now - timedelta(hours=2))
        MeterReadingFactory(station=station, sampled_at=now - timedelta(hours=1), current_a=12.5)
        SiteMeterReading.objects.create(
            site=site,
            measured_at=now - timedelta(minutes=5),
            received_at=now - timedelta(minutes=5),
            source=SiteMeterReading.Source.API,
            current_a=[20, 20, 20],
        )
        runs[name] = BalancingRun.objects.create(
            site=site,
            reason="sweep",
            started_at=now - timedelta(minutes=10),
            inputs_digest="c" * 64,
            problem={"evses": []},
            result={"allocations_a": {}, "node_load_a": {}},
            measured_kw=12.0,
            allocated_kw=13.0,
            limit_kw=20.0,
        )
        SiteAlert.objects.create(
            site=site,
            station=station,
            kind=SiteAlert.Kind.OVERDRAW,
            detail=f"{name} charger draws more than offered",
            opened_at=now - timedelta(minutes=3),
            last_seen_at=now - timedelta(minutes=1),
        )
    engineering = None
    if group:
        engineering = SiteGroup.objects.create(slug=f"{prefix}-engineering", name="Engineering")
        engineering.sites.add(sites["north"], sites["south"])
    return Campus(
        engineering,
        sites["north"],
        sites["south"],
        sites["library"],
        stations,
        circuits,
        schedules,
        runs,
        sessions,
    )


def group_user(campus: Campus, email: str, role: str = Role.ENERGY_MANAGER) -> User:
    """A person with no role on the organisation and ``role`` on the Engineering group."""
    user = User.objects.create_user(email=email, password=PASSWORD, role="")
    SiteGrant.objects.create(user=user, role=role, group=campus.group)
    return user
