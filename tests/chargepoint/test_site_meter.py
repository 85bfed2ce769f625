"""An OCPP meter identity (``register_charger --site-meter``) reports the site meter on connector 0."""

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from balancing.models import Site, SiteMeterReading
from balancing.problem import build_problem
from chargepoint.gateway import normalise
from chargepoint.models import ChargingStation, MeterReading
from chargepoint.telemetry import telemetry_apply
from tests.factories import ChargingStationFactory, ConnectorFactory, SiteFactory

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-meter-pass-0001"


@pytest.fixture
def site() -> Site:
    return SiteFactory(slug="north", phases=3, limit_a=Decimal("63"), demand_cap_kw=Decimal("40"))


@pytest.fixture
def meter(site: Site) -> ChargingStation:
    return ChargingStationFactory(charge_point_id="METER-1", site=site, is_site_meter=True)


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def sample(when: datetime, measurand: str, value: str, unit: str, phase: str = "") -> dict[str, str]:
    return {
        "at": when.isoformat(),
        "measurand": measurand,
        "phase": phase,
        "location": "",
        "context": "",
        "value": value,
        "unit": unit,
    }


def meter_event(cp: str, samples: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    return {
        "type": "meter",
        "cp": cp,
        "ts": timezone.now().isoformat(),
        "connector": None,
        "samples": samples,
        **fields,
    }


def three_phases(when: datetime, amps: tuple[str, str, str] = ("20.5", "18", "22.25")) -> list[dict[str, str]]:
    return [sample(when, "Current.Import", a, "A", f"L{n}") for n, a in enumerate(amps, start=1)]


def test_register_charger_site_meter_makes_a_meter_without_connectors(tenant, site: Site) -> None:
    out = StringIO()
    call_command(
        "register_charger", "--tenant", "alpha", "--site", "north", "METER-9", "--max-a", "63",
        "--password", PASSWORD, "--site-meter", stdout=out,
    )  # fmt: skip
    station = ChargingStation.objects.get(charge_point_id="METER-9")
    assert station.is_site_meter
    assert not station.connectors.exists()
    assert "METER-9" in out.getvalue()


def test_a_charger_with_connectors_is_not_turned_into_a_meter(tenant, site: Site) -> None:
    args = ["register_charger", "--tenant", "alpha", "--site", "north", "CP-7", "--max-a", "32", "--password", PASSWORD]
    call_command(*args, stdout=StringIO())
    with pytest.raises(CommandError, match="--site-meter"):
        call_command(*args, "--site-meter", stdout=StringIO())
    assert not ChargingStation.objects.get(charge_point_id="CP-7").is_site_meter


def test_a_site_meter_is_not_planned_as_a_charger(site: Site, meter: ChargingStation) -> None:
    meter.is_online = True
    meter.save()
    charger = ChargingStationFactory(charge_point_id="CP-1", site=site, is_online=True)
    ConnectorFactory(station=charger, connector_id=1)
    built = build_problem(site, timezone.now())
    assert [e["id"] for e in built.problem["evses"]] == ["CP-1/1"]


def test_connector_0_currents_and_power_become_a_site_meter_reading(meter: ChargingStation) -> None:
    when = ago(3)
    samples = [*three_phases(when), sample(when, "Power.Active.Import", "13950", "W")]
    outcome = telemetry_apply(events=[meter_event("METER-1", samples)])
    assert outcome.applied == 1
    reading = SiteMeterReading.objects.get(site=meter.site)
    assert reading.source == "ocpp"
    assert reading.measured_at == when
    assert reading.current_a == [20.5, 18.0, 22.25]
    assert reading.power_kw == Decimal("13.95")
    assert not MeterReading.objects.filter(station=meter).exists()


def test_ocpp16_meter_values_in_kw_are_normalised(meter: ChargingStation) -> None:
    when = ago(2).replace(microsecond=0)
    raw = [
        {
            "timestamp": when.isoformat(),
            "sampled_value": [
                {"measurand": "Power.Active.Import", "unit": "kW", "value": "11.5"},
                {"measurand": "Energy.Active.Import.Register", "unit": "kWh", "value": "123456.7"},
            ],
        }
    ]
    samples = normalise.meter_values_16(raw, now=timezone.now())
    telemetry_apply(events=[meter_event("METER-1", samples)])
    reading = SiteMeterReading.objects.get(site=meter.site)
    assert (reading.current_a, reading.power_kw) == ([], Decimal("11.50"))


def test_ocpp201_meter_values_with_a_multiplier_and_phase_powers(meter: ChargingStation) -> None:
    when = ago(2).replace(microsecond=0)
    raw = [
        {
            "timestamp": when.isoformat(),
            "sampled_value": [
                *[
                    {"measurand": "Current.Import", "phase": f"L{n}-N", "value": 16 + n}
                    for n in (1, 2, 3)
                ],
                *[
                    {"measurand": "Power.Active.Import", "phase": f"L{n}-N", "value": 3.9,
                     "unit_of_measure": {"unit": "kW"}}
                    for n in (1, 2, 3)
                ],
            ],
        }
    ]  # fmt: skip
    samples = normalise.meter_values_201(raw, now=timezone.now())
    telemetry_apply(events=[meter_event("METER-1", samples)])
    reading = SiteMeterReading.objects.get(site=meter.site)
    assert reading.current_a == [17.0, 18.0, 19.0]
    assert reading.power_kw == Decimal("11.70")


def test_a_refused_reading_is_logged_and_the_rest_of_the_batch_applies(
    meter: ChargingStation, caplog: pytest.LogCaptureFixture
) -> None:
    charger = ChargingStationFactory(charge_point_id="CP-2", site=meter.site)
    ConnectorFactory(station=charger, connector_id=1)
    good, negative, stale, huge = ago(4), ago(3), ago(600), ago(2)
    events = [
        meter_event(
            "METER-1",
            [
                *three_phases(good),
                *three_phases(negative, ("10", "-5", "10")),
                *three_phases(stale),
                sample(huge, "Power.Active.Import", "900000", "W"),
            ],
        ),
        {"type": "status", "cp": "CP-2", "ts": timezone.now().isoformat(), "connector": 1, "status": "Preparing",
         "error_code": "", "at": timezone.now().isoformat()},
    ]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="balancing.meter"):
        outcome = telemetry_apply(events=events)
    assert outcome.applied == 2
    assert list(SiteMeterReading.objects.values_list("measured_at", flat=True)) == [good]
    assert charger.connectors.get().status == "Preparing"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 3
    assert any("current_a" in m and "negative" in m for m in refusals)
    assert any("measured_at" in m and "stale" in m for m in refusals)
    assert any("power_kw" in m and "implausible" in m for m in refusals)


