"""Closed-loop balancing (issue 11): what chargers really draw is the truth the plan follows.

Real PostgreSQL, the charger double as the command path, MeterReading rows as the readings.
Numbers are worked by hand on the brochure's garage (3-phase 230 V, 20 kW cap): each ampere of
a three-phase charger costs 3 x 230 W = 0.69 kW, so the chargers share 20 / 0.69 = 28.98 A.
Every test asserts on the SITE TOTAL: what each charger may really draw (its measured draw when
it does not follow its limit, its limit or fixed booking otherwise) stays within the cap.
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from balancing.models import (
    BalancingRun,
    ChargerModelCompliance,
    Circuit,
    ConnectorLimit,
    ProfilePush,
    SiteAlert,
    SiteMeterReading,
    StationFailsafe,
)
from balancing.problem import build_problem
from balancing.push import PushAnswer
from balancing.runs import _refusal_streaks, site_balance_run
from chargepoint.models import ChargingSession, Connector
from tenants.accounts.models import AuditEvent
from tests.balancing.conftest import NOW, meter_draw
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

KW_PER_A = 3 * 230 / 1000  # a three-phase ampere at 230 V
CAP_KW = 20.0


def run(site, chargers, now=NOW) -> BalancingRun:
    return site_balance_run(site=site, reason="test", pusher=chargers, now=now)


def confirm_failsafe(connector, limit_a="6") -> None:
    StationFailsafe.objects.update_or_create(
        station=connector.station, defaults={"limit_a": Decimal(limit_a), "confirmed_at": NOW - timedelta(hours=1)}
    )


def book(connector, limit_a, *, confirmed_ago=timedelta(minutes=10), **fields) -> ConnectorLimit:
    """The books: ``limit_a`` accepted for the connector's open session ``confirmed_ago``."""
    values = {
        "limit_a": Decimal(str(limit_a)),
        "transaction_id": connector.sessions.get(stopped_at__isnull=True).transaction_id,
        "valid_until": NOW + timedelta(minutes=15),
        "confirmed_at": NOW - confirmed_ago,
        **fields,
    }
    limit, _ = ConnectorLimit.objects.update_or_create(connector=connector, defaults=values)
    return limit


def reading(connector, seconds: float, amps: float) -> None:
    """One Current.Import reading ``seconds`` from NOW on each of the charger's phases (one row)."""
    meter_draw(connector, NOW + timedelta(seconds=seconds), amps)


def books(connector) -> ConnectorLimit:
    return ConnectorLimit.objects.get(connector=connector)


def limit_of(connector) -> float:
    return float(books(connector).limit_a or 0)


def site_total_kw(*amps: float) -> float:
    return round(sum(amps) * KW_PER_A, 3)


def open_alerts(kind: str) -> list[SiteAlert]:
    return list(SiteAlert.objects.filter(kind=kind, cleared_at__isnull=True))


def make_ignoring(connector, vendor="Acme", model="Wallbox", firmware="1.2") -> None:
    station = connector.station
    station.vendor, station.model, station.firmware_version = vendor, model, firmware
    station.save()


@pytest.fixture
def three_at_9_a(garage, plug_in):
    """Three 32 A chargers booked at 9 A each (27 A = 18.63 kW), failsafes confirmed at 6 A."""
    connectors = [plug_in(garage, f"CP-{n}", max_a="32") for n in (1, 2, 3)]
    for connector in connectors:
        confirm_failsafe(connector)
        book(connector, 9)
    return connectors


@pytest.mark.parametrize("ocpp_version", ["1.6", "2.0.1"])
def test_a_charger_that_ignores_its_profile_is_booked_at_its_draw_and_the_others_are_lowered(
    garage, three_at_9_a, chargers, ocpp_version
) -> None:
    one, two, three = three_at_9_a
    garage.stations.update(ocpp_version=ocpp_version)
    make_ignoring(three)
    for connector in (one, two):
        reading(connector, -20, 9.0)
        reading(connector, -10, 9.0)
    reading(three, -20, 16.0)  # offered 9 A, tolerance max(1 A, 10 %) = 1 A: over from 10 A
    reading(three, -10, 15.6)
    assert site_total_kw(9, 9, 16) == 23.46  # what the site draws before the run: 17 % over

    record = run(garage, chargers)

    # CP-3 is booked at its draw rounded up (16 A); 28.98 - 16 = 12.98 A leave 6 A each to the others.
    assert record.result["allocations_a"]["CP-3/1"] == 16.0
    assert chargers.limits() == {"CP-1": 6.0, "CP-2": 6.0}  # CP-3 is not sent its draw as a limit
    assert site_total_kw(limit_of(one), limit_of(two), 16.0) == 19.32 <= CAP_KW
    limit = books(three)
    assert limit.limit_a == 9  # the books keep what it accepted
    assert (limit.overdraw_count, limit.overdraw_since) == (2, NOW - timedelta(seconds=20))
    assert limit.overdraw_a == Decimal("15.6")  # its latest draw
    alert = open_alerts(SiteAlert.Kind.OVERDRAW)[0]
    assert alert.connector == three
    assert alert.detail == "CP-3/1 draws 15.6 A, offered 9 A (Acme Wallbox fw 1.2)"
    assert (alert.vendor, alert.model, alert.firmware_version) == ("Acme", "Wallbox", "1.2")
    assert AuditEvent.objects.filter(object_type="alert", action="alert", object_id=str(alert.pk)).exists()
    record_of_model = ChargerModelCompliance.objects.get(vendor="Acme", model="Wallbox", firmware_version="1.2")
    assert record_of_model.accepted_ignored == 1
    assert record.limits["fixed"] == {"CP-3/1": "draws 16.0 A, offered 9 A"}

    # It complies again: the overdraw ends, the alert clears and it is planned like the others.
    reading(three, 20, 9.0)
    chargers.batches.clear()
    later = run(garage, chargers, now=NOW + timedelta(seconds=30))

    assert books(three).overdraw_count == 0
    assert books(three).overdraw_since is None
    assert open_alerts(SiteAlert.Kind.OVERDRAW) == []
    assert SiteAlert.objects.get(kind=SiteAlert.Kind.OVERDRAW).cleared_at == NOW + timedelta(seconds=30)
    assert "fixed_a" not in next(e for e in later.problem["evses"] if e["id"] == "CP-3/1")
    assert site_total_kw(limit_of(one), limit_of(two), limit_of(three)) <= CAP_KW
    # One episode is one ignored limit, however many runs it lasted.
    assert ChargerModelCompliance.objects.get(vendor="Acme").accepted_ignored == 1


