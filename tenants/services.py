"""Onboarding of organisations and platform staff. Schema: public (and the new tenant's own).

Every function here is idempotent: running it again with the same input changes nothing, and
running it with new input converges the stored state to it.
"""

import os
import re
import shutil
import subprocess
from typing import Any

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import DomainNameValidator, validate_email
from django.db import transaction
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from evplatform.services import Outcome, describe_change
from tenants.accounts.models import Role, User
from tenants.models import Domain, Tenant
from tenants.validators import RESERVED_TENANT_SLUGS, TENANT_SLUG_RE, schema_name_for_slug

_validate_domain = DomainNameValidator(accept_idna=False)


def _validate_host(domain: str) -> str | None:
    # "localhost" and "demo.localhost" are fine hosts for a platform; the validator wants a TLD.
    if domain == "localhost" or domain.endswith(".localhost"):
        probe = domain.removesuffix("localhost") + "localhost.example"
    else:
        probe = domain
    try:
        _validate_domain(probe)
    except ValidationError:
        return f"{domain!r} is not a valid host name (e.g. 'acme.evplatform.example')"
    return None


def _user_ensure(*, email: str, password: str | None, role: str, staff: bool, changes: list[str]) -> User:
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        user = User.objects.create_user(email=email, password=password, role=role, is_staff=staff, is_superuser=staff)
        changes.append(f"user {email} created ({role})")
        return user
    updates = {"role": role, "is_staff": staff, "is_superuser": staff, "is_active": True}
    for attr, value in updates.items():
        if getattr(user, attr) != value:
            changes.append(describe_change(f"user {email} {attr}", getattr(user, attr), value))
            setattr(user, attr, value)
    user.save()
    return user


def _domain_owner(domain: str, tenant: Tenant | None) -> Domain | None:
    """The domain's row if ``tenant`` already has it; a ValidationError if another organisation does."""
    owner = Domain.objects.select_related("tenant").filter(domain__iexact=domain).first()
    if owner is not None and (tenant is None or owner.tenant_id != tenant.pk):
        raise ValidationError({"domain": f"{domain!r} already belongs to organisation {owner.tenant.slug!r}"})
    return owner


def _domain_add(tenant: Tenant, domain: str, changes: list[str]) -> None:
    """Give ``tenant`` the domain; the first one it gets is its primary domain."""
    has_primary = Domain.objects.filter(tenant=tenant, is_primary=True).exists()
    Domain.objects.create(domain=domain, tenant=tenant, is_primary=not has_primary)
    changes.append(f"domain {domain} added")


def tenant_create(*, slug: str, name: str, domain: str, admin_email: str, admin_password: str) -> Outcome[Tenant]:
    """Create an organisation with its schema, a domain and its first admin, or converge to it.

    An existing admin's password is left as it is (a re-run must not reset a password the
    admin has changed since). Raises ``ValidationError`` naming each bad field.
    """
    slug = slug.strip()
    name = name.strip()
    domain = domain.strip().lower()
    admin_email = admin_email.strip().lower()
    errors: dict[str, str] = {}

    if not TENANT_SLUG_RE.match(slug):
        errors["slug"] = (
            f"{slug!r} is not a valid organisation slug: 2-40 characters of lower-case letters, "
            "digits and hyphens, starting with a letter"
        )
    elif slug in RESERVED_TENANT_SLUGS or schema_name_for_slug(slug) == get_public_schema_name():
        errors["slug"] = f"{slug!r} is reserved"
    if not name:
        errors["name"] = "must not be empty"
    if host_error := _validate_host(domain):
        errors["domain"] = host_error
    try:
        validate_email(admin_email)
    except ValidationError:
        errors["admin_email"] = f"{admin_email!r} is not a valid email address"
    if errors:
        raise ValidationError(errors)

    with schema_context(get_public_schema_name()), transaction.atomic():
        tenant = Tenant.objects.select_for_update().filter(slug=slug).first()
        owner = _domain_owner(domain, tenant)

        admin_exists = False
        if tenant is not None:
            with tenant_context(tenant):
                admin_exists = User.objects.filter(email__iexact=admin_email).exists()
        if not admin_exists:
            try:
                validate_password(admin_password, User(email=admin_email))
            except ValidationError as exc:
                raise ValidationError({"admin_password": exc.messages}) from exc

        changes: list[str] = []
        created = tenant is None
        if tenant is None:
            tenant = Tenant(slug=slug, name=name, schema_name=schema_name_for_slug(slug))
            tenant.save(verbosity=0)
            changes.append(f"schema {tenant.schema_name} created")
        elif tenant.name != name:
            changes.append(describe_change("name", tenant.name, name))
            tenant.name = name
            tenant.save(verbosity=0)

        if owner is None:
            _domain_add(tenant, domain, changes)

        with tenant_context(tenant):
            _user_ensure(email=admin_email, password=admin_password, role=Role.ADMIN, staff=True, changes=changes)
    return Outcome(tenant, created, changes)


