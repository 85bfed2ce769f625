"""Import an organisation's sites, circuits and chargers from a CSV or XLSX file (chargepoint.onboarding)."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chargepoint.onboarding import ImportFileError, fleet_import, fleet_rows_read
from evplatform.cli import tenant_arg


class Command(BaseCommand):
    help = (
        "Import sites, circuits and chargers from a .csv or .xlsx file (one row per object, a 'kind' column: "
        "site, circuit or charger). Every row is checked first; nothing is written unless all are valid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--dry-run", action="store_true", help="check every row, write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        path: Path = options["file"]
        try:
            rows = fleet_rows_read(filename=path.name, content=path.read_bytes())
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from exc
        except ImportFileError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{path.name}: {len(rows)} rows, checking{' (dry run)' if options['dry_run'] else ''}...")
        result = fleet_import(tenant=tenant, rows=rows, dry_run=options["dry_run"], actor="system:import_fleet")
        for error in result.errors:
            self.stderr.write(f"row {error.row}, {error.column or 'row'}: {error.message}")
        if result.errors:
            raise CommandError(f"{len(result.errors)} errors in {result.rows} rows; nothing was written")
        summary = ", ".join(
            f"{kind}s: {result.created[kind]} new, {result.updated[kind]} changed"
            for kind in ("site", "circuit", "charger")
        )
        if result.dry_run:
            self.stdout.write(self.style.SUCCESS(f"all {result.rows} rows valid (dry run, nothing written): {summary}"))
            return
        self.stdout.write(self.style.SUCCESS(f"imported {result.rows} rows: {summary}"))
        for charge_point_id, password in result.passwords.items():
            self.stdout.write(f"{charge_point_id}\t{password}")
        if result.passwords:
            self.stdout.write("(generated passwords, shown once: configure them on the chargers)")