def test_a_non_compliant_charger_stays_booked_at_its_draw_while_no_reading_comes(
    garage, three_at_9_a, chargers
) -> None:
    one, two, three = three_at_9_a
    reading(three, -20, 16.0)
    reading(three, -10, 16.0)
    run(garage, chargers)

    silent = run(garage, chargers, now=NOW + timedelta(minutes=3))  # its readings are too old now

    assert silent.result["allocations_a"]["CP-3/1"] == 16.0
    assert len(open_alerts(SiteAlert.Kind.OVERDRAW)) == 1
    assert site_total_kw(limit_of(one), limit_of(two), 16.0) <= CAP_KW


def test_one_reading_over_and_readings_within_the_reaction_grace_do_not_make_a_charger_non_compliant(
    garage, three_at_9_a, chargers
) -> None:
    one, two, three = three_at_9_a
    # CP-1 accepted its 9 A 12 s ago: the reading 10 s ago is within the 5 s grace, only one counts.
    book(one, 9, confirmed_ago=timedelta(seconds=12))
    reading(one, -10, 16.0)
    reading(one, -5, 16.0)
    # CP-2: one reading over in the last two.
    reading(two, -20, 9.0)
    reading(two, -10, 16.0)
    # CP-3: within the tolerance (9 A + 1 A).
    reading(three, -20, 10.0)
    reading(three, -10, 10.0)

    record = run(garage, chargers)

    assert record.limits["fixed"] == {}
    assert all(books(c).overdraw_since is None for c in three_at_9_a)
    assert books(one).overdraw_count == 1
    assert books(two).overdraw_count == 1
    assert open_alerts(SiteAlert.Kind.OVERDRAW) == []


def test_implausible_readings_never_move_a_limit(garage, three_at_9_a, chargers) -> None:
    *_, three = three_at_9_a
    reading(three, -20, 49.0)  # above 1.5 x its 32 A rating: a broken meter, not a car
    reading(three, -10, 60.0)

    record = run(garage, chargers)

    assert record.limits["fixed"] == {}
    assert "fixed_a" not in next(e for e in record.problem["evses"] if e["id"] == "CP-3/1")
    assert books(three).overdraw_count == 0
    assert open_alerts(SiteAlert.Kind.OVERDRAW) == []
    assert site_total_kw(*record.result["allocations_a"].values()) <= CAP_KW


