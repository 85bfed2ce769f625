"""`migrate_schemas` skips tenant schemas with nothing to apply and migrates the others.

Real PostgreSQL: three committed organisations (the first migrated, the others cloned from it by
``tenants_create_empty``), and the command run as `make migrate` runs it, in its own process.
"""

import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context

from tenants.models import Tenant
from tenants.selectors import schemas_with_unapplied_migrations
from tenants.services import tenants_create_empty
from tests.conftest import _database_url

pytestmark = [pytest.mark.django_db, pytest.mark.public_schema]

PREFIX = "migskip"


@pytest.fixture(scope="module")
def three_tenants(django_db_setup, django_db_blocker) -> Iterator[list[Tenant]]:
    with django_db_blocker.unblock():
        tenants = tenants_create_empty(prefix=PREFIX, count=3)
    yield tenants
    with django_db_blocker.unblock(), schema_context("public"):
        for tenant in tenants:
            tenant.delete(force_drop=True)


def migrate_schemas(*extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "migrate_schemas", "--noinput", *extra],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def forget_migration(schema: str, app: str, name: str) -> None:
    """Delete a migration's row, committed (the test's own connection is inside its rolled-back transaction)."""
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{schema}".django_migrations WHERE app = %s AND name = %s', [app, name])  # noqa: S608


def has_migration(schema: str, app: str, name: str) -> bool:
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        query = f'SELECT 1 FROM "{schema}".django_migrations WHERE app = %s AND name = %s'  # noqa: S608
        return conn.execute(query, [app, name]).fetchone() is not None


def test_up_to_date_schemas_are_skipped_and_a_schema_missing_a_migration_is_migrated(three_tenants) -> None:
    schemas = [t.schema_name for t in three_tenants]
    total = Tenant.objects.exclude(schema_name="public").count()
    # A shared app's migration: in a tenant schema the router skips its operations, so applying
    # it again only records it, as a real deploy of a new migration would.
    forget_migration(schemas[1], "tenants", "0001_initial")
    assert schemas_with_unapplied_migrations(schemas) == [schemas[1]]

    result = migrate_schemas()

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"tenant schemas: {total - 1} of {total} up to date, 1 to migrate with the multiprocessing executor" in out
    assert f"multiprocessing:{schemas[1]}]   Applying tenants.0001_initial... OK" in out
    assert f":{schemas[0]}]" not in out
    assert f":{schemas[2]}]" not in out
    assert ":alpha]" not in out
    assert f"tenant schemas: 1 migrated, {total - 1} already up to date" in out
    assert "[standard:public]" in out  # the shared schema is migrated as django-tenants does it
    assert has_migration(schemas[1], "tenants", "0001_initial")
    assert schemas_with_unapplied_migrations(schemas) == []


def test_a_run_with_nothing_to_do_migrates_no_tenant_schema(three_tenants) -> None:
    total = Tenant.objects.exclude(schema_name="public").count()

    result = migrate_schemas("--tenant")

    assert result.returncode == 0, result.stderr
    assert f"tenant schemas: {total} of {total} up to date, 0 to migrate" in result.stdout
    assert "Starting migration" not in result.stdout
    assert "[standard:public]" not in result.stdout  # --tenant leaves public alone, as before


def test_check_names_the_stale_schemas_and_fails(three_tenants) -> None:
    schema = three_tenants[2].schema_name
    forget_migration(schema, "tenants", "0001_initial")
    try:
        result = migrate_schemas("--tenant", "--check")
        assert result.returncode == 1
        assert f"unapplied migrations in: {schema}" in result.stderr
        assert not has_migration(schema, "tenants", "0001_initial")
    finally:
        assert migrate_schemas("--schema", schema).returncode == 0


def test_a_schema_without_a_migrations_table_needs_migrating() -> None:
    with connection.cursor() as cursor:
        cursor.execute('CREATE SCHEMA "migskip_bare"')
    assert schemas_with_unapplied_migrations(["migskip_bare", "alpha"]) == ["migskip_bare"]


def test_a_copied_schema_is_its_templates_tables_triggers_and_migration_rows(three_tenants) -> None:
    first, copy = three_tenants[0].schema_name, three_tenants[2].schema_name

    def catalog(schema: str) -> dict[str, object]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s ORDER BY 1, 2",
                [schema],
            )
            columns = cursor.fetchall()
            cursor.execute(
                "SELECT conname, contype FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE n.nspname = %s ORDER BY 1",
                [schema],
            )
            constraints = cursor.fetchall()
            cursor.execute(
                "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND NOT tgisinternal",
                [schema],
            )
            triggers = cursor.fetchall()
            rows = {}
            for table in ("django_migrations", "django_content_type", "auth_permission", "balancing_site"):
                cursor.execute(f'SELECT count(*) FROM "{schema}".{table}')  # noqa: S608
                rows[table] = cursor.fetchone()[0]
        return {"columns": columns, "constraints": constraints, "triggers": triggers, "rows": rows}

    assert catalog(copy) == catalog(first)
    assert ("billing_savingsreport_immutable",) in catalog(copy)["triggers"]
    connection.set_tenant(three_tenants[2])
    from balancing.models import Site

    site = Site.objects.create(slug="copied", name="Copied", limit_a=63)  # its own identity sequence
    assert site.pk == 1
