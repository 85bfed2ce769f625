"""Write a tenant's monthly savings report to a file (CSV, XLSX or PDF), for scripts and finance.

Takes the latest stored version of the month; generates version 1 if there is none, and a new
version with ``--regenerate``. Stored versions are never changed.
"""

from datetime import date
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django_tenants.utils import tenant_context

from billing.reports import FORMATS
from billing.savings_reports import savings_report_generate
from billing.selectors import month_parse, report_file, report_latest
from evplatform.cli import command_error, tenant_arg


class Command(BaseCommand):
    help = "Write the monthly savings report of an organisation (latest version; generated if missing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--month", required=True, help="YYYY-MM (the month in each site's time zone)")
        parser.add_argument("--format", required=True, choices=FORMATS, dest="file_format")
        parser.add_argument("--output", required=True, help="file to write ('-' for standard output, CSV only)")
        parser.add_argument("--regenerate", action="store_true", help="store a new version first")
        parser.add_argument("--requested-by", default="", help="who asked, recorded with a new version")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        try:
            year, month = month_parse(options["month"], today=timezone.now().date())
        except ValidationError as exc:
            raise command_error(exc, {"month": "--month"}) from exc
        output = options["output"]
        if output == "-" and options["file_format"] != "csv":
            raise CommandError("--output: '-' (standard output) is for --format csv only")
        if output != "-" and not Path(output).resolve().parent.is_dir():
            raise CommandError(f"--output: folder {Path(output).parent} does not exist")
        with tenant_context(tenant):
            report = None if options["regenerate"] else report_latest(month=date(year, month, 1))
            if report is None:
                report = savings_report_generate(
                    year=year,
                    month=month,
                    reason="request",
                    requested_by=options["requested_by"] or "command:savings_report",
                )
            stored = report_file(report=report, file_format=options["file_format"])
            content = bytes(stored.content)
        if output == "-":
            self.stdout.write(content.decode("utf-8"), ending="")
            return
        Path(output).write_bytes(content)
        self.stderr.write(
            f"{tenant.slug} {year:04d}-{month:02d} v{report.version} {options['file_format']}: "
            f"{len(content)} bytes, sha256 {stored.sha256} -> {output}"
        )