def test_a_charger_that_rejects_every_profile_does_not_hold_back_the_other_raises(plug_in, chargers) -> None:
    # No demand cap: grid 63 A; Panel A (22 A) holds the refuser CP-R (16 A) and CP-1; Panel B holds CP-2.
    site = SiteFactory(slug="campus", limit_a=Decimal("63"), demand_cap_kw=None, timezone="UTC")
    panel_a = Circuit.objects.create(site=site, name="Panel A", kind="panel", limit_a=Decimal("22"))
    panel_b = Circuit.objects.create(site=site, name="Panel B", kind="panel", limit_a=Decimal("40"))
    refuser = plug_in(site, "CP-R", max_a="16", circuit=panel_a)
    one = plug_in(site, "CP-1", max_a="32", circuit=panel_a)
    two = plug_in(site, "CP-2", max_a="32", circuit=panel_b)
    confirm_failsafe(one)
    confirm_failsafe(two)
    reading(refuser, -10, 16.0)  # no default confirmed: it draws its rating
    chargers.answers["CP-R"] = "Rejected"

    record = run(site, chargers)

    # First solution: 11 A each on Panel A, 32 A for CP-2. CP-R refuses 16 -> 11 A, so the site is
    # solved again with CP-R at 16 A: CP-1 keeps its 6 A (22 - 16), CP-2 still rises to 32 A.
    assert record.result["allocations_a"] == {"CP-R/1": 11.0, "CP-1/1": 11.0, "CP-2/1": 32.0}
    assert chargers.limits(1) == {"CP-2": 32.0}
    assert limit_of(two) == 32
    assert "CP-1" not in chargers.limits(1)
    assert record.limits["resolved_after_refusal"] == {"refused": ["CP-R/1"], "raises": {"CP-2/1": 32.0}}
    # What may really flow: CP-R 16 A, CP-1 its 6 A default (no profile sent), CP-2 32 A.
    assert not ConnectorLimit.objects.filter(connector=one).exists()
    panel_a_a = 16 + 6
    assert panel_a_a <= 22
    assert panel_a_a + limit_of(two) <= 63

    # Next run: CP-R never accepted a limit for its session: booked at its draw, asked again only
    # after 30 s (it is not flooded), and an alert names it.
    reading(refuser, 5, 16.0)
    chargers.batches.clear()
    second = run(site, chargers, now=NOW + timedelta(seconds=10))
    assert second.result["allocations_a"]["CP-R/1"] == 16.0
    assert "CP-R" not in {r.charge_point_id for r in chargers.sent}
    alert = open_alerts(SiteAlert.Kind.NEVER_ACCEPTED)[0]
    assert alert.detail.startswith("CP-R/1 never accepted a limit for transaction")
    assert "planned at 16 A" in alert.detail

    chargers.batches.clear()
    run(site, chargers, now=NOW + timedelta(seconds=45))
    assert chargers.limits() == {"CP-R": 16.0}  # retried: the most it may take while booked at 16 A
    # Three refusals in a row (the lowering, the default at connector level is not counted, the retry...)
    chargers.batches.clear()
    run(site, chargers, now=NOW + timedelta(seconds=80))
    refuses = open_alerts(SiteAlert.Kind.REFUSES)[0]
    assert refuses.detail == "CP-R/1 answered Rejected to 3 profiles in a row"
    compliance = ChargerModelCompliance.objects.get(vendor="", model="")
    assert compliance.profiles_rejected == 6  # CP-R: its default and its TxProfile, at +0, +45 and +80 s
    assert compliance.profiles_accepted == 2  # CP-2's raise, CP-1's first TxProfile (its 6 A, at +10 s)

    # It finally accepts: both alerts clear.
    del chargers.answers["CP-R"]
    chargers.batches.clear()
    run(site, chargers, now=NOW + timedelta(seconds=120))
    assert limit_of(refuser) == 16
    assert open_alerts(SiteAlert.Kind.NEVER_ACCEPTED) == []
    assert open_alerts(SiteAlert.Kind.REFUSES) == []


def test_a_refusal_streak_counts_each_connectors_own_last_pushes_in_one_query(garage, plug_in) -> None:
    refuser, recovered, short = (plug_in(garage, f"CP-{n}") for n in ("A", "B", "C"))
    record = BalancingRun.objects.create(site=garage, reason="test", started_at=NOW, inputs_digest="", problem={})
    history = {
        refuser: ["Accepted", "Rejected", "Timeout", "CallError"],  # the last three refused
        recovered: ["Rejected", "Rejected", "Rejected", "Accepted"],  # refused three, then accepted
        short: ["Rejected", "Rejected"],  # only two so far
    }
    for connector, statuses in history.items():
        for n, status in enumerate(statuses):
            ProfilePush.objects.create(
                run=record,
                station=connector.station,
                connector=connector,
                kind="lower",
                new_limit_a=Decimal("6"),
                payload={},
                status=status,
                sent_at=NOW + timedelta(seconds=n),
            )
    contexts = list(build_problem(garage, NOW).evses.values())

    with CaptureQueriesContext(connection) as captured:
        streaks = _refusal_streaks(contexts)

    assert streaks == {refuser.pk: (3, "CallError")}
    assert len([q for q in captured.captured_queries if "profilepush" in q["sql"]]) == 1  # not one per connector


def test_a_raise_that_no_longer_fits_next_to_a_refused_lowering_is_not_sent(
    garage, plug_in, chargers, django_capture_on_commit_callbacks
) -> None:
    a = plug_in(garage, "CP-A", max_a="32")
    b = plug_in(garage, "CP-B", max_a="32")
    c = plug_in(garage, "CP-C", max_a="32")
    for connector in (a, b, c):
        confirm_failsafe(connector)
    book(a, 20)
    book(b, 6)
    book(c, 6)
    chargers.answers["CP-A"] = "Rejected"

    with django_capture_on_commit_callbacks() as callbacks:
        record = run(garage, chargers)

    # Fair shares (about 9.66 A each) lower A and raise B and C. A refuses: with A at 20 A only
    # 8.98 A are left, room for one car's minimum, so the second solution pauses one of B and C.
    # That one still draws its 6 A, so it is fixed there and the site solved again: 2.98 A left,
    # not enough for the other one either. No raise fits: none is sent.
    assert len(chargers.batches) == 1
    assert record.limits["resolved_after_refusal"] == {"refused": ["CP-A/1"], "raises": {}}
    assert (limit_of(b), limit_of(c)) == (6, 6)
    assert len(callbacks) == 1  # a follow-up run is asked for at once

    # The follow-up run plans around A's 20 A: one of B and C is paused, the site is back under.
    chargers.batches.clear()
    run(garage, chargers, now=NOW + timedelta(seconds=1))
    assert site_total_kw(20, limit_of(b), limit_of(c)) <= CAP_KW
    assert sorted([limit_of(b), limit_of(c)]) == [0, 8]


