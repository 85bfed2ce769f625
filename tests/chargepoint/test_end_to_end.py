"""Both protocol versions end to end: simulated chargers, a real gateway, worker, RabbitMQ, Redis, PostgreSQL.

A charger plugs in, the telemetry worker records it in its tenant's schema, the balancer
(``balancing.tasks.balance_site``) answers with a charging profile through the gateway's
command path, and the charger's meter values land linked to its session.
"""

import asyncio
from decimal import Decimal

import pytest
from django.db.models import QuerySet
from django_tenants.utils import tenant_context

from chargepoint.commands import Command, command_send
from chargepoint.gateway import keys
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.simulator.charger import ChargerSpec, SimulatedCharger
from chargepoint.simulator.fleet import run_fleet, seed_specs
from evplatform.redis import get_redis
from tests.chargepoint.conftest import PASSWORD, wait_until

pytestmark = pytest.mark.django_db
E2E_TIMEOUT_S = 60


class Running:
    """A simulated charger running on the gateway's background loop."""

    def __init__(self, bg, spec: ChargerSpec, url: str, meter_interval_s: float = 1.0) -> None:
        self.bg = bg
        self.charger = SimulatedCharger(spec, url, meter_interval_s=meter_interval_s)
        self.stop = asyncio.Event()
        self.future = bg.spawn(self.charger.run(self.stop))

    @property
    def state(self):
        return self.charger.state

    def close(self) -> None:
        self.bg.loop.call_soon_threadsafe(self.stop.set)
        self.future.result(30)


def session_readings(session: ChargingSession) -> QuerySet[MeterReading]:
    """The readings linked to a session (one row per instant), looked up by station as the model asks."""
    return MeterReading.objects.filter(station=session.station_id, session=session)


def open_session(cp: str) -> ChargingSession | None:
    return ChargingSession.objects.filter(station__charge_point_id=cp, stopped_at__isnull=True).first()


def test_a_16_charger_plugs_in_gets_a_profile_and_its_meter_values_land_in_its_tenant(
    gateway, celery_worker, gw_fleet, bg, other_tenant
) -> None:
    cp = gw_fleet.chargers_16[0]
    sim = Running(bg, ChargerSpec(cp, PASSWORD, car_kw=7.2, plug_in_after_s=0.5), gateway.url)
    try:
        wait_until(lambda: sim.state.transaction_id, timeout=E2E_TIMEOUT_S, what="transaction started")
        session = wait_until(lambda: open_session(cp), timeout=E2E_TIMEOUT_S, what="session recorded")
        wait_until(
            lambda: ChargerCommand.objects.filter(
                charge_point_id=cp,
                action="SetChargingProfile",
                status="Accepted",
                payload__csChargingProfiles__chargingProfilePurpose="TxProfile",
            ).exists(),
            timeout=E2E_TIMEOUT_S,
            what="a TxProfile pushed and accepted",
        )
        wait_until(
            lambda: session_readings(session).filter(current_l1_a__isnull=False, power_w__gt=0).exists(),
            timeout=E2E_TIMEOUT_S,
            what="meter values linked to the session",
        )
    finally:
        sim.close()

    station = ChargingStation.objects.get(charge_point_id=cp)
    assert station.ocpp_version == "1.6"
    assert station.vendor == "EVPlatform"
    assert station.last_seen_at is not None
    assert session.transaction_id == sim.state.transaction_id
    assert Connector.objects.get(station=station, connector_id=1).status == "Charging"
    assert sim.state.profiles_received >= 1
    reading = session_readings(session).filter(current_l1_a__isnull=False, power_w__gt=0).first()
    assert reading is not None
    # The simulator reports kW: stored in W, in its typed column (a kW value would be in extra).
    phase_sum_a = reading.current_l1_a + reading.current_l2_a + reading.current_l3_a
    assert reading.power_w == pytest.approx(230 * phase_sum_a, abs=5)
    assert reading.power_w > 1000
    assert reading.extra is None  # register, power, offered current, SoC and currents: all typed
    assert None not in (reading.energy_wh, reading.offered_a, reading.soc_pct)
    with tenant_context(other_tenant):
        assert not ChargingStation.objects.filter(charge_point_id=cp).exists()
        assert not MeterReading.objects.exists()


