"""Delete history older than the retention settings now, as the daily beat task does (README, "Retention")."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from balancing.retention import history_prune, retention_days, sessions_prune
from evplatform.cli import tenant_arg
from tenants.selectors import tenant_list_by_schema, tenant_schemas_active


class Command(BaseCommand):
    help = (
        "Delete balancing runs (with their pushes), charger commands and cleared alerts older than "
        "RETENTION_RUNS_DAYS / RETENTION_COMMANDS_DAYS / RETENTION_ALERTS_DAYS, and expired sessions, "
        "in every active organisation or one (--tenant). --dry-run counts without deleting."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", help="organisation slug (default: every active organisation)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
        parser.add_argument("--batch", type=int, default=None, help="rows per DELETE (default RETENTION_BATCH_ROWS)")

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        batch = options["batch"]
        if batch is not None and batch < 1:
            raise CommandError(f"--batch: must be at least 1 row, got {batch}")
        now = timezone.now()
        days = retention_days()
        kept = ", ".join(f"{kind} {n} days" if n else f"{kind} forever" for kind, n in days.items())
        self.stdout.write(f"keeping {kept}{' (dry run: nothing is deleted)' if dry_run else ''}")
        verb = "would delete" if dry_run else "deleted"
        if options["tenant"]:
            tenants = [tenant_arg(options["tenant"])]
        else:
            with schema_context("public"):
                tenants = tenant_list_by_schema(tenant_schemas_active())
                sessions = sessions_prune(now=now, dry_run=dry_run, batch=batch)
            self.stdout.write(f"platform: {verb} {sessions:,} expired sessions")
        for tenant in tenants:
            with tenant_context(tenant):
                counts = history_prune(now=now, dry_run=dry_run, batch=batch)
            self.stdout.write(self.style.SUCCESS(f"{tenant.slug}: {verb} {counts}"))
