"""`register_charger`: the station in the tenant schema, its identity in public, atomically."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_context, tenant_context

from chargepoint.models import ChargingStation, Connector
from tenants.models import ChargePointIdentity
from tests.factories import CircuitFactory, SiteFactory

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-charger-pass-01"


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def register(cp_id: str = "CP-1", *extra: str, tenant: str = "alpha", site: str = "north") -> str:
    return run(
        "register_charger", "--tenant", tenant, "--site", site, cp_id, "--max-a", "32", "--password", PASSWORD, *extra
    )


@pytest.fixture
def site():
    return SiteFactory(slug="north", phases=3)


def test_register_charger_writes_station_connectors_and_hashed_identity(tenant, site) -> None:
    CircuitFactory(site=site, name="Row A")

    output = register("CP-1", "--phases", "3", "--circuit", "Row A", "--connectors", "2")

    assert "charger CP-1 created" in output
    station = ChargingStation.objects.get(charge_point_id="CP-1")
    assert station.site == site
    assert station.circuit is not None
    assert station.circuit.name == "Row A"
    assert (station.max_current_a, station.phases, station.wiring) == (Decimal("32"), 3, "L1L2L3")
    assert list(Connector.objects.filter(station=station).values_list("connector_id", flat=True)) == [1, 2]
    with schema_context("public"):
        identity = ChargePointIdentity.objects.get(charge_point_id="CP-1")
        assert identity.tenant == tenant
        assert identity.site_slug == "north"
        assert PASSWORD not in identity.password_hash
        assert identity.check_password(PASSWORD)
        assert not identity.check_password("wrong-password-000000")


def test_register_charger_twice_is_a_no_op_and_a_new_password_is_rehashed(site) -> None:
    register("CP-1")
    assert "already up to date" in register("CP-1")

    output = run(
        "register_charger",
        "--tenant",
        "alpha",
        "--site",
        "north",
        "CP-1",
        "--max-a",
        "16",
        "--password",
        "another-charger-pass-02",
    )

    assert "max_current_a: 32 -> 16" in output
    assert "password changed" in output
    with schema_context("public"):
        assert ChargePointIdentity.objects.get(charge_point_id="CP-1").check_password("another-charger-pass-02")


def test_a_charger_id_of_another_organisation_is_refused(other_tenant, site) -> None:
    with tenant_context(other_tenant):
        SiteFactory(slug="south")
    register("CP-1")

    with pytest.raises(CommandError, match="charge_point_id: 'CP-1' is already registered to another organisation"):
        register("CP-1", tenant="beta", site="south")
    with pytest.raises(CommandError, match="already registered to another organisation"):
        register("cp-1", tenant="beta", site="south")
    with tenant_context(other_tenant):
        assert not ChargingStation.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--tenant", "nope", "--site", "north", "CP-1", "--max-a", "32", "--password", PASSWORD],
            "--tenant: no organisation with slug 'nope'",
        ),
        (
            ["--tenant", "alpha", "--site", "south", "CP-1", "--max-a", "32", "--password", PASSWORD],
            "--site: no site with slug 'south'",
        ),
        (
            ["--tenant", "alpha", "--site", "north", "CP-1", "--max-a", "32", "--password", PASSWORD, "--circuit", "X"],
            "--circuit: no circuit named 'X'",
        ),
        (
            ["--tenant", "alpha", "--site", "north", "CP-1", "--max-a", "-32", "--password", PASSWORD],
            "--max-a: -32 A is outside 6-1000 A",
        ),
        (
            ["--tenant", "alpha", "--site", "north", "CP-1", "--max-a", "32", "--password", "short"],
            "--password: must be 16 to 40 printable ASCII characters",
        ),
        (
            ["--tenant", "alpha", "--site", "north", "CP 1", "--max-a", "32", "--password", PASSWORD],
            "charge_point_id: 'CP 1' is not a valid charge point id",
        ),
        (
            [
                "--tenant",
                "alpha",
                "--site",
                "north",
                "CP-1",
                "--max-a",
                "32",
                "--password",
                PASSWORD,
                "--phases",
                "1",
                "--wiring",
                "L1L2L3",
            ],
            "--wiring: 'L1L2L3' does not fit a 1-phase charger",
        ),
        (
            [
                "--tenant",
                "alpha",
                "--site",
                "north",
                "CP-1",
                "--max-a",
                "32",
                "--password",
                PASSWORD,
                "--connectors",
                "0",
            ],
            "--connectors: 0 is outside 1-16",
        ),
    ],
)
def test_register_charger_rejects_bad_input_and_writes_nothing(site, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("register_charger", *args)
    assert not ChargingStation.objects.filter(charge_point_id__in=["CP-1", "CP 1"]).exists()
    with schema_context("public"):
        assert not ChargePointIdentity.objects.filter(charge_point_id__in=["CP-1", "CP 1"]).exists()


def test_a_three_phase_charger_on_a_single_phase_site_is_refused() -> None:
    SiteFactory(slug="house", phases=1)
    with pytest.raises(CommandError, match="--phases: a 3-phase charger cannot be wired to single-phase site 'house'"):
        register("CP-1", "--phases", "3", site="house")
    register("CP-1", "--phases", "1", "--wiring", "L2", site="house")
    assert ChargingStation.objects.get(charge_point_id="CP-1").site_phases == ["L2"]


def test_no_password_keeps_a_registered_chargers_and_is_refused_for_a_new_one(tenant, site) -> None:
    from chargepoint.services import charger_register

    with pytest.raises(ValidationError, match="required for a charger not registered yet"):
        charger_register(
            tenant=tenant, site_slug="north", charge_point_id="CP-NEW", password=None, max_current_a=Decimal(32)
        )
    register("CP-1")

    outcome = charger_register(
        tenant=tenant, site_slug="north", charge_point_id="CP-1", password=None, max_current_a=Decimal(32)
    )

    assert outcome.changes == []
    with schema_context("public"):
        assert ChargePointIdentity.objects.get(charge_point_id="CP-1").check_password(PASSWORD)