def test_a_charger_that_never_accepted_is_planned_at_its_rating_until_a_reading_comes(
    garage, plug_in, chargers
) -> None:
    refuser = plug_in(garage, "CP-R", max_a="16")
    one = plug_in(garage, "CP-1", max_a="32")
    confirm_failsafe(one)
    ConnectorLimit.objects.create(
        connector=refuser, last_status="Rejected", requested_a=Decimal("9"), requested_at=NOW - timedelta(seconds=40)
    )
    chargers.answers["CP-R"] = "Rejected"

    record = run(garage, chargers)

    # No reading, no default confirmed: CP-R may draw its 16 A rating. 28.98 - 16 = 12.98 -> CP-1 12 A.
    assert record.result["allocations_a"]["CP-R/1"] == 16.0
    assert limit_of(one) == 12
    assert site_total_kw(16, 12) == 19.32 <= CAP_KW

    # A reading comes: CP-R draws 10 A, so it is booked at 10 A and CP-1 may have 18 A.
    reading(refuser, 5, 9.2)
    run(garage, chargers, now=NOW + timedelta(seconds=10))
    assert limit_of(one) == 18
    assert site_total_kw(10, 18) == 19.32 <= CAP_KW


def test_an_offline_charger_without_a_session_releases_its_reservation_to_its_default(
    garage, plug_in, chargers
) -> None:
    gone = plug_in(garage, "CP-OFF", max_a="32", online=False, session=False, status="Available")
    ConnectorLimit.objects.create(connector=gone, limit_a=Decimal("16"), valid_until=NOW + timedelta(minutes=10))
    confirm_failsafe(gone)
    on = plug_in(garage, "CP-ON", max_a="32")
    confirm_failsafe(on)

    record = run(garage, chargers)

    # Its last profile (16 A) is not reserved any more, only its 6 A default: 28.98 - 6 -> 22 A.
    assert record.limits["reservations"] == [
        {"evse": "CP-OFF/1", "limit_a": 6.0, "why": "offline, no session: fail-safe default 6.0 A"}
    ]
    assert limit_of(on) == 22
    assert site_total_kw(6, 22) == 19.32 <= CAP_KW


def test_an_offline_charger_with_a_reservation_is_an_alert_until_it_is_back(garage, plug_in, chargers) -> None:
    gone = plug_in(garage, "CP-OFF", max_a="32", online=False)
    gone.station.vendor, gone.station.model = "Acme", "Wallbox"
    gone.station.last_seen_at = NOW - timedelta(minutes=3)
    gone.station.save()
    book(gone, 16)
    confirm_failsafe(gone)

    run(garage, chargers)

    alert = open_alerts(SiteAlert.Kind.OFFLINE)[0]
    assert alert.station == gone.station
    assert alert.detail.startswith(
        "CP-OFF is offline (last heard 2026-05-01 16:27:00 UTC) (Acme Wallbox); reserved: CP-OFF/1 16 A"
    )
    assert AuditEvent.objects.filter(object_type="alert", action="alert", field="offline").exists()

    gone.station.is_online = True
    gone.station.save()
    run(garage, chargers)

    assert open_alerts(SiteAlert.Kind.OFFLINE) == []
    assert SiteAlert.objects.get(kind=SiteAlert.Kind.OFFLINE).cleared_at is not None


def test_an_offline_charger_of_a_site_with_a_zero_default_reserves_nothing(garage, plug_in, chargers) -> None:
    garage.idle_default_zero = True
    garage.save()
    gone = plug_in(garage, "CP-OFF", max_a="32", online=False, session=False, status="Available")
    ConnectorLimit.objects.create(connector=gone, limit_a=Decimal("16"), valid_until=NOW + timedelta(minutes=10))
    confirm_failsafe(gone, "0")
    on = plug_in(garage, "CP-ON", max_a="32")
    confirm_failsafe(on, "0")

    run(garage, chargers)

    assert limit_of(on) == 28
    assert site_total_kw(0, 28) == 19.32 <= CAP_KW


def test_an_offline_charger_with_an_open_session_keeps_its_last_profile(garage, plug_in, chargers) -> None:
    gone = plug_in(garage, "CP-OFF", max_a="32", online=False)
    book(gone, 16)
    confirm_failsafe(gone)
    on = plug_in(garage, "CP-ON", max_a="32")
    confirm_failsafe(on)

    run(garage, chargers)

    assert limit_of(on) == 12  # 28.98 - 16
    assert site_total_kw(16, 12) == 19.32 <= CAP_KW


