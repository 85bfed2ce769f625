"""Site meter readings: checked before they are believed, stored once, acted on when over a limit."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test.utils import override_settings

from balancing import meter
from balancing.meter import FRESH_AGAIN_REASON, OVER_LIMIT_REASON, site_meter_record
from balancing.models import Site, SiteMeterReading
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def site() -> Site:
    """A 3-phase 63 A site (43.47 kW at 230 V) with a 20 kW demand cap."""
    return SiteFactory(slug="garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """The rebalance requests made (passed on to the real ``site_rebalance_request``)."""
    seen: list[tuple[int, str]] = []
    real = meter.site_rebalance_request

    def spy(*, site_id: int, reason: str) -> None:
        seen.append((site_id, reason))
        real(site_id=site_id, reason=reason)

    monkeypatch.setattr(meter, "site_rebalance_request", spy)
    return seen


def record(site: Site, **overrides: Any) -> meter.MeterOutcome:
    values: dict[str, Any] = {
        "measured_at": NOW - timedelta(seconds=5),
        "current_a": [10, 11.5, "12.25"],
        "power_kw": Decimal("7.5"),
        "source": SiteMeterReading.Source.API,
        "now": NOW,
        **overrides,
    }
    return site_meter_record(site=site, **values)


def test_a_plausible_reading_is_stored_with_its_units(site: Site) -> None:
    outcome = record(site)
    assert outcome.created
    row = SiteMeterReading.objects.get(site=site)
    assert row.current_a == [10.0, 11.5, 12.25]
    assert row.power_kw == Decimal("7.50")
    assert row.source == "api"
    assert row.includes_chargers is True


def test_power_alone_is_enough_with_an_empty_current_list(site: Site) -> None:
    record(site, current_a=[], power_kw=12)
    assert SiteMeterReading.objects.get(site=site).current_a == []


def test_currents_alone_are_enough(site: Site) -> None:
    record(site, power_kw=None)
    assert SiteMeterReading.objects.get(site=site).power_kw is None


def test_the_same_reading_again_is_idempotent(site: Site, requests: list[tuple[int, str]]) -> None:
    first = record(site)
    again = record(site, current_a=[1, 1, 1])
    assert not again.created
    assert again.reading.pk == first.reading.pk
    assert SiteMeterReading.objects.filter(site=site).count() == 1
    assert SiteMeterReading.objects.get(site=site).current_a == [10.0, 11.5, 12.25]
    assert again.rebalance_reason is None
    assert requests == [(site.pk, FRESH_AGAIN_REASON)]


def test_the_same_time_from_another_source_is_another_reading(site: Site) -> None:
    record(site)
    record(site, source=SiteMeterReading.Source.MQTT)
    assert SiteMeterReading.objects.filter(site=site).count() == 2


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"current_a": [10, -1, 10]}, "current_a", "negative"),
        ({"power_kw": Decimal("-0.5")}, "power_kw", "negative"),
        ({"current_a": [10, float("nan"), 10]}, "current_a", "finite"),
        ({"current_a": [10, 10, float("inf")]}, "current_a", "finite"),
        ({"power_kw": float("nan")}, "power_kw", "finite"),
        ({"power_kw": "Infinity"}, "power_kw", "finite"),
        ({"current_a": [10, "ten", 10]}, "current_a", "not a number"),
        ({"current_a": [10, True, 10]}, "current_a", "not a number"),
        ({"current_a": [10, 253, 10]}, "current_a", "implausible"),
        ({"power_kw": 174}, "power_kw", "implausible"),
        ({"current_a": [10, 10]}, "current_a", "3-phase"),
        ({"current_a": [10]}, "current_a", "3-phase"),
        ({"current_a": "10"}, "current_a", "list"),
        ({"current_a": [], "power_kw": None}, "current_a", "power_kw"),
        ({"measured_at": NOW - timedelta(seconds=61)}, "measured_at", "stale"),
        ({"measured_at": NOW + timedelta(seconds=31)}, "measured_at", "future"),
        ({"measured_at": datetime(2026, 5, 1, 12, 0)}, "measured_at", "zone"),  # noqa: DTZ001
        ({"source": "modbus"}, "source", "modbus"),
        ({"includes_chargers": "yes"}, "includes_chargers", "true or false"),
    ],
)
def test_a_reading_that_cannot_be_true_is_refused_naming_the_field(
    site: Site, requests: list[tuple[int, str]], overrides: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        record(site, **overrides)
    assert list(caught.value.message_dict) == [field]
    assert words in caught.value.message_dict[field][0]
    assert not SiteMeterReading.objects.filter(site=site).exists()
    assert requests == []


def test_just_under_the_huge_bound_and_the_age_limits_are_accepted(site: Site) -> None:
    record(site, current_a=[252, 0, 0], power_kw=None, measured_at=NOW - timedelta(seconds=60))
    record(site, current_a=[], power_kw=Decimal("173.8"), measured_at=NOW + timedelta(seconds=30))
    assert SiteMeterReading.objects.filter(site=site).count() == 2


@override_settings(BALANCING_SITE_METER_MAX_AGE_S=10)
def test_the_stale_age_is_a_setting(site: Site) -> None:
    with pytest.raises(ValidationError, match="stale"):
        record(site, measured_at=NOW - timedelta(seconds=11))


def test_a_single_phase_site_takes_one_current(requests: list[tuple[int, str]]) -> None:
    site = SiteFactory(slug="flat", phases=1, limit_a=Decimal("87"), demand_cap_kw=Decimal("20"))
    record(site, current_a=[40], power_kw=Decimal("9.2"))
    with pytest.raises(ValidationError, match="1-phase"):
        record(site, current_a=[40, 40, 40], measured_at=NOW - timedelta(seconds=1))


def test_the_first_reading_asks_for_a_run_then_ordinary_ones_do_not(
    site: Site, requests: list[tuple[int, str]]
) -> None:
    assert record(site).rebalance_reason == FRESH_AGAIN_REASON
    assert record(site, measured_at=NOW - timedelta(seconds=4)).rebalance_reason is None
    assert requests == [(site.pk, FRESH_AGAIN_REASON)]


def test_the_first_fresh_reading_after_a_stale_period_asks_for_a_run(
    site: Site, requests: list[tuple[int, str]]
) -> None:
    record(site, measured_at=NOW - timedelta(seconds=200), now=NOW - timedelta(seconds=195))
    outcome = record(site)
    assert outcome.rebalance_reason == FRESH_AGAIN_REASON
    assert requests[-1] == (site.pk, FRESH_AGAIN_REASON)


@pytest.mark.parametrize(
    ("current_a", "power_kw"),
    [([10, 63.5, 10], None), ([], Decimal("20.01")), ([10, 10, 10], Decimal("25"))],
)
def test_a_reading_over_a_limit_asks_for_a_run_now(
    site: Site, requests: list[tuple[int, str]], current_a: list[float], power_kw: Decimal | None
) -> None:
    record(site, measured_at=NOW - timedelta(seconds=10))
    outcome = record(site, current_a=current_a, power_kw=power_kw)
    assert outcome.rebalance_reason == OVER_LIMIT_REASON
    assert requests[-1] == (site.pk, OVER_LIMIT_REASON)


def test_at_the_limit_is_not_over_it(site: Site, requests: list[tuple[int, str]]) -> None:
    record(site, measured_at=NOW - timedelta(seconds=10))
    assert record(site, current_a=[63, 63, 63], power_kw=Decimal("20")).rebalance_reason is None


def test_a_building_only_meter_over_the_cap_is_left_to_the_run(site: Site, requests: list[tuple[int, str]]) -> None:
    record(site, measured_at=NOW - timedelta(seconds=10), includes_chargers=False)
    outcome = record(site, current_a=[], power_kw=Decimal("25"), includes_chargers=False)
    assert outcome.rebalance_reason is None
    assert len(requests) == 1


def test_it_refuses_to_run_in_the_public_schema(site: Site) -> None:
    from django.db import connection

    connection.set_schema_to_public()
    with pytest.raises(RuntimeError, match="tenant schema"):
        record(site)
