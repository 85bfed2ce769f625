"""Beat fan-outs over organisations: one task per chunk of tenants. Schema: public (then each tenant's).

A beat task that enters every tenant in turn grows with their number: at 200 organisations of
5 sites the balancing sweep was one serial task publishing 1,000 requests. ``tenant_chunks_send``
publishes instead one task per ``TENANT_FANOUT_CHUNK_SIZE`` active tenants, naming their
schemas; workers run the chunks side by side, and each chunk task walks its tenants with
``tenant_chunk``, inside each one's schema, doing what the beat task did for that tenant.
"""

from collections.abc import Iterator
from typing import Any

from celery import Task
from django.conf import settings
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from tenants.models import Tenant
from tenants.selectors import tenant_list_by_schema, tenant_schemas_active


def tenant_schema_chunks(size: int | None = None) -> list[list[str]]:
    """The active tenants' schema names in chunks of ``size`` (``TENANT_FANOUT_CHUNK_SIZE``)."""
    size = size or settings.TENANT_FANOUT_CHUNK_SIZE
    with schema_context(get_public_schema_name()):
        schemas = tenant_schemas_active()
    return [schemas[start : start + size] for start in range(0, len(schemas), size)]


def tenant_chunks_send(task: Task, **options: Any) -> int:
    """Publish ``task(schemas=[...])`` once per chunk of active tenants, from ``public``; returns the chunks sent.

    ``options`` go to ``apply_async`` (e.g. ``expires``, so a chunk that waited past the next
    beat run is dropped rather than done twice).
    """
    chunks = tenant_schema_chunks()
    with schema_context(get_public_schema_name()):
        for chunk in chunks:
            task.apply_async(kwargs={"schemas": chunk}, **options)
    return len(chunks)


def tenant_chunk(schemas: list[str]) -> Iterator[Tenant]:
    """Each active tenant of a chunk, in order, with its schema active while the caller's loop body runs.

    A tenant deactivated (or removed) since the chunk was sent is left out.
    """
    with schema_context(get_public_schema_name()):
        tenants = tenant_list_by_schema(schemas)
    for tenant in tenants:
        with tenant_context(tenant):
            yield tenant
