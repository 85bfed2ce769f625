"""`migrate_schemas` that skips tenant schemas with nothing to apply and migrates the rest in parallel.

Schema: public, then every tenant's. django-tenants' command runs Django's `migrate` once per
schema, one after the other; that costs about 0.2 s a schema even when it applies nothing, so a
platform of many organisations waits minutes on every deploy. Here, for the usual run over all
tenants, the migration graph is loaded once and every schema's ``django_migrations`` is read in
one query (``tenants.selectors.schemas_with_unapplied_migrations``); only the schemas that miss
a migration go to django-tenants' executor, ``TENANT_MIGRATION_EXECUTOR`` (``multiprocessing``:
``TENANT_MULTIPROCESSING_MAX_PROCESSES`` forked processes, ``TENANT_MULTIPROCESSING_CHUNKS``
schemas handed to a process at a time). The shared (public) schema is migrated exactly as
django-tenants does it.

A skipped schema also skips `migrate`'s ``post_migrate`` handlers (content types and
permissions): they only add rows for models, and a new model always comes with a migration,
which makes its schemas stale and so migrated. Everything that is not that usual run (a single
``--schema``, an app label or target migration, ``--prune``, ``--run-syncdb``, multi-type
tenants) goes to django-tenants' command unchanged; ``tenants.Tenant.save`` creates a schema
through the single-schema path, in-process, inside the caller's transaction.

`tenants` precedes `django_tenants` in ``INSTALLED_APPS``, so this command wins over its own.
"""

import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django_tenants.management.commands.migrate_schemas import MigrateSchemasCommand
from django_tenants.migration_executors import get_executor
from django_tenants.utils import get_public_schema_name, has_multi_type_tenants, schema_context

from tenants.selectors import schemas_with_unapplied_migrations, tenant_schemas_all

# Options that make a run more than "bring every schema to the latest migration".
PASS_THROUGH_OPTIONS = ("schema_name", "app_label", "migration_name", "prune", "run_syncdb")


class Command(MigrateSchemasCommand):
    help = (
        "Migrate the public schema, then only the tenant schemas that miss a migration "
        "(in parallel with TENANT_MIGRATION_EXECUTOR)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--all-schemas",
            action="store_true",
            help="Run migrate in every tenant schema, also those that are up to date (django-tenants' behaviour).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["all_schemas"] or has_multi_type_tenants() or any(options.get(o) for o in PASS_THROUGH_OPTIONS):
            super().handle(*args, **options)
            return
        shared_only, tenant_only = options["shared"], options["tenant"]
        if not tenant_only:
            super().handle(*args, **{**options, "shared": True, "tenant": False})
        if not shared_only:
            self._migrate_tenants(args, options)

    def _migrate_tenants(self, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        started = time.monotonic()
        with schema_context(get_public_schema_name()):
            schemas = tenant_schemas_all()
            stale = schemas_with_unapplied_migrations(schemas)
        up_to_date = len(schemas) - len(stale)
        codename = options["executor"] or settings.TENANT_MIGRATION_EXECUTOR
        verbose = int(options["verbosity"]) >= 1
        if verbose:
            how = f" with the {codename} executor" if stale else ""
            self.stdout.write(
                f"tenant schemas: {up_to_date} of {len(schemas)} up to date, {len(stale)} to migrate{how} "
                f"(checked in {time.monotonic() - started:.2f} s)"
            )
        if stale and options["check_unapplied"]:
            # Django's `migrate --check` would exit non-zero in each of these; say which, and do the same.
            self.stderr.write(f"unapplied migrations in: {', '.join(stale)}")
            sys.exit(1)
        if stale:
            executor = get_executor(codename=codename)(args, {**options, "executor": codename})
            executor.run_migrations(tenants=list(stale))
        if verbose:
            self.stdout.write(
                self.style.SUCCESS(
                    f"tenant schemas: {len(stale)} migrated, {up_to_date} already up to date "
                    f"in {time.monotonic() - started:.1f} s"
                )
            )
