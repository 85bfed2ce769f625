"""Writes of billing's tariffs: a site's URDB v7 records stored as its tariff versions.

Schema: tenant. Each function checks that a tenant schema is active.
"""

from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction

from balancing.models import Site
from billing.digests import canonical_json, sha256_hex
from billing.models import Tariff
from billing.tariffs import RECORD_MAX_BYTES, TariffError, tariff_from_urdb, tariff_json_load
from evplatform.services import Outcome, require_tenant_schema


def tariff_import(*, site: Site, record: dict[str, Any], valid_from: date, actor: str = "") -> Tariff:
    """Store a URDB v7 record as the site's next tariff version, valid from ``valid_from``.

    The version before it (if open) now ends where this one begins. Nothing is written when
    the record does not parse (a ``ValidationError`` names the field).
    """
    return tariff_version_import(site=site, record=record, valid_from=valid_from, actor=actor).obj


def tariff_file_import(*, site: Site, file: File, valid_from: date, actor: str = "") -> Tariff:
    """``tariff_import`` of an uploaded URDB v7 record's JSON file (the portal's tariff upload).

    ``TariffError`` (path ``record``) when the file is unfit before it is a record: larger than
    ``RECORD_MAX_BYTES`` (refused unread) or not JSON that ``tariff_json_load`` takes; a
    ``ValidationError`` as ``tariff_import`` when the record is not a tariff or comes too early.
    """
    if file.size > RECORD_MAX_BYTES:
        raise TariffError("record", f"the file is larger than {RECORD_MAX_BYTES // 1024} KiB")
    record = tariff_json_load(file.read())
    return tariff_import(site=site, record=record, valid_from=valid_from, actor=actor)


def tariff_version_import(*, site: Site, record: dict[str, Any], valid_from: date, actor: str = "") -> Outcome[Tariff]:
    """``tariff_import`` that says whether a version was made: the same record from the same day
    as the site's latest version is that version again (``created`` false, nothing written)."""
    require_tenant_schema("tariff_import")
    try:
        spec = tariff_from_urdb(record)
    except TariffError as exc:
        raise ValidationError({exc.path: exc.problem}) from exc
    if isinstance(record, dict) and "items" in record and "energyratestructure" not in record:
        record = record["items"][0]
    record_sha256 = sha256_hex(canonical_json(record))
    with transaction.atomic():
        # The site's row, so that two imports of a site's first version do not both make version 1.
        Site.objects.select_for_update().filter(pk=site.pk).first()
        versions = Tariff.objects.select_for_update().filter(site=site).order_by("-version")
        latest = versions.first()
        if latest is not None and latest.valid_from == valid_from and latest.record_sha256 == record_sha256:
            return Outcome(latest, False)
        if latest is not None and latest.valid_from >= valid_from:
            raise ValidationError(
                {"valid_from": f"must be after {latest.valid_from} (version {latest.version} begins then)"}
            )
        if latest is not None and (latest.valid_until is None or latest.valid_until > valid_from):
            latest.valid_until = valid_from
            latest.save(update_fields=["valid_until"])
        tariff = Tariff.objects.create(
            site=site,
            version=(latest.version + 1) if latest else 1,
            name=spec.name[:200],
            utility=spec.utility[:200],
            urdb_label=spec.label[:64],
            valid_from=valid_from,
            record=record,
            record_sha256=record_sha256,
            imported_by=actor,
        )
        if actor:
            from tenants.accounts.services import audit_record

            audit_record(
                actor=actor,
                action="import",
                object_type="tariff",
                object_id=tariff.pk,
                label=f"{site.name}: {tariff.name} v{tariff.version}",
                changes=[("valid_from", None, valid_from), ("record_sha256", None, tariff.record_sha256)],
            )
        return Outcome(tariff, True)
