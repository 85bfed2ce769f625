"""`create_site` and `create_circuit`: onboarding a site's tree into a tenant schema."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import tenant_context

from balancing.models import Circuit, Site
from tests.factories import ChargingStationFactory, ConnectorFactory

pytestmark = pytest.mark.django_db

SITE = ["--tenant", "alpha", "--name", "Campus North", "--voltage", "230", "--phases", "3", "--limit-a", "100"]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_site_stores_limits_in_the_tenant_schema(tenant, other_tenant) -> None:
    output = run("create_site", "north", *SITE, "--demand-cap-kw", "20", "--timezone", "Europe/Berlin")

    assert "site alpha/north created" in output
    with tenant_context(tenant):
        site = Site.objects.get(slug="north")
        assert (site.limit_a, site.demand_cap_kw, site.phases, site.timezone) == (
            Decimal("100"),
            Decimal("20"),
            3,
            "Europe/Berlin",
        )
    with tenant_context(other_tenant):
        assert not Site.objects.filter(slug="north").exists()


def test_create_site_is_idempotent_and_reports_changes() -> None:
    run("create_site", "north", *SITE)
    assert "already up to date" in run("create_site", "north", *SITE)

    output = run("create_site", "north", *SITE[:-1], "80")

    assert "limit_a: 100 -> 80" in output
    assert Site.objects.get(slug="north").limit_a == Decimal("80")


def test_create_site_for_an_unknown_tenant_says_so() -> None:
    with pytest.raises(CommandError, match="--tenant: no organisation with slug 'nope'"):
        run("create_site", "north", "--tenant", "nope", "--name", "N", "--limit-a", "10")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--limit-a", "-5", "--limit-a: Ensure this value is greater than or equal to 0"),
        ("--demand-cap-kw", "-1", "--demand-cap-kw: Ensure this value is greater than or equal to 0"),
        ("--timezone", "Mars/Olympus", "--timezone: 'Mars/Olympus' is not an IANA time zone"),
        (
            "--failsafe-a",
            "200",
            "--failsafe-a: a fail-safe of 200 A on 1 charger needs 200 A on L1; "
            "the grid connection allows 100 A: at most 100 A",
        ),
        ("--max-raise-a", "0.5", "--max-raise-a: Ensure this value is greater than or equal to 1"),
    ],
)
def test_create_site_rejects_bad_values_and_stores_nothing(option: str, value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_site", "north", *SITE, option, value)
    assert not Site.objects.filter(slug="north").exists()


def test_create_site_rejects_a_non_number_limit() -> None:
    with pytest.raises(CommandError, match="--limit-a"):
        run("create_site", "north", "--tenant", "alpha", "--name", "N", "--limit-a", "lots")


def test_a_site_with_three_phase_chargers_cannot_become_single_phase() -> None:
    run("create_site", "north", *SITE)
    ChargingStationFactory(site=Site.objects.get(slug="north"), phases=3)

    with pytest.raises(CommandError, match="--phases: three-phase chargers are registered"):
        run("create_site", "north", *SITE[:7], "1", *SITE[8:])
    assert Site.objects.get(slug="north").phases == 3


def test_create_circuit_builds_a_tree_and_refuses_loops() -> None:
    run("create_site", "north", *SITE)
    run("create_circuit", "Main panel", "--tenant", "alpha", "--site", "north", "--kind", "panel", "--limit-a", "100")
    run("create_circuit", "Row A", "--tenant", "alpha", "--site", "north", "--parent", "Main panel", "--limit-a", "63")

    row = Circuit.objects.get(name="Row A")
    assert row.parent is not None
    assert row.parent.name == "Main panel"
    with pytest.raises(CommandError, match="--parent: 'Row A' is below 'Main panel'"):
        run(
            "create_circuit",
            "Main panel",
            "--tenant",
            "alpha",
            "--site",
            "north",
            "--parent",
            "Row A",
            "--limit-a",
            "100",
        )
    assert Circuit.objects.get(name="Main panel").parent is None


def test_create_circuit_names_an_unknown_parent_and_site() -> None:
    run("create_site", "north", *SITE)
    with pytest.raises(CommandError, match="--parent: no circuit named 'Nowhere' in site 'north'"):
        run("create_circuit", "Row A", "--tenant", "alpha", "--site", "north", "--parent", "Nowhere", "--limit-a", "63")
    with pytest.raises(CommandError, match="--site: no site with slug 'south'"):
        run("create_circuit", "Row A", "--tenant", "alpha", "--site", "south", "--limit-a", "63")


def test_create_site_sizes_the_fail_safe_with_the_building_allowance() -> None:
    run("create_site", "north", *SITE, "--demand-cap-kw", "20", "--building-allowance-kw", "5")
    site = Site.objects.get(slug="north")
    ChargingStationFactory(site=site, phases=3, max_current_a=Decimal("32"))
    ConnectorFactory(station=site.stations.get())

    output = run("create_site", "north", *SITE, "--demand-cap-kw", "20", "--building-allowance-kw", "11")

    assert "building_allowance_kw: 5 -> 11" in output
    site.refresh_from_db()
    assert site.failsafe_auto
    assert site.failsafe_a == Decimal(13)  # 3 x f x 230 <= 20000 - 11000 -> 13.04


def test_create_site_with_a_negative_allowance_names_the_option() -> None:
    with pytest.raises(CommandError, match="--building-allowance-kw: Ensure this value is greater than or equal to 0"):
        run("create_site", "north", *SITE, "--building-allowance-kw", "-1")
