"""``TENANT_LIMIT_SET_CALLS``: the schema is set once per tenant switch, and set again whenever a
rollback has undone it (a ``SET`` inside a transaction or savepoint is rolled back with it)."""

import threading
from contextlib import suppress
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import tenant_context

from balancing.models import Site
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])


def in_thread(fn: Any) -> None:
    """``fn`` on a connection of its own (autocommit, real transactions); its error re-raised here."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised below
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if failures:
        raise failures[0]


def test_the_search_path_is_set_once_per_tenant_switch(tenant, other_tenant) -> None:
    assert settings.TENANT_LIMIT_SET_CALLS
    with tenant_context(other_tenant), CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert schema() == other_tenant.schema_name
        Site.objects.count()
    sets = [q["sql"] for q in queries if q["sql"].startswith("SET search_path")]
    assert len(sets) == 1
    assert len(queries) == 5


def test_a_tenant_switched_to_in_a_rolled_back_savepoint_reads_its_own_schema_after(tenant, other_tenant) -> None:
    SiteFactory(slug="where", name="Alpha garage")
    with tenant_context(other_tenant):
        SiteFactory(slug="where", name="Beta garage")
    with tenant_context(tenant):  # alpha again whatever happens below
        assert schema() == tenant.schema_name  # set in this test's transaction, before the savepoint
        with suppress(Boom), transaction.atomic():  # a savepoint
            connection.set_tenant(other_tenant)  # a switch inside it, as a task or a request makes one
            assert Site.objects.get(slug="where").name == "Beta garage"  # beta's path, set in the savepoint
            raise Boom
        # rolling back to the savepoint put alpha's path back while beta is the active tenant
        assert Site.objects.get(slug="where").name == "Beta garage"
    assert Site.objects.get(slug="where").name == "Alpha garage"


def test_a_tenant_switched_to_in_a_rolled_back_transaction_reads_its_own_schema_after(tenant, other_tenant) -> None:
    def switch() -> None:
        with tenant_context(other_tenant):
            assert schema() == other_tenant.schema_name  # set outside a transaction: the session keeps it
            with tenant_context(tenant):
                with suppress(Boom), transaction.atomic():
                    assert schema() == tenant.schema_name  # set inside the transaction
                    raise Boom
                # ROLLBACK put beta's path back while alpha is the active tenant
                assert schema() == tenant.schema_name
            assert schema() == other_tenant.schema_name

    in_thread(switch)
