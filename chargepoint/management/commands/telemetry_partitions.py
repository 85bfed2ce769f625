"""Show an organisation's monthly partitions of raw meter readings, and run their upkeep by hand.

The daily beat does the upkeep (``telemetry_partitions_maintain_all``); this is for an
operator who wants to see what is kept and what it weighs, to make months ahead before a
beat outage, or to see what the next run would drop (``--dry-run``).
"""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django_tenants.utils import tenant_context

from chargepoint.partitions import PARENT, partitions_maintain, partitions_usage, retention_cutoff
from evplatform.cli import tenant_arg


def _size(size: int) -> str:
    """Bytes as an operator reads them: 8.0 kB, 1.2 MB (binary units, as PostgreSQL shows them)."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "kB"
    for bigger in ("MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


class Command(BaseCommand):
    help = (
        "List an organisation's monthly partitions of raw meter readings (rows, size on disk); "
        "--maintain makes the months ahead and drops those past TELEMETRY_RETENTION_DAYS, as the daily beat does."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument(
            "--maintain",
            action="store_true",
            help="make this month's and TELEMETRY_PARTITIONS_AHEAD_MONTHS ahead, drop the months past the retention",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="with --maintain (implied): say what it would make and drop, do nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        dry_run = options["dry_run"]
        now = timezone.now()
        with tenant_context(tenant):
            if options["maintain"] or dry_run:
                outcome = partitions_maintain(now=now, dry_run=dry_run)
                made, dropped = ("would make", "would drop") if dry_run else ("made", "dropped")
                self.stdout.write(f"{made}: {', '.join(outcome.created) or 'nothing'}")
                self.stdout.write(f"{dropped}: {', '.join(outcome.dropped) or 'nothing'}")
                if outcome.busy:
                    self.stdout.write(
                        self.style.WARNING(f"still being read, left to the next run: {', '.join(outcome.busy)}")
                    )
            usage = partitions_usage()
        cutoff = retention_cutoff(now)
        self.stdout.write(
            f"{tenant.schema_name}: {len(usage)} monthly partitions of {PARENT}; readings are kept "
            f"{settings.TELEMETRY_RETENTION_DAYS} days "
            f"(a month goes once all of it is before {cutoff:%Y-%m-%d %H:%M} UTC)"
        )
        if not usage:
            return
        width = max(len(item.name) for item in usage)
        self.stdout.write(f"{'month':<8} {'partition':<{width}} {'rows':>12} {'size':>10}")
        for item in usage:
            self.stdout.write(f"{item.month:%Y-%m}  {item.name:<{width}} {item.rows:>12} {_size(item.bytes):>10}")
        rows, size = sum(item.rows for item in usage), sum(item.bytes for item in usage)
        self.stdout.write(f"{'total':<8} {'':<{width}} {rows:>12} {_size(size):>10}")
