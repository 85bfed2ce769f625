"""Ensure the platform's own domain (public schema) and, optionally, a platform superuser."""

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from evplatform.cli import command_error, outcome_message
from tenants.services import platform_setup


class Command(BaseCommand):
    help = "Ensure the platform domain and a platform superuser exist (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--domain", default=settings.PLATFORM_DOMAIN, help="default: PLATFORM_DOMAIN")
        parser.add_argument("--superuser-email")
        parser.add_argument("--superuser-password", help="used only if the superuser is new")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            outcome = platform_setup(
                domain=options["domain"],
                superuser_email=options["superuser_email"],
                superuser_password=options["superuser_password"],
            )
        except ValidationError as exc:
            raise command_error(
                exc,
                {
                    "domain": "--domain",
                    "superuser_email": "--superuser-email",
                    "superuser_password": "--superuser-password",
                },
            ) from exc
        self.stdout.write(self.style.SUCCESS(outcome_message("platform", options["domain"], outcome)))
