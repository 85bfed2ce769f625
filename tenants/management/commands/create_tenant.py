"""Create an organisation (schema, domain, first admin), or converge an existing one."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from evplatform.cli import command_error, outcome_message
from tenants.services import tenant_create

OPTION_NAMES = {
    "slug": "slug",
    "name": "--name",
    "domain": "--domain",
    "admin_email": "--admin-email",
    "admin_password": "--admin-password",
}


class Command(BaseCommand):
    help = "Create an organisation with its own schema, a domain and an admin user (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="short id, e.g. 'acme-malls' (schema acme_malls)")
        parser.add_argument("--name", required=True, help="display name")
        parser.add_argument("--domain", required=True, help="host name the organisation's portal answers on")
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--admin-password", required=True, help="used only if the admin user is new")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            outcome = tenant_create(
                slug=options["slug"],
                name=options["name"],
                domain=options["domain"],
                admin_email=options["admin_email"],
                admin_password=options["admin_password"],
            )
        except ValidationError as exc:
            raise command_error(exc, OPTION_NAMES) from exc
        self.stdout.write(self.style.SUCCESS(outcome_message("organisation", options["slug"], outcome)))
