"""Balancing runs against the real database, with a charger double for the command path."""

from datetime import timedelta
from decimal import Decimal

import pytest

from balancing.models import BalancingRun, ConnectorLimit, ProfilePush, StationFailsafe
from balancing.runs import site_balance_run
from tests.balancing.conftest import NOW

pytestmark = pytest.mark.django_db

KW_PER_A_3PH = 3 * 230 / 1000
TX_PROFILE_VALIDITY = timedelta(seconds=900)  # BALANCING_TX_PROFILE_VALIDITY_S
RENEW_BEFORE = timedelta(seconds=300)  # BALANCING_TX_RENEW_BEFORE_S


def run(site, chargers, now=NOW, reason="test") -> BalancingRun:
    return site_balance_run(site=site, reason=reason, pusher=chargers, now=now)


def confirm_failsafes(site) -> None:
    for station in site.stations.all():
        StationFailsafe.objects.update_or_create(
            station=station, defaults={"limit_a": site.failsafe_a, "confirmed_at": NOW - timedelta(hours=1)}
        )


def book(connector, limit_a, **fields) -> ConnectorLimit:
    """What the books say is in force on ``connector`` for its open session."""
    return ConnectorLimit.objects.create(
        connector=connector,
        limit_a=limit_a,
        transaction_id=connector.sessions.get().transaction_id,
        valid_until=NOW + TX_PROFILE_VALIDITY,
        **fields,
    )


def two_cars_booked_at_20_and_6_a(garage, plug_in):
    """Books: A holds 20 A, B only 6 A; a fair split of 20 kW gives each about 14 A."""
    a = plug_in(garage, "CP-A", max_a="32")
    b = plug_in(garage, "CP-B", max_a="32")
    confirm_failsafes(garage)
    book(a, 20)
    book(b, 6)
    return a, b


def test_the_seed_scenario_holds_four_cars_under_20_kw(garage, plug_in, chargers) -> None:
    for n in range(1, 5):
        plug_in(garage, f"CP-{n}", max_a="16")

    record = run(garage, chargers)

    limits = chargers.limits()
    assert set(limits) == {"CP-1", "CP-2", "CP-3", "CP-4"}
    assert sum(limits.values()) * KW_PER_A_3PH <= 20.0
    assert all(6 <= a < 16 for a in limits.values())  # all charge, all below their rating
    assert record.status == BalancingRun.Status.OK
    assert record.limits["bound_kw"] == "demand_cap"
    assert record.unmanaged_kw == pytest.approx(4 * 16 * KW_PER_A_3PH)  # above the cap: the brochure's picture
    assert record.allocated_kw <= 20.0 < record.unmanaged_kw
    assert len(record.inputs_digest) == 64
    assert record.result["allocations_a"] == {f"CP-{n}/1": limits[f"CP-{n}"] for n in range(1, 5)}


def test_fail_safe_defaults_go_first_and_are_booked(garage, plug_in, chargers) -> None:
    plug_in(garage, "CP-1")

    run(garage, chargers)

    first = chargers.batches[0]
    purposes = [(r.payload.get("csChargingProfiles") or {}).get("chargingProfilePurpose") for r in first]
    assert "TxDefaultProfile" in purposes
    failsafe = StationFailsafe.objects.get(station__charge_point_id="CP-1")
    assert failsafe.confirmed_at is not None
    assert failsafe.limit_a == garage.failsafe_a


def test_a_refused_new_default_keeps_the_confirmed_one_and_records_each_answer(garage, plug_in, chargers) -> None:
    plug_in(garage, "CP-1")
    plug_in(garage, "CP-2")
    confirm_failsafes(garage)
    confirmed = garage.failsafe_a
    garage.failsafe_a = confirmed + 1  # a new default is due for every station
    chargers.answers.update({"CP-1": "Rejected", "CP-2": "CallError"})

    run(garage, chargers)

    assert {r.charge_point_id for r in chargers.batches[0]} == {"CP-1", "CP-2"}
    kept = StationFailsafe.objects.order_by("station__charge_point_id")
    assert [(f.limit_a, f.confirmed_at, f.last_status) for f in kept] == [
        (confirmed, NOW - timedelta(hours=1), "Rejected"),
        (confirmed, NOW - timedelta(hours=1), "CallError"),
    ]


def test_lowerings_go_before_raises(garage, plug_in, chargers) -> None:
    two_cars_booked_at_20_and_6_a(garage, plug_in)

    run(garage, chargers)

    assert len(chargers.batches) == 2
    assert set(chargers.limits(0)) == {"CP-A"}
    assert set(chargers.limits(1)) == {"CP-B"}
    assert chargers.limits(0)["CP-A"] < 20 < chargers.limits(1)["CP-B"] + chargers.limits(0)["CP-A"]
    assert list(ProfilePush.objects.order_by("pk").values_list("kind", flat=True)) == ["lower", "raise"]


