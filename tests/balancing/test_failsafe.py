"""The fail-safe sized to the site: every charger at it at once stays within every limit.

Figures worked by hand at 230 V: a three-phase charger at f A draws 3 x f x 230 W, a
single-phase one f x 230 W; a charger never draws more than its rating. The sized value is at
most ``BALANCING_FAILSAFE_TARGET_A`` (6 A by default); most tests here lift that target so the
figures show the largest current that fits, and the target has tests of its own below.
"""

from datetime import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from balancing.failsafe import site_failsafe_breach, site_failsafe_size
from balancing.models import Circuit, Site, SiteLimitSchedule
from balancing.services import circuit_create_or_update, schedule_create, site_create_or_update
from chargepoint.models import ChargingStation, Connector
from chargepoint.services import charger_register
from evplatform.redis import get_redis, tenant_key
from tenants.accounts.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_target(request, settings) -> None:
    """The largest fitting current, unless a test asks for the ``default_target``."""
    if "default_target" not in request.fixturenames:
        settings.BALANCING_FAILSAFE_TARGET_A = 1000


@pytest.fixture
def default_target(settings) -> int:
    return int(settings.BALANCING_FAILSAFE_TARGET_A)


PASSWORD = "sizing-charger-pass-01"


def station(
    site: Site, cp_id: str, *, max_a: str = "32", phases: int = 3, wiring: str | None = None, circuit=None, **extra
) -> ChargingStation:
    """A charger with one connector, written straight to the tables (no refresh)."""
    made = ChargingStation.objects.create(
        charge_point_id=cp_id,
        site=site,
        circuit=circuit,
        max_current_a=Decimal(max_a),
        phases=phases,
        wiring=wiring or ("L1L2L3" if phases == 3 else "L1"),
        **extra,
    )
    Connector.objects.create(station=made, connector_id=1)
    return made


def failsafe_audits(site: Site) -> list[tuple[str, str, str]]:
    events = AuditEvent.objects.filter(object_type="site", object_id=str(site.pk), field="failsafe_a")
    return [(e.actor, e.old_value, e.new_value) for e in events.order_by("pk")]


def demo_site() -> Site:
    """The brochure's garage: 63 A three-phase grid, 20 kW cap, one panel (sized, no chargers)."""
    site = site_create_or_update(
        slug="garage", name="Garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"), phases=3
    ).obj
    circuit_create_or_update(site=site, name="Panel A", kind="panel", limit_a=Decimal("63"))
    return site


def register(tenant, cp_id: str, *, site: str = "garage", max_a: str = "16", **extra):
    return charger_register(
        tenant=tenant,
        site_slug=site,
        charge_point_id=cp_id,
        password=PASSWORD,
        max_current_a=Decimal(max_a),
        **extra,
    )


def test_the_demo_site_is_resized_as_each_charger_is_registered_down_to_7_a(tenant) -> None:
    site = demo_site()

    for n in range(1, 5):
        register(tenant, f"DEMO-{n}", circuit_name="Panel A")

    site.refresh_from_db()
    # 4 x 3 x f x 230 <= 20000 -> f <= 7.2; the grid (4 f <= 63) and the panel allow 15 A.
    assert site.failsafe_a == Decimal("7")
    assert "the demand cap allows 20 kW" in site_failsafe_size(site=site).bound
    # One charger: its 16 A rating; two: 20000 / 1380 = 14.5; three: 20000 / 2070 = 9.7; four: 7.2.
    assert [new for _actor, _old, new in failsafe_audits(site)] == ["16", "14", "9", "7"]
    assert {actor for actor, _old, _new in failsafe_audits(site)} == {"system:charger_register"}


