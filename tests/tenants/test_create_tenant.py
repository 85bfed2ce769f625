"""`create_tenant` and `setup_platform`: real schemas in the real PostgreSQL, rolled back after."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import schema_context, schema_exists, tenant_context

from tenants.accounts.models import Role, User
from tenants.models import Domain, Tenant
from tests.conftest import ALPHA

pytestmark = [pytest.mark.django_db, pytest.mark.public_schema]

ARGS = ["--name", "Gamma Garages", "--domain", "gamma.localhost", "--admin-email", "Boss@Gamma.example"]
PASSWORD = ["--admin-password", "gamma-admin-pass-2026"]


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_makes_schema_domain_and_admin_in_that_schema_only() -> None:
    output = run("create_tenant", "gamma", *ARGS, *PASSWORD)

    assert "organisation gamma created" in output
    tenant = Tenant.objects.get(slug="gamma")
    assert tenant.schema_name == "gamma"
    assert schema_exists("gamma")
    assert Domain.objects.get(domain="gamma.localhost").tenant == tenant
    with tenant_context(tenant):
        admin = User.objects.get(email="boss@gamma.example")
        assert admin.role == Role.ADMIN
        assert admin.is_staff
        assert admin.check_password("gamma-admin-pass-2026")
    with schema_context("public"):
        assert not User.objects.filter(email="boss@gamma.example").exists()


def test_create_tenant_twice_changes_nothing_and_keeps_the_admin_password() -> None:
    run("create_tenant", "gamma", *ARGS, *PASSWORD)
    output = run("create_tenant", "gamma", *ARGS, "--admin-password", "another-password-2026")

    assert "already up to date" in output
    tenant = Tenant.objects.get(slug="gamma")
    assert Domain.objects.filter(tenant=tenant).count() == 1
    with tenant_context(tenant):
        assert User.objects.count() == 1
        assert User.objects.get().check_password("gamma-admin-pass-2026")


def test_create_tenant_again_with_new_name_and_domain_converges() -> None:
    run("create_tenant", "gamma", *ARGS, *PASSWORD)
    output = run(
        "create_tenant",
        "gamma",
        "--name",
        "Gamma Parking",
        "--domain",
        "parking.gamma.localhost",
        "--admin-email",
        "boss@gamma.example",
        *PASSWORD,
    )

    assert "name: Gamma Garages -> Gamma Parking" in output
    assert "domain parking.gamma.localhost added" in output
    tenant = Tenant.objects.get(slug="gamma")
    assert sorted(tenant.domains.values_list("domain", flat=True)) == ["gamma.localhost", "parking.gamma.localhost"]


def test_create_tenant_refuses_a_domain_of_another_organisation() -> None:
    with pytest.raises(CommandError, match=r"--domain: 'alpha.localhost' already belongs to organisation 'alpha'"):
        run(
            "create_tenant", "gamma", "--name", "G", "--domain", ALPHA.domain, "--admin-email", "a@g.example", *PASSWORD
        )
    assert not Tenant.objects.filter(slug="gamma").exists()
    assert not schema_exists("gamma")


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("Gamma", "slug: 'Gamma' is not a valid organisation slug"),
        ("g", "slug: 'g' is not a valid organisation slug"),
        ("gamma;drop", "not a valid organisation slug"),
        ("public", "slug: 'public' is reserved"),
    ],
)
def test_create_tenant_rejects_bad_slugs(slug: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_tenant", slug, *ARGS, *PASSWORD)
    assert Tenant.objects.count() == 3  # public, alpha, beta


def test_create_tenant_names_every_bad_option_at_once() -> None:
    with pytest.raises(CommandError) as excinfo:
        run("create_tenant", "gamma", "--name", " ", "--domain", "not a host", "--admin-email", "nobody", *PASSWORD)
    message = str(excinfo.value)
    assert "--name: must not be empty" in message
    assert "--domain: 'not a host' is not a valid host name" in message
    assert "--admin-email: 'nobody' is not a valid email address" in message


def test_create_tenant_rejects_a_weak_admin_password_and_creates_nothing() -> None:
    with pytest.raises(CommandError, match="--admin-password: This password is too short"):
        run("create_tenant", "gamma", *ARGS, "--admin-password", "short")
    assert not Tenant.objects.filter(slug="gamma").exists()
    assert connection.schema_name == "public"


def test_setup_platform_creates_a_superuser_in_public_only() -> None:
    output = run(
        "setup_platform",
        "--domain",
        "localhost",
        "--superuser-email",
        "ops@platform.example",
        "--superuser-password",
        "platform-ops-pass-2026",
    )

    assert "user ops@platform.example created" in output
    user = User.objects.get(email="ops@platform.example")
    assert user.is_superuser
    with tenant_context(Tenant.objects.get(slug="alpha")):
        assert not User.objects.filter(email="ops@platform.example").exists()