def test_idle_connectors_keep_headroom_for_a_car_that_plugs_in(garage, plug_in, chargers) -> None:
    idle = [plug_in(garage, f"CP-I{n}", max_a="32", session=False, status="Available") for n in (1, 2, 3)]
    for connector in idle:
        confirm_failsafe(connector)
    busy = plug_in(garage, "CP-1", max_a="32")
    confirm_failsafe(busy)

    record = run(garage, chargers)

    # Three idle connectors at their 6 A default are booked: 28.98 - 18 = 10.98 -> CP-1 gets 10 A.
    assert {k: v for k, v in record.result["allocations_a"].items() if k.startswith("CP-I")} == {
        "CP-I1/1": 6.0,
        "CP-I2/1": 6.0,
        "CP-I3/1": 6.0,
    }
    assert limit_of(busy) == 10
    # A car plugs in on CP-I1 and starts at its 6 A default before any profile: still under the cap.
    assert site_total_kw(6, 6, 6, 10) == 19.32 <= CAP_KW


def test_an_idle_station_that_never_confirmed_a_default_is_booked_at_its_rating(garage, plug_in, chargers) -> None:
    idle = plug_in(garage, "CP-I", max_a="16", session=False, status="Available")
    busy = plug_in(garage, "CP-1", max_a="32")
    confirm_failsafe(busy)
    chargers.answers["CP-I"] = "Rejected"  # it refuses its default too

    record = run(garage, chargers)

    assert record.result["allocations_a"]["CP-I/1"] == 16.0
    assert limit_of(busy) == 12  # 28.98 - 16
    assert site_total_kw(16, 12) <= CAP_KW
    assert not StationFailsafe.objects.get(station=idle.station).confirmed_at