def test_twenty_single_phase_chargers_on_20_kw_get_0_a(tenant) -> None:
    site = Site.objects.create(slug="lot", name="Lot", phases=1, limit_a=Decimal("200"), demand_cap_kw=Decimal("20"))
    for n in range(20):
        station(site, f"LOT-{n}", phases=1)

    sizing = site_failsafe_size(site=site)

    # 20 x f x 230 <= 20000 -> f <= 4.3: below 6 A, so 0 (a car waits for its first profile).
    assert (sizing.max_a, sizing.value_a, sizing.connectors) == (4, Decimal(0), 20)
    assert sizing.bound == "20 chargers at 4 A need 18.4 kW; the demand cap allows 20 kW (so 0: below 6 A)"


def test_a_nested_circuit_binds_for_the_chargers_below_it() -> None:
    site = Site.objects.create(slug="campus", name="Campus", limit_a=Decimal("100"))
    row = Circuit.objects.create(site=site, name="Row A", limit_a=Decimal("26"))
    bay = Circuit.objects.create(site=site, name="Bay 1", parent=row, limit_a=Decimal("63"))
    for n in range(4):
        station(site, f"BAY-{n}", circuit=bay)
    station(site, "OTHER", circuit=None)

    sizing = site_failsafe_size(site=site)

    # Row A carries the four chargers in Bay 1: 4 f <= 26 -> 6 A (the grid: 5 f <= 100 -> 20 A).
    assert sizing.value_a == Decimal(6)
    assert sizing.bound == "4 chargers at 6 A need 24 A on L1; circuit 'Row A' allows 26 A"


def test_a_circuit_power_limit_counts_each_chargers_phases() -> None:
    site = Site.objects.create(slug="campus", name="Campus", limit_a=Decimal("100"))
    row = Circuit.objects.create(site=site, name="Row A", limit_a=Decimal("100"), limit_kw=Decimal("11"))
    station(site, "THREE", circuit=row)
    station(site, "ONE", phases=1, wiring="L2", circuit=row)

    # (3 + 1) x f x 230 <= 11000 -> f <= 11.96 -> 11 A.
    assert site_failsafe_size(site=site).value_a == Decimal(11)


@pytest.mark.parametrize(("wirings", "expected"), [(["L1", "L2", "L3"], 20), (["L1", "L1", "L1"], 6)])
def test_phase_wiring_decides_which_phase_carries_a_single_phase_charger(wirings: list[str], expected: int) -> None:
    site = Site.objects.create(slug="row", name="Row", limit_a=Decimal("20"))
    for n, wiring in enumerate(wirings):
        station(site, f"ROW-{n}", phases=1, wiring=wiring)

    # One charger per phase: f <= 20 (its 32 A rating allows more); all on L1: 3 f <= 20 -> 6 A.
    assert site_failsafe_size(site=site).value_a == Decimal(expected)


def test_the_demand_cap_leaves_the_building_allowance() -> None:
    site = Site.objects.create(slug="office", name="Office", limit_a=Decimal("100"), demand_cap_kw=Decimal("20"))
    station(site, "OFF-1")
    station(site, "OFF-2")
    assert site_failsafe_size(site=site).value_a == Decimal(14)  # 2 x 3 x f x 230 <= 20000 -> 14.5

    site.building_allowance_kw = Decimal("5")

    sizing = site_failsafe_size(site=site)
    assert sizing.value_a == Decimal(10)  # <= 15000 -> 10.9
    assert "the demand cap less the 5 kW building allowance allows 15 kW" in sizing.bound


def test_a_schedule_binds_even_outside_its_window_and_schedule_create_resizes(tenant) -> None:
    site = site_create_or_update(slug="mall", name="Mall", limit_a=Decimal("100"), demand_cap_kw=Decimal("40")).obj
    register(tenant, "MALL-1", site="mall", max_a="32")
    register(tenant, "MALL-2", site="mall", max_a="32")
    site.refresh_from_db()
    assert site.failsafe_a == Decimal(28)  # 40000 / 1380 = 28.99

    schedule_create(
        schedule=SiteLimitSchedule(
            site=site, name="peak", weekdays="0", start_time=time(3), end_time=time(4), limit_kw=Decimal("10")
        ),
        actor="energy@alpha.example",
    )

    site.refresh_from_db()
    assert site.failsafe_a == Decimal(7)  # 10000 / 1380 = 7.2
    assert failsafe_audits(site)[-1] == ("energy@alpha.example", "28.0", "7")


