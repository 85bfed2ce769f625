"""Create a site (grid connection and its limits) in an organisation, or update it."""

import argparse
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser
from django_tenants.utils import tenant_context

from balancing.models import Site
from balancing.services import site_create_or_update
from evplatform.cli import command_error, decimal_arg, outcome_message, tenant_arg

OPTION_NAMES = {
    "slug": "site-slug",
    "name": "--name",
    "voltage_v": "--voltage",
    "phases": "--phases",
    "limit_a": "--limit-a",
    "demand_cap_kw": "--demand-cap-kw",
    "failsafe_a": "--failsafe-a",
    "building_allowance_kw": "--building-allowance-kw",
    "max_raise_a": "--max-raise-a",
    "timezone": "--timezone",
    "failsafe_auto": "--failsafe-auto",
    "idle_default_zero": "--idle-default-zero",
    "overdraw_escalation": "--overdraw-escalation",
    "overdraw_escalation_after_s": "--overdraw-escalation-after-s",
}


class Command(BaseCommand):
    help = "Create a site with its grid-connection limits, or bring it to these values (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", metavar="site-slug")
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--voltage", type=decimal_arg, default=decimal_arg("230"), help="line-to-neutral V (230)")
        parser.add_argument("--phases", type=int, choices=[1, 3], default=3)
        parser.add_argument("--limit-a", type=decimal_arg, required=True, help="grid connection limit per phase (A)")
        parser.add_argument("--demand-cap-kw", type=decimal_arg, default=None, help="cap on total power (kW)")
        parser.add_argument(
            "--failsafe-a",
            type=decimal_arg,
            default=None,
            help="offline current per charger (A), set by hand; default: sized to the site's limits",
        )
        parser.add_argument(
            "--building-allowance-kw",
            type=decimal_arg,
            default=None,
            help="building load (kW) the fail-safe sizing leaves under the demand cap (0)",
        )
        parser.add_argument(
            "--max-raise-a",
            type=decimal_arg,
            default=None,
            help="most a charger's current rises in one run (A); default: at once",
        )
        parser.add_argument("--timezone", default="UTC", help="IANA zone, e.g. Europe/Berlin (UTC)")
        parser.add_argument(
            "--failsafe-auto",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="size the fail-safe to the site's limits (the default unless --failsafe-a is given); "
            "--no-failsafe-auto: --failsafe-a as set, refused when it breaks a limit",
        )
        parser.add_argument(
            "--idle-default-zero",
            action="store_true",
            help="idle connectors get a 0 A default: a car that plugs in waits for its first profile",
        )
        parser.add_argument(
            "--overdraw-escalation",
            choices=list(Site.Escalation.values),
            default=Site.Escalation.NONE,
            help="what to do with a charger that keeps drawing more than offered (none: alert only)",
        )
        parser.add_argument(
            "--overdraw-escalation-after-s",
            type=int,
            default=300,
            help="seconds of overdraw before the escalation acts (300)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        try:
            with tenant_context(tenant):
                outcome = site_create_or_update(
                    slug=options["slug"],
                    name=options["name"],
                    voltage_v=options["voltage"],
                    phases=options["phases"],
                    limit_a=options["limit_a"],
                    demand_cap_kw=options["demand_cap_kw"],
                    failsafe_a=options["failsafe_a"],
                    building_allowance_kw=options["building_allowance_kw"],
                    max_raise_a=options["max_raise_a"],
                    timezone=options["timezone"],
                    failsafe_auto=options["failsafe_auto"],
                    idle_default_zero=options["idle_default_zero"],
                    overdraw_escalation=options["overdraw_escalation"],
                    overdraw_escalation_after_s=options["overdraw_escalation_after_s"],
                    actor="system:create_site",
                )
        except ValidationError as exc:
            raise command_error(exc, OPTION_NAMES) from exc
        self.stdout.write(self.style.SUCCESS(outcome_message("site", f"{tenant.slug}/{options['slug']}", outcome)))