def test_a_site_with_a_zero_default_pushes_0_a_defaults_and_books_no_headroom_once_confirmed(
    garage, plug_in, chargers
) -> None:
    garage.idle_default_zero = True
    garage.save()
    plug_in(garage, "CP-I", max_a="16", session=False, status="Available")
    busy = plug_in(garage, "CP-1", max_a="32")

    run(garage, chargers)

    defaults = [
        r.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
        for r in chargers.sent
        if r.payload["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
    ]
    assert defaults == [0.0, 0.0]
    assert set(StationFailsafe.objects.values_list("limit_a", flat=True)) == {0}

    chargers.batches.clear()
    second = run(garage, chargers, now=NOW + timedelta(seconds=30))
    assert second.result["allocations_a"]["CP-I/1"] == 0.0  # a newcomer waits for its first profile
    assert limit_of(busy) == 28
    assert site_total_kw(0, 28) == 19.32 <= CAP_KW


def test_a_sleeping_car_takes_turns_with_waiting_cars(garage, plug_in, chargers) -> None:
    # Five cars want 6 A each (30 A) but the cap leaves 28.98 A: one must wait. CP-A's car
    # sleeps: offered 6 A for 10 minutes, it draws nothing (it did not resume after a pause once).
    sleeper = plug_in(garage, "CP-A", max_a="32", status="SuspendedEV")
    charging = [plug_in(garage, f"CP-{n}", max_a="32") for n in (1, 2, 3)]
    waiting = plug_in(garage, "CP-W", max_a="32")
    for connector in [sleeper, *charging, waiting]:
        confirm_failsafe(connector)
    book(sleeper, 6, charging_since=NOW - timedelta(minutes=10), no_resume_count=1)
    for connector in charging:
        book(connector, 6, charging_since=NOW - timedelta(minutes=10))
        reading(connector, -20, 6.0)
        reading(connector, -10, 6.0)
    book(waiting, 0, paused_since=NOW - timedelta(minutes=10))
    reading(sleeper, -20, 0.0)
    reading(sleeper, -10, 0.0)

    record = run(garage, chargers)

    allocations = record.result["allocations_a"]
    assert allocations["CP-A/1"] == 0.0  # the sleeping car is paused first
    assert all(allocations[k] >= 6 for k in ("CP-1/1", "CP-2/1", "CP-3/1", "CP-W/1"))
    assert site_total_kw(*allocations.values()) <= CAP_KW
    alert = open_alerts(SiteAlert.Kind.SLEEPING_CAR)[0]
    assert alert.connector == sleeper
    assert alert.detail.startswith("car on CP-A/1 draws 0.0 A of 6 A offered for over 120 s")

    # CP-3's car leaves; after its minimum off time the sleeping car is offered its minimum again.
    ChargingSession.objects.filter(connector=charging[2]).update(stopped_at=NOW + timedelta(minutes=5))
    Connector.objects.filter(pk=charging[2].pk).update(status="Available")
    later = run(garage, chargers, now=NOW + timedelta(minutes=6))
    assert later.result["allocations_a"]["CP-A/1"] >= 6
    assert site_total_kw(*later.result["allocations_a"].values()) <= CAP_KW

    # It draws again: the alert clears.
    reading(sleeper, 6 * 60 + 20, 6.0)
    run(garage, chargers, now=NOW + timedelta(minutes=6, seconds=30))
    assert open_alerts(SiteAlert.Kind.SLEEPING_CAR) == []


def test_site_and_connector_alerts_clear_when_their_condition_ends(garage, plug_in, chargers) -> None:
    # A grid meter shows 21 kW over the 20 kW cap; CP-A's car was found asleep before (no reading since).
    connector = plug_in(garage, "CP-A", max_a="32")
    confirm_failsafe(connector)
    book(connector, 9)
    SiteAlert.objects.create(
        site=garage,
        station=connector.station,
        connector=connector,
        kind=SiteAlert.Kind.SLEEPING_CAR,
        detail="car on CP-A/1 draws 0.0 A of 9 A offered for over 120 s",
        opened_at=NOW - timedelta(minutes=5),
        last_seen_at=NOW - timedelta(minutes=1),
    )
    SiteMeterReading.objects.create(
        site=garage, measured_at=NOW - timedelta(seconds=5), source=SiteMeterReading.Source.API, power_kw=Decimal("21")
    )

    run(garage, chargers)

    assert [a.detail for a in open_alerts(SiteAlert.Kind.SITE_OVER_LIMIT)] == [
        "site meter 21 kW over 20 kW (demand_cap)"
    ]
    assert [a.connector for a in open_alerts(SiteAlert.Kind.SLEEPING_CAR)] == [connector]

    # The meter is within the cap again and CP-A's session ends: nothing stays open.
    SiteMeterReading.objects.create(
        site=garage, measured_at=NOW + timedelta(seconds=25), source=SiteMeterReading.Source.API, power_kw=Decimal("5")
    )
    ChargingSession.objects.filter(connector=connector).update(stopped_at=NOW + timedelta(seconds=20))
    run(garage, chargers, now=NOW + timedelta(seconds=30))

    assert open_alerts(SiteAlert.Kind.SITE_OVER_LIMIT) == []
    assert open_alerts(SiteAlert.Kind.SLEEPING_CAR) == []
    cleared = AuditEvent.objects.filter(action="alert-cleared").order_by("pk")
    assert [(e.field, e.new_value) for e in cleared] == [
        (SiteAlert.Kind.SLEEPING_CAR, "session ended"),
        (SiteAlert.Kind.SITE_OVER_LIMIT, "site meter within the limits"),
    ]


def test_the_reaction_time_from_an_accepted_lowering_to_the_draw_following_it_is_recorded(
    garage, plug_in, chargers
) -> None:
    one = plug_in(garage, "CP-1", max_a="32")
    two = plug_in(garage, "CP-2", max_a="32")
    for connector in (one, two):
        make_ignoring(connector, vendor="Fast", model="Follower", firmware="2.0")
        confirm_failsafe(connector)
        book(connector, 16)
        reading(connector, -10, 16.0)

    run(garage, chargers)  # 32 A booked on 28.98 A: both are lowered to 14 A while drawing 16 A

    assert chargers.limits() == {"CP-1": 14.0, "CP-2": 14.0}
    assert books(one).accepted_at == NOW
    for connector in (one, two):
        reading(connector, 4, 16.0)  # still ramping down
        reading(connector, 8, 14.0)  # follows 8 s after the accept
    run(garage, chargers, now=NOW + timedelta(seconds=10))

    record = ChargerModelCompliance.objects.get(vendor="Fast", model="Follower", firmware_version="2.0")
    assert (record.reactions, record.reaction_s_total, record.mean_reaction_s) == (2, 16.0, 8.0)
    assert record.profiles_accepted == 2
    assert record.accepted_ignored == 0
    assert books(one).accepted_at is None  # measured once
    assert site_total_kw(limit_of(one), limit_of(two)) == 19.32 <= CAP_KW


def test_a_model_that_ignored_two_limits_also_gets_its_limit_as_a_station_wide_max(
    garage, three_at_9_a, chargers
) -> None:
    *_, three = three_at_9_a
    make_ignoring(three)
    ChargerModelCompliance.objects.create(vendor="Acme", model="Wallbox", firmware_version="1.2", accepted_ignored=1)
    reading(three, -20, 16.0)
    reading(three, -10, 16.0)

    run(garage, chargers)

    record = ChargerModelCompliance.objects.get(vendor="Acme")
    assert (record.accepted_ignored, record.use_station_max) == (2, True)

    chargers.batches.clear()
    reading(three, 5, 16.0)
    run(garage, chargers, now=NOW + timedelta(seconds=10))
    station_max = [
        r.payload["csChargingProfiles"]
        for r in chargers.sent
        if r.payload["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
    ]
    assert [(r["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]) for r in station_max] == [9.0]
    assert {r.charge_point_id for r in chargers.sent} == {"CP-3"}  # the others stay at 6 A


def test_an_operator_who_clears_the_station_wide_max_of_a_model_is_heard(garage, three_at_9_a, chargers) -> None:
    *_, three = three_at_9_a
    make_ignoring(three)
    # Two ignored limits on record, but an operator cleared the switch in the admin.
    ChargerModelCompliance.objects.create(
        vendor="Acme", model="Wallbox", firmware_version="1.2", accepted_ignored=2, use_station_max=False
    )

    run(garage, chargers)

    purposes = {
        (r.payload.get("csChargingProfiles") or r.payload["chargingProfile"])["chargingProfilePurpose"]
        for r in chargers.sent
    }
    assert "ChargePointMaxProfile" not in purposes
    assert not ChargerModelCompliance.objects.get(vendor="Acme").use_station_max


def test_overdrawing_chargers_are_handed_to_the_site_escalation(garage, three_at_9_a, chargers, monkeypatch) -> None:
    *_, three = three_at_9_a
    reading(three, -20, 16.0)
    reading(three, -10, 16.0)
    calls = []

    def escalate(*, site, overdrawing, now):
        calls.append((site, overdrawing, now))
        return ["CP-3/1: stop requested"]

    monkeypatch.setattr("balancing.runs.site_escalations_apply", escalate)

    record = run(garage, chargers)

    assert calls == [(garage, [(three, three.sessions.get(), NOW - timedelta(seconds=20))], NOW)]
    assert record.limits["escalations"] == ["CP-3/1: stop requested"]


def test_settings_set_the_tx_profile_validity_and_renewal(garage, plug_in, chargers, settings) -> None:
    settings.BALANCING_TX_PROFILE_VALIDITY_S = 120
    settings.BALANCING_TX_RENEW_BEFORE_S = 30
    connector = plug_in(garage, "CP-1", max_a="16")

    run(garage, chargers)
    assert books(connector).valid_until == NOW + timedelta(seconds=120)

    chargers.batches.clear()
    run(garage, chargers, now=NOW + timedelta(seconds=80))  # 40 s left: not yet
    assert chargers.sent == []
    run(garage, chargers, now=NOW + timedelta(seconds=95))  # 25 s left: renewed
    assert list(chargers.limits()) == ["CP-1"]
    assert books(connector).valid_until == NOW + timedelta(seconds=215)


def test_a_reading_above_the_books_asks_for_a_rebalance_at_once(garage, plug_in) -> None:
    from chargepoint.telemetry import telemetry_apply

    connector = plug_in(garage, "CP-1", max_a="32")
    book(connector, 9)
    session = connector.sessions.get()

    def meter(seconds: float, amps: str) -> dict:
        at = (NOW + timedelta(seconds=seconds)).isoformat()
        sample = {"at": at, "measurand": "Current.Import", "phase": "L1", "value": amps, "unit": "A"}
        return {
            "type": "meter",
            "cp": "CP-1",
            "ts": at,
            "connector": 1,
            "transaction_id": session.transaction_id,
            "samples": [sample],
        }

    within = telemetry_apply(events=[meter(1, "9.9")])  # 9 A + 1 A tolerance
    over = telemetry_apply(events=[meter(2, "10.5")])

    assert within.rebalance == {}
    assert over.rebalance == {garage.pk: "CP-1: connector 1 draws 10.5 A over 9 A"}

    # Once a run booked it at its draw (16 A), the same draw is no news; more is.
    ConnectorLimit.objects.filter(connector=connector).update(
        overdraw_count=2, overdraw_since=NOW, overdraw_a=Decimal("16")
    )
    assert telemetry_apply(events=[meter(3, "16.8")]).rebalance == {}  # within 16 A + 1.6 A
    assert telemetry_apply(events=[meter(4, "18")]).rebalance == {garage.pk: "CP-1: connector 1 draws 18.0 A over 16 A"}


# --- A fleet over time: chargers that obey, ignore or refuse, read every 10 s, balanced every 10 s ---


@dataclass
class SimCharger:
    """A charger with a car: draws what its limit in force allows, or (``ignores``) its car's rate."""

    rating_a: float
    car_a: float
    mode: str = "obeys"  # "obeys", "ignores" (accepts, draws its car's rate), "rejects" (refuses all)
    tx_a: float | None = None
    default_a: float | None = None

    def draw_a(self) -> float:
        if self.mode == "ignores":
            return self.car_a
        in_force = self.tx_a if self.tx_a is not None else self.default_a
        return min(self.car_a, self.rating_a if in_force is None else in_force)


@dataclass
class Fleet:
    """The command path of a simulated fleet: applies (or refuses) the profiles it is sent."""

    chargers: dict[str, SimCharger]

    def send_many(self, requests):
        answers = []
        for request in requests:
            charger = self.chargers[request.charge_point_id]
            if charger.mode == "rejects":
                answers.append(PushAnswer("Rejected"))
                continue
            profile = request.payload.get("csChargingProfiles") or request.payload["chargingProfile"]
            schedule = profile["chargingSchedule"]
            schedule = schedule[0] if isinstance(schedule, list) else schedule
            limit = float(schedule["chargingSchedulePeriod"][0]["limit"])
            if profile["chargingProfilePurpose"] == "TxDefaultProfile":
                charger.default_a = limit
            elif profile["chargingProfilePurpose"] == "TxProfile":
                charger.tx_a = limit
            answers.append(PushAnswer("Accepted"))
        return answers

    def total_a(self) -> float:
        return sum(c.draw_a() for c in self.chargers.values())


def simulate(site, fleet: Fleet, connectors: dict, seconds: int) -> list[tuple[int, float]]:
    """Every 10 s each charger reports its draw, then the site is balanced; returns (t, site A) after each run."""
    return simulate_from(site, fleet, connectors, start=0, seconds=seconds)


@pytest.mark.parametrize("ocpp_version", ["1.6", "2.0.1"])
@pytest.mark.parametrize("mode", ["ignores", "rejects"])
def test_a_fleet_with_a_misbehaving_charger_stays_under_the_cap_from_two_readings_on(
    garage, plug_in, ocpp_version, mode
) -> None:
    # Four 32 A chargers, cars taking 16 A each: 64 A = 44.2 kW unmanaged on a 28.98 A (20 kW) cap.
    # CP-X does not follow: it keeps drawing its car's 16 A. Detected after two readings (20 s) at
    # most, the others then share 28.98 - 16 = 12.98 A: two at 6 A, one paused (19.32 kW).
    fleet = Fleet({cp: SimCharger(32.0, 16.0) for cp in ("CP-1", "CP-2", "CP-3")})
    fleet.chargers["CP-X"] = SimCharger(32.0, 16.0, mode=mode)
    connectors = {cp: plug_in(garage, cp, max_a="32", ocpp_version=ocpp_version) for cp in fleet.chargers}

    totals = simulate(garage, fleet, connectors, seconds=120)

    cap_a = CAP_KW / KW_PER_A
    late = [(t, total) for t, total in totals if t >= 20]
    assert all(total <= cap_a for _, total in late), late
    behaving = [c.draw_a() for cp, c in fleet.chargers.items() if cp != "CP-X"]
    assert sum(behaving) >= 0.8 * (cap_a - 16.0)  # they use at least 80 % of what the cap leaves them
    kind = SiteAlert.Kind.OVERDRAW if mode == "ignores" else SiteAlert.Kind.NEVER_ACCEPTED
    assert [a.connector.station.charge_point_id for a in open_alerts(kind)] == ["CP-X"]

    # CP-X's car leaves: the others share the whole cap again.
    ChargingSession.objects.filter(connector=connectors["CP-X"]).update(stopped_at=NOW + timedelta(seconds=125))
    Connector.objects.filter(pk=connectors["CP-X"].pk).update(status="Available")
    fleet.chargers["CP-X"].car_a = 0.0
    del connectors["CP-X"]
    after = simulate_from(garage, fleet, connectors, start=130, seconds=400)
    assert all(total <= cap_a for _, total in after)
    assert open_alerts(kind) == []
    # CP-X's idle connector keeps headroom for its default (6 A, or its rating if it refused it).
    headroom = 6.0 if mode == "ignores" else 32.0
    assert sum(c.draw_a() for cp, c in fleet.chargers.items() if cp != "CP-X") >= 0.8 * (cap_a - headroom)


def simulate_from(site, fleet: Fleet, connectors: dict, start: int, seconds: int) -> list[tuple[int, float]]:
    totals = []
    for t in range(start, seconds + 1, 10):
        for cp, connector in connectors.items():
            reading(connector, t - 1, fleet.chargers[cp].draw_a())
        run(site, fleet, now=NOW + timedelta(seconds=t))
        totals.append((t, fleet.total_a()))
    return totals


def test_a_profile_without_an_answer_asks_the_charger_what_it_applies(garage, plug_in, chargers, monkeypatch) -> None:
    asked: list[tuple[int, str]] = []
    monkeypatch.setattr(
        "balancing.runs.station_resync_request", lambda *, station_id, reason: asked.append((station_id, reason))
    )
    silent = plug_in(garage, "CP-T", max_a="32")
    answering = plug_in(garage, "CP-A", max_a="32")
    confirm_failsafe(silent)
    confirm_failsafe(answering)
    chargers.answers["CP-T"] = "Timeout"

    run(garage, chargers)

    # Did CP-T take its profile? Nobody knows: it is asked (TriggerMessage, GetCompositeSchedule).
    assert asked == [(silent.station.pk, "no answer to a charging profile")]


def test_a_renewal_of_the_same_limit_keeps_when_it_was_first_accepted(garage, plug_in, chargers) -> None:
    # One car alone under the 20 kW cap on three phases: 28.98 A -> 28 A, its rating 32 A.
    car = plug_in(garage, "CP-1", max_a="32")
    confirm_failsafe(car)
    book(car, 28, valid_until=NOW + timedelta(minutes=2))  # renewal due (less than 5 minutes left)

    run(garage, chargers)

    renewed = books(car)
    assert chargers.limits() == {"CP-1": 28.0}
    assert renewed.valid_until > NOW + timedelta(minutes=10)
    # The car has had 28 A for ten minutes: its ramp-up and reaction clocks do not start again.
    assert renewed.confirmed_at == NOW - timedelta(minutes=10)