def test_a_schedule_current_limit_counts_per_phase() -> None:
    site = Site.objects.create(slug="mall", name="Mall", limit_a=Decimal("100"))
    station(site, "MALL-1")
    station(site, "MALL-2")
    SiteLimitSchedule.objects.create(
        site=site, name="night", start_time=time(22), end_time=time(6), limit_a=Decimal("15")
    )

    sizing = site_failsafe_size(site=site)
    assert sizing.value_a == Decimal(7)  # 2 f <= 15
    assert sizing.bound == "2 chargers at 7 A need 14 A on L1; schedule 'night' allows 15 A"


def test_a_site_limit_change_resizes_audits_and_asks_for_a_run(tenant, django_capture_on_commit_callbacks) -> None:
    site = demo_site()
    for n in range(1, 5):
        register(tenant, f"DEMO-{n}", circuit_name="Panel A")

    ChargingStation.objects.filter(charge_point_id="DEMO-1").update(is_online=True)

    with django_capture_on_commit_callbacks() as callbacks:
        site_create_or_update(
            slug="garage", name="Garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("30"), actor="ops@alpha.example"
        )

    site.refresh_from_db()
    assert site.failsafe_a == Decimal(10)  # 4 x 3 x f x 230 <= 30000 -> 10.9
    assert failsafe_audits(site)[-1] == ("ops@alpha.example", "7.0", "10")
    assert len(callbacks) == 2  # limits changed, fail-safe resized: both coalesce into one run
    with django_capture_on_commit_callbacks(execute=True):
        site_create_or_update(slug="garage", name="Garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))
    pending = get_redis().get(tenant_key(connection.schema_name, "rebalance-pending", site.pk))
    get_redis().delete(tenant_key(connection.schema_name, "rebalance-pending", site.pk))
    assert pending == b"limits changed"  # the run keeps the reason a person changed something for


def test_a_resize_asks_for_no_run_while_every_charger_is_offline(tenant, django_capture_on_commit_callbacks) -> None:
    demo_site()

    with django_capture_on_commit_callbacks() as callbacks:
        register(tenant, "DEMO-1", circuit_name="Panel A")  # offline until it boots: its boot asks for a run

    assert Site.objects.get(slug="garage").failsafe_a == Decimal(16)
    assert callbacks == []


def test_a_manual_value_that_breaks_the_grid_limit_is_refused_naming_it(tenant) -> None:
    site = Site.objects.create(slug="lot", name="Lot", phases=1, limit_a=Decimal("63"), failsafe_auto=False)
    for n in range(20):
        station(site, f"LOT-{n}", phases=1)

    with pytest.raises(ValidationError) as refused:
        site_create_or_update(slug="lot", name="Lot", phases=1, limit_a=Decimal("63"), failsafe_a=Decimal("10"))

    assert refused.value.message_dict == {
        "failsafe_a": [
            "a fail-safe of 10 A on 20 chargers needs 200 A on L1; the grid connection allows 63 A: "
            "at most 3 A (so 0: below 6 A)"
        ]
    }
    site.refresh_from_db()
    assert site.failsafe_a == Decimal(6)  # unchanged

    site_create_or_update(slug="lot", name="Lot", phases=1, limit_a=Decimal("63"), failsafe_a=Decimal("3"))
    site.refresh_from_db()
    assert (site.failsafe_a, site.failsafe_auto) == (Decimal(3), False)


def test_a_charger_that_would_break_a_manual_fail_safe_is_not_registered(tenant) -> None:
    site = site_create_or_update(
        slug="garage", name="Garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"), failsafe_a=Decimal("6")
    ).obj
    for n in range(1, 5):
        register(tenant, f"DEMO-{n}")  # 4 x 3 x 6 x 230 = 16.6 kW: fits

    with pytest.raises(ValidationError) as refused:
        register(tenant, "DEMO-5")

    assert refused.value.message_dict["failsafe_a"] == [
        "a fail-safe of 6 A on 5 chargers needs 20.7 kW; the demand cap allows 20 kW: at most 5 A (so 0: below 6 A)"
    ]
    assert not ChargingStation.objects.filter(charge_point_id="DEMO-5").exists()
    site.refresh_from_db()
    assert site.failsafe_a == Decimal(6)


