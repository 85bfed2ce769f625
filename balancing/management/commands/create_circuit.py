"""Create a panel, sub-panel or circuit in a site's tree, or update it."""

from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import BaseCommand, CommandParser
from django_tenants.utils import tenant_context

from balancing.models import Circuit
from balancing.selectors import site_get
from balancing.services import circuit_create_or_update
from evplatform.cli import command_error, decimal_arg, outcome_message, tenant_arg

OPTION_NAMES = {
    "site": "--site",
    "circuit": "--parent",
    "name": "name",
    "limit_a": "--limit-a",
    "limit_kw": "--limit-kw",
    "kind": "--kind",
    "parent": "--parent",
}


class Command(BaseCommand):
    help = "Create a panel, sub-panel or circuit under a site or another circuit (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--site", required=True, help="site slug")
        parser.add_argument("--kind", choices=Circuit.Kind.values, default=Circuit.Kind.CIRCUIT)
        parser.add_argument("--parent", help="name of the circuit this one hangs below (default: the grid connection)")
        parser.add_argument("--limit-a", type=decimal_arg, required=True, help="per-phase limit (A)")
        parser.add_argument("--limit-kw", type=decimal_arg, default=None, help="optional power limit (kW)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        try:
            with tenant_context(tenant):
                outcome = circuit_create_or_update(
                    site=site_get(slug=options["site"]),
                    name=options["name"],
                    kind=options["kind"],
                    parent_name=options["parent"],
                    limit_a=options["limit_a"],
                    limit_kw=options["limit_kw"],
                    actor="system:create_circuit",
                )
        except (ValidationError, ObjectDoesNotExist) as exc:
            raise command_error(exc, OPTION_NAMES) from exc
        self.stdout.write(self.style.SUCCESS(outcome_message("circuit", options["name"], outcome)))