def test_a_rejected_lowering_keeps_the_old_value_and_raises_only_into_what_it_leaves(garage, plug_in, chargers) -> None:
    # Behaviour changed with the closed loop (issue 11): a refused lowering no longer holds back
    # every raise; the site is solved again with A fixed at its 20 A and B rises into the rest.
    a, b = two_cars_booked_at_20_and_6_a(garage, plug_in)
    chargers.answers["CP-A"] = "Rejected"

    record = run(garage, chargers)

    assert record.status == BalancingRun.Status.PARTIAL
    assert ConnectorLimit.objects.get(connector=a).limit_a == 20
    # 20 kW / 0.69 kW per A = 28.98 A for both: A keeps 20 A, so B may have 8 A (not its fair 14 A).
    assert chargers.limits(1) == {"CP-B": 8.0}
    assert ConnectorLimit.objects.get(connector=b).limit_a == 8
    assert record.limits["resolved_after_refusal"] == {"refused": ["CP-A/1"], "raises": {"CP-B/1": 8.0}}

    # The next run plans around A's 20 A: B may rise only into what A leaves.
    chargers.batches.clear()
    run(garage, chargers, now=NOW + timedelta(seconds=30))
    booked_a = 20.0
    b_limit = chargers.limits().get("CP-B", 8.0)
    assert (booked_a + b_limit) * KW_PER_A_3PH <= 20.0 + 1e-9
    assert "CP-A" in chargers.limits()  # the lowering is retried


def test_an_unchanged_site_sends_nothing_until_validity_needs_renewing(garage, plug_in, chargers) -> None:
    plug_in(garage, "CP-1", max_a="16")
    run(garage, chargers)
    chargers.batches.clear()

    run(garage, chargers, now=NOW + timedelta(minutes=1))
    assert chargers.sent == []

    later = NOW + TX_PROFILE_VALIDITY - RENEW_BEFORE + timedelta(seconds=1)
    run(garage, chargers, now=later)
    assert list(chargers.limits()) == ["CP-1"]
    assert list(ProfilePush.objects.filter(run__started_at=later).values_list("kind", flat=True)) == ["renew"]
    assert ConnectorLimit.objects.get().valid_until == later + TX_PROFILE_VALIDITY


def test_a_car_that_draws_less_lets_the_others_have_the_rest(garage, plug_in, chargers) -> None:
    plug_in(garage, "CP-FULL", max_a="32", draw_a=2.0)
    plug_in(garage, "CP-HUNGRY", max_a="32", draw_a=14.0)
    confirm_failsafes(garage)
    for cp in ("CP-FULL", "CP-HUNGRY"):
        c = garage.stations.get(charge_point_id=cp).connectors.get()
        book(c, 14, confirmed_at=NOW - timedelta(minutes=5))

    run(garage, chargers)

    limits = chargers.limits()
    assert limits["CP-HUNGRY"] > 14
    assert limits["CP-FULL"] < 14
    assert sum(limits.values()) * KW_PER_A_3PH <= 20.0


def test_an_offline_charger_is_not_pushed_and_its_current_stays_reserved(garage, plug_in, chargers) -> None:
    off = plug_in(garage, "CP-OFF", max_a="32", online=False)
    book(off, 16)
    plug_in(garage, "CP-ON", max_a="32")

    record = run(garage, chargers)

    assert "CP-OFF" not in {r.charge_point_id for r in chargers.sent}
    assert (16 + chargers.limits()["CP-ON"]) * KW_PER_A_3PH <= 20.0
    assert record.limits["reservations"][0]["evse"] == "CP-OFF/1"


def test_an_invalid_engine_answer_is_never_pushed(garage, plug_in, chargers, monkeypatch) -> None:
    plug_in(garage, "CP-1", max_a="32")
    monkeypatch.setattr("balancing.runs.solve", lambda problem: {"allocations_a": {"CP-1/1": 32.0}})

    with pytest.raises(RuntimeError, match="violates"):
        run(garage, chargers)

    assert chargers.sent == []
    assert BalancingRun.objects.get().status == BalancingRun.Status.FAILED


def test_a_car_that_does_not_resume_after_a_pause_is_flagged(garage, plug_in, chargers) -> None:
    connector = plug_in(garage, "CP-1", max_a="16", status="SuspendedEV", draw_a=0.0)
    book(connector, Decimal("10"), resumed_at=NOW - timedelta(minutes=5))

    run(garage, chargers)

    limit = ConnectorLimit.objects.get(connector=connector)
    assert limit.no_resume_count == 1
    assert limit.resumed_at is None


def test_an_idle_connector_given_0_a_is_not_counted_as_paused(garage, plug_in, chargers) -> None:
    idle = plug_in(garage, "CP-IDLE", max_a="16", status="Finishing")  # session still open, car done
    run(garage, chargers)
    limit = ConnectorLimit.objects.get(connector=idle)
    assert limit.limit_a == 0
    assert limit.paused_since is None

    idle.status = "Charging"  # it wants energy again: it must not sit out a minimum off time
    idle.save()
    run(garage, chargers, now=NOW + timedelta(seconds=30))
    assert ConnectorLimit.objects.get(connector=idle).limit_a > 0
