"""Prove that workers serve every queue for an organisation: send heartbeats, wait for them."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from evplatform.celery import QUEUES
from evplatform.cli import tenant_arg
from tenants.accounts.services import heartbeat_send, heartbeat_tokens

POLL_SECONDS = 0.25


class Command(BaseCommand):
    help = "Send a heartbeat task on each queue for an organisation and wait until a worker ran it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")
        parser.add_argument("--queue", action="append", choices=QUEUES, help="only these queues (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        queues = tuple(options["queue"] or QUEUES)
        started = time.monotonic()
        sent = heartbeat_send(tenant=tenant, queues=queues)
        pending = dict(sent)
        deadline = started + options["timeout"]
        while pending and time.monotonic() < deadline:
            with tenant_context(tenant):
                stored = heartbeat_tokens()
            for queue, token in list(pending.items()):
                if stored.get(queue) == token:
                    del pending[queue]
                    self.stdout.write(f"{queue}: ok after {time.monotonic() - started:.2f}s")
            if pending:
                time.sleep(POLL_SECONDS)
        if pending:
            raise CommandError(
                f"no worker ran the heartbeat within {options['timeout']:g}s on: {', '.join(sorted(pending))} "
                "(is `celery -A evplatform worker` running against the same broker and database?)"
            )
        self.stdout.write(self.style.SUCCESS(f"workers serve {', '.join(queues)} for {tenant.slug}"))
