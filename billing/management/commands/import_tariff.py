"""Import an OpenEI URDB v7 rate record as a site's next tariff version."""

from datetime import date
from pathlib import Path
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from balancing.selectors import site_get
from billing.tariff_versions import tariff_import
from billing.tariffs import TariffError, tariff_json_load
from evplatform.cli import command_error, tenant_arg


class Command(BaseCommand):
    help = "Import a URDB v7 rate record (JSON file) as a site's tariff from a date on."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--site", required=True, help="site slug")
        parser.add_argument("--file", required=True, help="URDB v7 JSON (a rate record or an API answer with one item)")
        parser.add_argument("--valid-from", required=True, help="first day it applies, YYYY-MM-DD (site local)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        try:
            valid_from = date.fromisoformat(options["valid_from"])
        except ValueError:
            raise CommandError(f"--valid-from: {options['valid_from']!r} is not a date (YYYY-MM-DD)") from None
        try:
            record = tariff_json_load(Path(options["file"]).read_bytes())
        except OSError as exc:
            raise CommandError(f"--file: cannot read {options['file']}: {exc.strerror}") from None
        except TariffError as exc:
            raise CommandError(f"--file: {exc.problem}") from None
        with tenant_context(tenant):
            try:
                site = site_get(slug=options["site"])
                tariff = tariff_import(site=site, record=record, valid_from=valid_from, actor="command:import_tariff")
            except ObjectDoesNotExist as exc:
                raise command_error(exc, {"site": "--site"}) from exc
            except ValidationError as exc:
                raise command_error(exc, {"valid_from": "--valid-from"}) from exc
        self.stdout.write(self.style.SUCCESS(f"tariff {tariff} imported"))
