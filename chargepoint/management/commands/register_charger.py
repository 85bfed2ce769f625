"""Register a charger at a site: its station record and its identity for the gateway."""

from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import BaseCommand, CommandParser

from chargepoint.models import ChargingStation
from chargepoint.services import charger_register
from evplatform.cli import command_error, decimal_arg, outcome_message, tenant_arg

OPTION_NAMES = {
    "charge_point_id": "charge_point_id",
    "password": "--password",
    "max_current_a": "--max-a",
    "phases": "--phases",
    "wiring": "--wiring",
    "connectors": "--connectors",
    "circuit": "--circuit",
    "site": "--site",
    "is_site_meter": "--site-meter",
}


class Command(BaseCommand):
    help = "Register a charger (OCPP identity and password) at a site of an organisation (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("charge_point_id")
        parser.add_argument("--tenant", required=True, help="organisation slug")
        parser.add_argument("--site", required=True, help="site slug")
        parser.add_argument("--max-a", type=decimal_arg, required=True, help="per-phase rating (A)")
        parser.add_argument("--phases", type=int, choices=[1, 3], default=3)
        parser.add_argument(
            "--wiring", choices=ChargingStation.Wiring.values, help="site phases it is wired to (default L1 or L1L2L3)"
        )
        parser.add_argument("--password", required=True, help="HTTP Basic password, 16-40 characters")
        parser.add_argument("--circuit", help="name of the circuit it hangs on")
        parser.add_argument("--connectors", type=int, default=1)
        parser.add_argument(
            "--site-meter",
            action="store_true",
            help="this identity is the site's meter (MeterValues on connector 0), not a charger",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = tenant_arg(options["tenant"])
        try:
            outcome = charger_register(
                tenant=tenant,
                site_slug=options["site"],
                charge_point_id=options["charge_point_id"],
                password=options["password"],
                max_current_a=options["max_a"],
                phases=options["phases"],
                wiring=options["wiring"],
                circuit_name=options["circuit"],
                connectors=options["connectors"],
                is_site_meter=options["site_meter"],
            )
        except (ValidationError, ObjectDoesNotExist) as exc:
            raise command_error(exc, OPTION_NAMES) from exc
        self.stdout.write(self.style.SUCCESS(outcome_message("charger", options["charge_point_id"], outcome)))