def platform_setup(
    *, domain: str, superuser_email: str | None = None, superuser_password: str | None = None
) -> Outcome[Tenant]:
    """Ensure the public pseudo-tenant, its domain and (optionally) a platform superuser."""
    domain = domain.strip().lower()
    if host_error := _validate_host(domain):
        raise ValidationError({"domain": host_error})
    public = get_public_schema_name()
    changes: list[str] = []
    with schema_context(public), transaction.atomic():
        tenant = Tenant.objects.filter(schema_name=public).first()
        created = tenant is None
        if tenant is None:
            tenant = Tenant(schema_name=public, slug="platform", name="Platform")
            tenant.save(verbosity=0)
        owner = _domain_owner(domain, tenant)
        if owner is None:
            _domain_add(tenant, domain, changes)
        if superuser_email:
            email = superuser_email.strip().lower()
            try:
                validate_email(email)
            except ValidationError as exc:
                raise ValidationError({"superuser_email": f"{email!r} is not a valid email address"}) from exc
            if not User.objects.filter(email__iexact=email).exists():
                if not superuser_password:
                    raise ValidationError({"superuser_password": "required to create a new superuser"})
                try:
                    validate_password(superuser_password, User(email=email))
                except ValidationError as exc:
                    raise ValidationError({"superuser_password": exc.messages}) from exc
            _user_ensure(email=email, password=superuser_password, role=Role.ADMIN, staff=True, changes=changes)
    return Outcome(tenant, created, changes)


# The rows `migrate` writes in every schema: its record of migrations, and what the post_migrate
# handlers add (content types, permissions). A copied schema gets these rows and no others.
MIGRATION_WRITTEN_TABLES = ("django_migrations", "django_content_type", "auth_permission")


def _database_params() -> dict[str, Any]:
    db = settings.DATABASES["default"]
    params = {
        "dbname": db["NAME"],
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
        "host": db.get("HOST"),
        "port": db.get("PORT"),
    }
    return {key: str(value) for key, value in params.items() if value}


def schema_ddl(schema: str) -> str:
    """The DDL of ``schema`` (tables, sequences, constraints, indexes, functions, triggers) from ``pg_dump``.

    As SQL that one ``execute`` can run: psql's meta-commands (``\\restrict``) are left out.
    """
    params = _database_params()
    env = {**os.environ, "PGPASSWORD": params.pop("password", "")}
    command = ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", f"--schema={schema}"]
    options = {"dbname": "dbname", "user": "username", "host": "host", "port": "port"}
    command += [f"--{options[key]}={value}" for key, value in params.items()]
    dump = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout  # noqa: S603
    return "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))


