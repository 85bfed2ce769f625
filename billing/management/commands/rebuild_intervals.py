"""Recompute a month of interval energy from the raw meter readings: an operator's repair.

The rollup keeps the intervals up to date from the ingest's pending marks, and the monthly
report only drains what is still pending; this re-reads every raw reading of the month instead
(about 2 s per 20 charger-days), for when interval rows are known to be wrong (a fix of the
rollup, rows edited by hand, readings loaded without their marks). Where the month's raw
readings are gone (the retention period) the intervals stay as they were rolled up. Reports
already stored do not change: regenerate them afterwards (``savings_report --regenerate``).
"""

from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from django_tenants.utils import tenant_context

from balancing.selectors import site_get
from billing.interval_rollup import intervals_rebuild_month
from billing.selectors import month_parse, site_list
from evplatform.cli import command_error, tenant_arg


class Command(BaseCommand):
    help = "Recompute a month of a site's (or every site's) interval energy from the raw meter readings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--site", help="site slug (default: every site of the organisation)")
        parser.add_argument("--month", required=True, help="YYYY-MM (the month in the site's time zone)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        try:
            year, month = month_parse(options["month"], today=timezone.now().date())
        except ValidationError as exc:
            raise command_error(exc, {"month": "--month"}) from exc
        with tenant_context(tenant):
            try:
                sites = [site_get(slug=options["site"])] if options["site"] else site_list()
            except ObjectDoesNotExist as exc:
                raise command_error(exc, {"site": "--site"}) from exc
            for site in sites:
                written = intervals_rebuild_month(year=year, month=month, sites=[site])
                self.stdout.write(f"{tenant.slug} {site.slug} {year:04d}-{month:02d}: {written} station interval rows")
        self.stdout.write(
            self.style.SUCCESS("rebuilt; stored reports are unchanged (savings_report --regenerate for a new version)")
        )
