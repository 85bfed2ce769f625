"""Create many organisations without users or sites quickly, for benchmarks and load tests."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from evplatform.cli import command_error
from tenants.services import tenants_create_empty


class Command(BaseCommand):
    help = (
        "Make sure organisations <prefix>-1 … <prefix>-<count> exist (no users, no sites); "
        "all but the first get a copy of the first one's migrated schema."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("count", type=int, help="how many organisations")
        parser.add_argument("--prefix", default="load", help="slug prefix (default 'load': load-1, load-2, …)")
        parser.add_argument("--domain-suffix", default="localhost", help="their domains are <slug>.<suffix>")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tenants = tenants_create_empty(
                prefix=options["prefix"], count=options["count"], domain_suffix=options["domain_suffix"]
            )
        except ValidationError as exc:
            names = {"count": "count", "prefix": "--prefix", "domain_suffix": "--domain-suffix"}
            raise command_error(exc, names) from exc
        self.stdout.write(self.style.SUCCESS(f"{len(tenants)} organisations {options['prefix']}-1 … ready"))