def schema_copy(ddl: str, *, template: str, schema: str, conn: Any) -> None:
    """Create ``schema`` as a copy of ``template``: its DDL, renamed, and the rows migrations wrote.

    ``ddl`` is ``schema_ddl(template)``; ``conn`` a psycopg connection of its own (the dump's
    ``SET`` statements stay on it). One transaction: a failure leaves nothing behind.
    """
    quoted_template, quoted = (conn_quote(template), conn_quote(schema))
    renamed = re.sub(rf"(?<![\w.\"]){re.escape(template)}(?=[.;])", schema, ddl)
    with conn.transaction():
        conn.execute(renamed)
        for table in MIGRATION_WRITTEN_TABLES:
            conn.execute(f"INSERT INTO {quoted}.{table} SELECT * FROM {quoted_template}.{table}")  # noqa: S608
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{quoted}.{table}', 'id'), max(id)) FROM {quoted}.{table}"  # noqa: S608
            )


def conn_quote(name: str) -> str:
    """A schema name as a quoted SQL identifier (our schema names never contain a quote)."""
    return '"' + name.replace('"', '""') + '"'


def tenants_create_empty(*, prefix: str, count: int, domain_suffix: str = "localhost") -> list[Tenant]:
    """Make sure organisations ``<prefix>-1`` … ``<prefix>-<count>`` exist, without users or sites.

    For benchmarks and load tests of many tenants. Creating a tenant the usual way runs every
    migration in its new schema (3-4 s each). Here only the first is created that way; every
    other schema is a copy of its schema: ``pg_dump``'s DDL of it (taken once) renamed, and the
    rows migrations wrote (``MIGRATION_WRITTEN_TABLES``), so it is up to date at once, in about
    0.1-0.3 s whatever the number of schemas. django-tenants' ``clone_schema`` SQL function does
    the same in one call, but its catalog reads grow with the schemas in the database (about
    1 s a copy at 30 schemas, 10 s at 200); it is used only where ``pg_dump`` is not installed.
    Existing organisations are kept as they are. Returns them all, in order.
    """
    import psycopg
    from django_tenants.clone import CloneSchema

    if not 1 <= count <= 100_000:
        raise ValidationError({"count": "must be between 1 and 100000"})
    if not TENANT_SLUG_RE.match(f"{prefix}-{count}"):
        raise ValidationError({"prefix": f"{prefix!r} does not make valid organisation slugs ({prefix}-1 …)"})

    def register(tenant: Tenant) -> Tenant:
        with transaction.atomic():
            tenant.save(verbosity=0)
            Domain.objects.create(domain=f"{tenant.slug}.{domain_suffix}", tenant=tenant, is_primary=True)
        return tenant

    def new(number: int) -> Tenant:
        slug = f"{prefix}-{number}"
        return Tenant(slug=slug, name=f"{prefix} {number}", schema_name=schema_name_for_slug(slug))

    with schema_context(get_public_schema_name()):
        existing = {t.slug: t for t in Tenant.objects.filter(slug__startswith=f"{prefix}-")}
        first = existing.get(f"{prefix}-1") or register(new(1))  # migrated in full
        missing = [n for n in range(2, count + 1) if f"{prefix}-{n}" not in existing]
        made: dict[str, Tenant] = {}
        if missing and shutil.which("pg_dump"):
            ddl = schema_ddl(first.schema_name)
            with psycopg.connect(autocommit=True, **_database_params()) as conn:
                for number in missing:
                    tenant = new(number)
                    schema_copy(ddl, template=first.schema_name, schema=tenant.schema_name, conn=conn)
                    tenant.auto_create_schema = False  # the schema is there, migrated
                    made[tenant.slug] = register(tenant)
        elif missing:
            cloner = CloneSchema()
            for number in missing:
                tenant = new(number)
                cloner.clone_schema(first.schema_name, tenant.schema_name, "DATA")
                tenant.auto_create_schema = False
                made[tenant.slug] = register(tenant)
    return [first] + [existing.get(f"{prefix}-{n}") or made[f"{prefix}-{n}"] for n in range(2, count + 1)]