def test_a_charger_moved_to_another_site_resizes_both(tenant) -> None:
    demo_site()
    site_create_or_update(slug="annex", name="Annex", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))
    for n in range(1, 5):
        register(tenant, f"DEMO-{n}", circuit_name="Panel A")

    register(tenant, "DEMO-4", site="annex")

    garage, annex = Site.objects.get(slug="garage"), Site.objects.get(slug="annex")
    assert garage.failsafe_a == Decimal(9)  # three left: 20000 / 2070 = 9.7
    assert annex.failsafe_a == Decimal(16)  # one charger: its rating


def test_a_site_meter_identity_is_not_sized_as_a_charger() -> None:
    site = Site.objects.create(slug="row", name="Row", limit_a=Decimal("20"))
    station(site, "ROW-1", phases=1)
    station(site, "ROW-METER", phases=1, is_site_meter=True)

    sizing = site_failsafe_size(site=site)
    assert (sizing.value_a, sizing.connectors) == (Decimal(20), 1)


def test_a_site_without_chargers_keeps_its_value_and_checks_one_charger() -> None:
    site = site_create_or_update(slug="new", name="New", limit_a=Decimal("100"), demand_cap_kw=Decimal("20")).obj
    assert site.failsafe_a == Decimal(6)  # nothing to size yet: the default stays

    assert site_failsafe_breach(site=site, failsafe_a=Decimal(6)) is None
    assert site_failsafe_breach(site=site, failsafe_a=Decimal(200)) == (
        "a fail-safe of 200 A on 1 charger needs 138 kW; the demand cap allows 20 kW: at most 28 A"
    )


def test_a_charger_moved_by_the_platform_console_resizes_both_sites(tenant) -> None:
    from django_tenants.utils import schema_context

    from chargepoint.registry import charger_move
    from tenants.models import ChargePointIdentity

    demo_site()
    site_create_or_update(slug="annex", name="Annex", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))
    for n in range(1, 5):
        register(tenant, f"DEMO-{n}", circuit_name="Panel A")
    with schema_context("public"):
        identity = ChargePointIdentity.objects.get(charge_point_id="DEMO-4")

    charger_move(identity=identity, tenant=tenant, site_slug="annex", actor="ops@platform.example")

    assert Site.objects.get(slug="garage").failsafe_a == Decimal(9)
    assert Site.objects.get(slug="annex").failsafe_a == Decimal(16)
    assert failsafe_audits(Site.objects.get(slug="annex"))[-1] == ("ops@platform.example", "6.0", "16")


def test_the_settings_form_keeps_a_sized_site_sized_until_a_person_changes_the_value(tenant) -> None:
    from balancing.services import site_limits_update

    site = demo_site()
    for n in range(1, 5):
        register(tenant, f"DEMO-{n}", circuit_name="Panel A")
    site.refresh_from_db()
    form = {"limit_a": Decimal("63"), "demand_cap_kw": Decimal("30"), "failsafe_a": Decimal("7"), "max_raise_a": None}

    site_limits_update(site=site, limits=form, actor="ops@alpha.example")  # the stored 7 A sent back
    site.refresh_from_db()
    assert (site.failsafe_a, site.failsafe_auto) == (Decimal(10), True)  # resized for 30 kW

    site_limits_update(site=site, limits={**form, "failsafe_a": Decimal("8")}, actor="ops@alpha.example")
    site.refresh_from_db()
    assert (site.failsafe_a, site.failsafe_auto) == (Decimal(8), False)

    with pytest.raises(ValidationError, match=r"needs 33\.1 kW; the demand cap allows 30 kW: at most 10 A"):
        site_limits_update(site=site, limits={**form, "failsafe_a": Decimal("12")}, actor="ops@alpha.example")


