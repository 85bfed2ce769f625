"""The demo organisation of the brochure: four chargers behind a 20 kW cap (idempotent).

Used by `make run`; every value can be changed afterwards in the admin. Demo passwords come
from the environment where set, so a shared demo host need not use the documented ones.
It is a balancing command, not an onboarding one of ``tenants``: besides the organisation it
creates a site, a circuit and chargers, which the tenancy layer knows nothing of.
"""

import os
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from balancing.services import circuit_create_or_update, site_create_or_update
from chargepoint.services import charger_register
from evplatform.cli import command_error, outcome_message
from evplatform.settings.base import env
from tenants.services import platform_setup, tenant_create

DEMO_SLUG = "demo"
DEMO_DOMAIN = "demo.localhost"
DEMO_ADMIN_EMAIL = "admin@demo.localhost"
PLATFORM_ADMIN_EMAIL = "admin@platform.localhost"
DEMO_SITE = "garage"
DEMO_CHARGERS = ("DEMO-CP-1", "DEMO-CP-2", "DEMO-CP-3", "DEMO-CP-4")


class Command(BaseCommand):
    help = "Create the demo organisation: a garage with four chargers and a 20 kW demand cap."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--domain", default=DEMO_DOMAIN)

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.IS_PRODUCTION:
            raise CommandError(
                "seed_demo creates accounts with published passwords and refuses to run with the production "
                "settings; set up a deployment with `manage.py setup_platform` and `manage.py create_tenant`"
            )
        password = env.str("DEMO_PASSWORD", default="demo-charge-2026")
        charger_password = env.str("DEMO_CHARGER_PASSWORD", default="demo-charger-secret-2026")
        try:
            self._report(
                "platform",
                settings.PLATFORM_DOMAIN,
                platform_setup(
                    domain=settings.PLATFORM_DOMAIN, superuser_email=PLATFORM_ADMIN_EMAIL, superuser_password=password
                ),
            )
            tenant_outcome = tenant_create(
                slug=DEMO_SLUG,
                name="Demo Mall Garage",
                domain=options["domain"],
                admin_email=DEMO_ADMIN_EMAIL,
                admin_password=password,
            )
            tenant = tenant_outcome.obj
            self._report("organisation", DEMO_SLUG, tenant_outcome)
            with tenant_context(tenant):
                site_outcome = site_create_or_update(
                    slug=DEMO_SITE,
                    name="Mall garage, level -1",
                    timezone="America/Los_Angeles",
                    voltage_v=Decimal("230"),
                    phases=3,
                    limit_a=Decimal("63"),
                    demand_cap_kw=Decimal("20"),
                    failsafe_auto=True,
                )
                self._report("site", DEMO_SITE, site_outcome)
                self._report(
                    "circuit",
                    "Panel A",
                    circuit_create_or_update(
                        site=site_outcome.obj,
                        name="Panel A",
                        kind="panel",
                        limit_a=Decimal("63"),
                    ),
                )
            for cp_id in DEMO_CHARGERS:
                self._report(
                    "charger",
                    cp_id,
                    charger_register(
                        tenant=tenant,
                        site_slug=DEMO_SITE,
                        charge_point_id=cp_id,
                        password=charger_password,
                        max_current_a=Decimal("16"),
                        phases=3,
                        circuit_name="Panel A",
                    ),
                )
        except ValidationError as exc:
            raise command_error(exc, {}) from exc
        shown = "the value of DEMO_PASSWORD" if "DEMO_PASSWORD" in os.environ else password
        self.stdout.write(
            "demo ready:\n"
            f"  platform admin      http://{settings.PLATFORM_DOMAIN}:8000/admin/  {PLATFORM_ADMIN_EMAIL} / {shown}\n"
            f"  organisation admin  http://{options['domain']}:8000/admin/  {DEMO_ADMIN_EMAIL} / {shown}"
        )

    def _report(self, kind: str, label: str, outcome: Any) -> None:
        self.stdout.write(outcome_message(kind, label, outcome))