def test_a_single_phase_meter_current_without_a_phase_is_l1(site: Site) -> None:
    flat = SiteFactory(slug="flat", phases=1, limit_a=Decimal("87"))
    ChargingStationFactory(charge_point_id="METER-F", site=flat, is_site_meter=True, phases=1, wiring="L1")
    when = ago(1)
    telemetry_apply(events=[meter_event("METER-F", [sample(when, "Current.Import", "40", "A")])])
    assert SiteMeterReading.objects.get(site=flat).current_a == [40.0]


def test_a_three_phase_site_meter_sending_one_phase_is_refused(
    meter: ChargingStation, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="balancing.meter"):
        outcome = telemetry_apply(events=[meter_event("METER-1", [sample(ago(1), "Current.Import", "40", "A", "L1")])])
    assert not SiteMeterReading.objects.exists()
    assert outcome.applied == 1  # the event was read, and its reading refused
    assert any("OCPP meter reading at" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)


def test_a_replayed_batch_stores_each_reading_once(meter: ChargingStation) -> None:
    batch = [meter_event("METER-1", three_phases(ago(2)))]
    telemetry_apply(events=batch)
    telemetry_apply(events=batch)
    assert SiteMeterReading.objects.count() == 1


def test_an_ordinary_chargers_connector_0_values_stay_meter_samples(site: Site) -> None:
    charger = ChargingStationFactory(charge_point_id="CP-3", site=site)
    ConnectorFactory(station=charger, connector_id=1)
    when = ago(2)
    telemetry_apply(events=[meter_event("CP-3", three_phases(when))])
    stored = MeterReading.objects.get(station=charger)  # the three phases of one instant: one row
    assert (stored.connector_no, stored.sampled_at) == (0, when)
    assert (stored.current_l1_a, stored.current_l2_a, stored.current_l3_a) == (20.5, 18.0, 22.25)
    assert not SiteMeterReading.objects.exists()


def test_a_meter_transaction_sample_is_not_a_site_reading(meter: ChargingStation) -> None:
    when = ago(2)
    telemetry_apply(events=[meter_event("METER-1", three_phases(when), transaction_id="9")])
    assert not SiteMeterReading.objects.exists()
    stored = MeterReading.objects.get(station=meter)  # kept as the station's own readings
    assert (stored.connector_no, stored.sampled_at) == (0, when)
    assert (stored.current_l1_a, stored.current_l2_a, stored.current_l3_a) == (20.5, 18.0, 22.25)