def reported_connector_2(cp_id: str) -> None:
    from chargepoint.telemetry import telemetry_apply

    at = "2026-05-01T09:00:02+00:00"
    telemetry_apply(
        events=[
            {"type": "status", "cp": cp_id, "ts": at, "connector": 2, "status": "Available", "error_code": "", "at": at}
        ]
    )


def test_a_connector_a_charger_reports_unregistered_resizes_the_site(tenant) -> None:
    demo_site()
    for n in range(1, 4):
        register(tenant, f"DEMO-{n}", circuit_name="Panel A")
    assert Site.objects.get(slug="garage").failsafe_a == Decimal(9)

    reported_connector_2("DEMO-3")

    # Four connectors now: 4 x 3 x f x 230 <= 20000 -> 7 A.
    assert Site.objects.get(slug="garage").failsafe_a == Decimal(7)
    assert failsafe_audits(Site.objects.get(slug="garage"))[-1] == ("system:telemetry", "9.0", "7")


def test_a_reported_connector_that_breaks_a_manual_fail_safe_raises_an_alert(tenant) -> None:
    from balancing.models import SiteAlert

    site = site_create_or_update(
        slug="garage", name="Garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"), failsafe_a=Decimal("6")
    ).obj
    for n in range(1, 5):
        register(tenant, f"DEMO-{n}")

    reported_connector_2("DEMO-4")  # the telemetry is not refused: the alert tells the operator

    alert = SiteAlert.objects.get(site=site, kind="failsafe", cleared_at__isnull=True)
    assert alert.detail.startswith(
        "a fail-safe of 6 A on 5 connectors on 4 chargers needs 20.7 kW; the demand cap allows 20 kW"
    )
    assert Site.objects.get(pk=site.pk).failsafe_a == Decimal(6)

    site_create_or_update(
        slug="garage", name="Garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"), failsafe_auto=True
    )
    alert.refresh_from_db()
    assert alert.cleared_at is not None
    assert Site.objects.get(pk=site.pk).failsafe_a == Decimal(0)  # 20000 / 3450 = 5.8: below 6 A


def test_the_sized_value_is_the_target_where_more_would_fit(tenant, default_target) -> None:
    site = demo_site()
    for n in range(1, 5):
        register(tenant, f"TGT-{n}")

    sizing = site_failsafe_size(site=site)
    site.refresh_from_db()

    # Four 16 A three-phase chargers on a 20 kW cap: up to 7 A would fit (4 x 3 x 7 x 230 W =
    # 19.3 kW), but 6 A is set, so a lone car beside three idle connectors keeps 29 - 18 = 11 A.
    assert (default_target, sizing.max_a, sizing.value_a, site.failsafe_a) == (6, 7, Decimal(6), Decimal(6))
    assert sizing.bound.startswith("the fail-safe target (6 A; up to 7 A would fit")


def test_below_the_target_the_largest_fitting_value_still_applies(tenant, default_target) -> None:
    site = site_create_or_update(slug="lot", name="Lot", limit_a=Decimal("87"), phases=1).obj
    for n in range(1, 21):
        register(tenant, f"LOT-{n}", site="lot", max_a="32", phases=1, wiring="L1")

    sizing = site_failsafe_size(site=site)

    # Twenty single-phase chargers on 87 A: 4 A each would fit, below 6 A, so 0 A.
    assert (sizing.max_a, sizing.value_a) == (4, Decimal(0))
