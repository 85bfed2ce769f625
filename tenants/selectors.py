"""Reads of organisations and the charger registry. Schema: public.

``schemas_with_unapplied_migrations`` also reads each tenant schema's ``django_migrations``
table, by qualified name, from a connection set to ``public``.
"""

from collections.abc import Iterable, Sequence

from django.core.exceptions import ObjectDoesNotExist
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django_tenants.utils import get_public_schema_name, get_tenant_migration_order

from tenants.models import ChargePointIdentity, Tenant


class TenantNotFoundError(ObjectDoesNotExist):
    field = "tenant"

    def __init__(self, slug: str) -> None:
        super().__init__(f"no organisation with slug {slug!r}")
        self.slug = slug


def tenant_get(*, slug: str) -> Tenant:
    """The organisation with this slug (never the public pseudo-tenant)."""
    tenant = Tenant.objects.exclude(schema_name=get_public_schema_name()).filter(slug=slug).first()
    if tenant is None:
        raise TenantNotFoundError(slug)
    return tenant


def tenant_schemas_active() -> list[str]:
    """The schema names of the active organisations, in a stable order (for beat fan-outs)."""
    return list(
        Tenant.objects.exclude(schema_name=get_public_schema_name())
        .filter(is_active=True)
        .order_by("pk")
        .values_list("schema_name", flat=True)
    )


def tenant_list_by_schema(schemas: Iterable[str]) -> list[Tenant]:
    """The active organisations with these schema names, in the order given (unknown or inactive ones left out)."""
    order = {schema: n for n, schema in enumerate(schemas)}
    tenants = Tenant.objects.filter(schema_name__in=list(order), is_active=True)
    return sorted(tenants, key=lambda tenant: order[tenant.schema_name])


def tenant_schemas_all() -> list[str]:
    """Every organisation's schema name (active or not), in django-tenants' migration order."""
    tenants = Tenant.objects.exclude(schema_name=get_public_schema_name())
    order = get_tenant_migration_order()
    if order is not None:
        tenants = tenants.order_by(*order)
    return list(tenants.values_list("schema_name", flat=True))


MIGRATION_STATE_BATCH = 500  # schemas per UNION ALL query


def migrations_required() -> tuple[set[tuple[str, str]], dict[tuple[str, str], list[tuple[str, str]]]]:
    """Every migration `migrate` applies to a schema, from the migration files alone; and the squashes.

    Django records every migration of the graph in each schema, including those of apps the
    router keeps out of it (their operations are skipped), so a schema is up to date when its
    ``django_migrations`` holds every node. A squashed migration also counts as applied when
    all the migrations it replaces are (as Django's loader does).
    """
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    replaces = {key: list(graph.nodes[key].replaces) for key in graph.nodes if graph.nodes[key].replaces}
    return set(graph.nodes), replaces


def schemas_with_unapplied_migrations(schemas: Sequence[str]) -> list[str]:
    """The schemas among ``schemas`` that `migrate` would change, in the order given.

    The migration graph is loaded once; every schema's ``django_migrations`` is read with one
    UNION ALL query per ``MIGRATION_STATE_BATCH`` schemas instead of a `migrate` run per schema.
    A schema without that table (never migrated, or missing) counts as needing migrations.
    """
    required, replaces = migrations_required()
    applied: dict[str, set[tuple[str, str]]] = {}
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for start in range(0, len(schemas), MIGRATION_STATE_BATCH):
            batch = list(schemas[start : start + MIGRATION_STATE_BATCH])
            cursor.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = 'django_migrations' AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
                [batch],
            )
            with_table = [row[0] for row in cursor.fetchall()]
            if not with_table:
                continue
            # Schema names come from our own Tenant rows and are quoted as identifiers.
            union = " UNION ALL ".join(
                f"SELECT %s, app, name FROM {quote(schema)}.django_migrations"  # noqa: S608
                for schema in with_table
            )
            cursor.execute(union, with_table)
            for schema, app, name in cursor.fetchall():
                applied.setdefault(schema, set()).add((app, name))

    def up_to_date(done: set[tuple[str, str]]) -> bool:
        missing = required - done
        return all(key in replaces and all(old in done for old in replaces[key]) for key in missing)

    return [schema for schema in schemas if not up_to_date(applied.get(schema, set()))]


def identity_find(*, charge_point_id: str) -> ChargePointIdentity | None:
    """The registry entry for a charger id (compared without regard to case)."""
    return ChargePointIdentity.objects.select_related("tenant").filter(charge_point_id__iexact=charge_point_id).first()
