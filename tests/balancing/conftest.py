"""Fixtures for site balancing: a charger double standing in for the gateway's command path."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from balancing.models import Circuit, Site, SiteGroup
from balancing.push import PushAnswer, PushRequest
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.partitions import partitions_ensure
from tenants.accounts.models import User
from tests.factories import SiteFactory

NOW = datetime(2026, 5, 1, 16, 30, tzinfo=UTC)


def meter_draw(connector: Connector, at: datetime, amps: float, **values: object) -> MeterReading:
    """One reading of ``connector`` at ``at``: ``amps`` of Current.Import on each of the station's phases.

    One row per instant, as the ingest stores it: a three-phase draw is current_l1_a, l2 and
    l3 of the same row (the station's own phases, whatever site phases they are wired to).
    ``values`` sets other columns of the row (``energy_wh``, one phase's current, ``extra``, ...).
    """
    partitions_ensure(at, at)  # the tests' fixed dates are in months without a partition
    currents = {f"current_l{n}_a": amps for n in range(1, connector.station.phases + 1)}
    return MeterReading.objects.create(
        station=connector.station, connector_no=connector.connector_id, sampled_at=at, **{**currents, **values}
    )


@dataclass
class ChargerDouble:
    """Answers SetChargingProfile like chargers would; records each batch in order.

    ``answers`` maps a charge point id to the status it returns (default "Accepted").
    """

    answers: dict[str, str] = field(default_factory=dict)
    batches: list[list[PushRequest]] = field(default_factory=list)

    def send_many(self, requests: Sequence[PushRequest]) -> list[PushAnswer]:
        self.batches.append(list(requests))
        return [PushAnswer(self.answers.get(r.charge_point_id, "Accepted")) for r in requests]

    @property
    def sent(self) -> list[PushRequest]:
        return [r for batch in self.batches for r in batch]

    def limits(self, batch: int | None = None) -> dict[str, float]:
        """Charge point id -> limit of each TxProfile sent (in one batch, or in all)."""
        requests = self.sent if batch is None else self.batches[batch]
        out = {}
        for r in requests:
            profile = r.payload.get("csChargingProfiles") or r.payload.get("chargingProfile")
            if profile["chargingProfilePurpose"] != "TxProfile":
                continue
            schedule = profile["chargingSchedule"]
            schedule = schedule[0] if isinstance(schedule, list) else schedule
            out[r.charge_point_id] = schedule["chargingSchedulePeriod"][0]["limit"]
        return out


@pytest.fixture
def chargers() -> ChargerDouble:
    return ChargerDouble()


@pytest.fixture
def garage() -> Site:
    """The brochure's site: 3-phase 230 V, 63 A grid, 20 kW cap, one panel."""
    site = SiteFactory(slug="garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"), timezone="UTC")
    Circuit.objects.create(site=site, name="Panel A", kind="panel", limit_a=Decimal("63"))
    return site


@pytest.fixture
def plug_in() -> Callable[..., Connector]:
    """A connected charger with a car plugged in and charging (open session)."""

    def make(
        site: Site,
        cp_id: str,
        *,
        max_a: str = "32",
        phases: int = 3,
        wiring: str | None = None,
        status: str = "Charging",
        draw_a: float | None = None,
        ocpp_version: str = "1.6",
        online: bool = True,
        session: bool = True,
        circuit: Circuit | None = None,
    ) -> Connector:
        station = ChargingStation.objects.create(
            charge_point_id=cp_id,
            site=site,
            circuit=circuit or site.circuits.first(),
            max_current_a=Decimal(max_a),
            phases=phases,
            wiring=wiring or ("L1L2L3" if phases == 3 else "L1"),
            ocpp_version=ocpp_version,
            is_online=online,
            last_seen_at=NOW,
        )
        connector = Connector.objects.create(station=station, connector_id=1, status=status)
        if session:
            ChargingSession.objects.create(
                station=station,
                connector=connector,
                transaction_id=str(abs(hash(cp_id)) % 100000),
                started_at=NOW - timedelta(minutes=30),
                meter_start_wh=Decimal("0"),
            )
        if draw_a is not None:
            meter_draw(connector, NOW - timedelta(seconds=20), draw_a)
        return connector

    return make


@pytest.fixture
def campus() -> tuple[SiteGroup, Site, Site, Site]:
    """Three sites, two of them (north, south) in the group "engineering"; the library outside it."""
    north, south, library = SiteFactory(slug="north"), SiteFactory(slug="south"), SiteFactory(slug="library")
    group = SiteGroup.objects.create(slug="engineering", name="Engineering")
    group.sites.add(north, south)
    return group, north, south, library


def person(email: str, role: str = "") -> User:
    """A user with ``role`` on the whole organisation ("" for none: grants only)."""
    return User.objects.create_user(email=email, password="correct-horse-battery-9", role=role)


# The site settings form as the portal posts it (the safety fields; tests add what they change).
SITE_SETTINGS_FORM = {
    "limit_a": "63",
    "demand_cap_kw": "20",
    "failsafe_a": "6",
    "max_raise_a": "",
    "failsafe_auto": "on",
    "building_allowance_kw": "0",
    "overdraw_escalation": "none",
    "overdraw_escalation_after_s": "300",
}
