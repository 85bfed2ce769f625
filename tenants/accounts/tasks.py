"""Tasks that run in a tenant schema for the organisation itself. Schema: tenant."""

import socket

from django.utils.dateparse import parse_datetime

from evplatform.celery import app
from tenants.accounts.services import heartbeat_record


@app.task(name="tenants.accounts.tasks.worker_heartbeat")
def worker_heartbeat(*, queue: str, token: str, sent_at: str) -> None:
    """Record that a worker picked this up from ``queue`` for the tenant it was sent for."""
    sent = parse_datetime(sent_at)
    if sent is None:
        raise ValueError(f"sent_at is not an ISO 8601 datetime: {sent_at!r}")
    heartbeat_record(queue=queue, token=token, sent_at=sent, worker=socket.gethostname())