def test_a_201_station_plugs_in_states_its_needs_gets_a_profile_and_meters_land(
    gateway, celery_worker, gw_fleet, bg
) -> None:
    cp = gw_fleet.chargers_201[0]
    spec = ChargerSpec(
        cp, PASSWORD, car_kw=11.0, ocpp_version="2.0.1", plug_in_after_s=0.5, energy_needed_kwh=20, departure_in_s=3600
    )
    sim = Running(bg, spec, gateway.url)
    try:
        session = wait_until(
            lambda: ChargingSession.objects.filter(
                station__charge_point_id=cp, stopped_at__isnull=True, energy_needed_kwh__isnull=False
            ).first(),
            timeout=E2E_TIMEOUT_S,
            what="session with charging needs",
        )
        wait_until(
            lambda: ChargerCommand.objects.filter(
                charge_point_id=cp, action="SetChargingProfile", status="Accepted", payload__evseId=1
            ).exists(),
            timeout=E2E_TIMEOUT_S,
            what="a profile for EVSE 1 accepted",
        )
        wait_until(
            lambda: session_readings(session).filter(energy_wh__isnull=False).count() >= 2,
            timeout=E2E_TIMEOUT_S,
            what="energy readings linked to the session",
        )
    finally:
        sim.close()

    assert ChargingStation.objects.get(charge_point_id=cp).ocpp_version == "2.0.1"
    assert session.transaction_id == sim.state.transaction_id
    assert session.energy_needed_kwh == Decimal("20.000")
    assert session.ev_max_current_a == Decimal("16.0")
    assert session.departure_at is not None
    registers = list(session_readings(session).filter(energy_wh__isnull=False).order_by("sampled_at"))
    # Reported in kWh, stored in Wh in the register's column: never in extra as kWh.
    assert all(not any("#" in key for key in (r.extra or {})) for r in registers)
    assert registers[-1].energy_wh >= registers[0].energy_wh


def test_a_charger_that_drops_and_reconnects_keeps_its_session_and_gets_commands_again(
    gateway, celery_worker, gw_fleet, bg
) -> None:
    cp = gw_fleet.chargers_16[3]
    sim = Running(bg, ChargerSpec(cp, PASSWORD, car_kw=7.2, plug_in_after_s=0.5), gateway.url)
    try:
        session = wait_until(lambda: open_session(cp), timeout=E2E_TIMEOUT_S, what="session recorded")
        bg.run(sim.charger.drop_connection())
        wait_until(lambda: sim.state.connects >= 2 and sim.charger.connected.is_set(), what="reconnected")
        wait_until(
            lambda: (get_redis().get(keys.charger_key(cp)) or b"").decode() == gateway.gateway.instance_id,
            what="registry entry back",
        )
        result = command_send(
            command=Command(cp, "GetCompositeSchedule", {"connectorId": 1, "duration": 60}), timeout_s=10
        )
        readings_before = session_readings(session).count()
        wait_until(
            lambda: session_readings(session).count() > readings_before,
            timeout=E2E_TIMEOUT_S,
            what="readings after the reconnect on the same session",
        )
        station = wait_until(
            lambda: ChargingStation.objects.filter(charge_point_id=cp, is_online=True).first(), what="online again"
        )
    finally:
        sim.close()

    assert result.accepted
    assert result.payload["chargingSchedule"]["chargingRateUnit"] == "A"
    assert ChargingSession.objects.filter(station=station, stopped_at__isnull=True).count() == 1
    assert open_session(cp).pk == session.pk
    assert station.connected_at is not None


def test_the_seed_scenario_stays_under_20_kw_after_the_first_rebalance(gateway, celery_worker, gw_fleet, bg) -> None:
    specs = seed_specs(gw_fleet.seed_chargers, PASSWORD)

    report = bg.run(run_fleet(specs, url=gateway.url, duration_s=25, cap_kw=20.0, meter_interval_s=2), timeout=90)

    unbalanced_kw = sum(min(s.car_kw, 16 * 230 * 3 / 1000) for s in specs)
    assert unbalanced_kw > 20  # without balancing the four cars would take ~32 kW
    assert report.refused == {}
    assert report.first_rebalance_s is not None, report.summary()
    assert report.stayed_under_cap, report.summary()
    assert report.max_after_rebalance_kw > 10  # the cap is shared, not everyone paused
