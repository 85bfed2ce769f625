"""Bulk onboarding: sites, circuits and chargers of one organisation from a CSV or XLSX file.

Schema: the organisation's (charger identities also in ``public``, as ``charger_register`` does).

One row per object, named by its ``kind`` column (rows are applied in file order, so a circuit
may name a site made by an earlier row):

========  ========================================================================================
kind      columns (optional ones in brackets)
========  ========================================================================================
site      site, name, limit_a, [phases=3], [voltage_v=230], [demand_cap_kw], [timezone=UTC]
circuit   site, name, limit_a, [parent], [kind_of_circuit=circuit]
charger   site, charge_point_id, max_current_a, [phases=3], [connectors=1], [circuit], [password]
========  ========================================================================================

Every row goes through the same services as one registration by hand (``site_create_or_update``,
``circuit_create_or_update``, ``charger_register``), each in a savepoint of one transaction, so
every row's errors are found in one pass, naming the row and the column. Nothing is kept unless
every row is valid and it is not a dry run: a file is written whole or not at all. Rows are
idempotent: importing the same file twice changes nothing the second time. A charger without a
password gets a generated one, given back once in the result (the platform keeps only its hash).
"""

import csv
import io
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import transaction
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from balancing.selectors import site_get
from balancing.services import circuit_create_or_update, site_create_or_update
from chargepoint.services import charger_register
from evplatform.services import Outcome
from tenants.accounts.services import audit_record
from tenants.models import Tenant
from tenants.selectors import identity_find

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ROWS = 5000
GENERATED_PASSWORD_CHARS = 32
KINDS = ("site", "circuit", "charger")
REQUIRED = {
    "site": ("site", "name", "limit_a"),
    "circuit": ("site", "name", "limit_a"),
    "charger": ("site", "charge_point_id", "max_current_a"),
}


class ImportFileError(ValueError):
    """The file as a whole cannot be read (format, size, header); nothing was looked at further."""


@dataclass(frozen=True)
class RowError:
    row: int  # as a spreadsheet numbers it: the header is row 1
    column: str
    message: str


@dataclass
class ImportResult:
    rows: int
    dry_run: bool
    written: bool = False
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    errors: list[RowError] = field(default_factory=list)
    # Generated charger passwords, by charge point id: shown once, never stored in clear.
    passwords: dict[str, str] = field(default_factory=dict)


def fleet_rows_read(*, filename: str, content: bytes) -> list[dict[str, str]]:
    """The rows of a ``.csv`` (UTF-8, comma separated) or ``.xlsx`` (first sheet) file, header keys lowercased."""
    if len(content) > MAX_FILE_BYTES:
        raise ImportFileError(f"{filename}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"{filename}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        if "\x00" in text:
            raise ImportFileError(f"{filename}: holds a NUL character")
        table: list[list[str]] = list(csv.reader(io.StringIO(text)))
    elif lowered.endswith(".xlsx"):
        table = _xlsx_table(filename, content)
    else:
        raise ImportFileError(f"{filename}: expected a .csv or .xlsx file")
    table = [row for row in table if any(cell.strip() for cell in row)]
    if not table:
        raise ImportFileError(f"{filename}: empty")
    header = [cell.strip().lower() for cell in table[0]]
    if "kind" not in header:
        raise ImportFileError(f"{filename}: the header row has no 'kind' column (site, circuit or charger)")
    if len(table) - 1 > MAX_ROWS:
        raise ImportFileError(f"{filename}: more than {MAX_ROWS} rows; split it")
    return [{key: (cells[i].strip() if i < len(cells) else "") for i, key in enumerate(header)} for cells in table[1:]]


def _xlsx_table(filename: str, content: bytes) -> list[list[str]]:
    from openpyxl import load_workbook  # type: ignore[import-untyped]

    try:
        book = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        raise ImportFileError(f"{filename}: not an XLSX workbook ({type(exc).__name__})") from exc
    try:
        sheet = book.worksheets[0]
        return [["" if value is None else str(value) for value in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def fleet_import(*, tenant: Tenant, rows: Iterable[Mapping[str, str]], dry_run: bool, actor: str) -> ImportResult:
    """Apply the rows (see the module's docstring); keep them only if all are valid and not ``dry_run``."""
    rows = list(rows)
    result = ImportResult(rows=len(rows), dry_run=dry_run)
    with tenant_context(tenant), transaction.atomic():
        for number, row in enumerate(rows, start=2):
            try:
                with transaction.atomic():
                    kind, outcome = _apply(tenant=tenant, row=row, result=result, dry_run=dry_run)
            except (ValidationError, ObjectDoesNotExist, _RowProblem) as exc:
                result.errors.extend(_row_errors(number, exc))
                continue
            if outcome.created:
                result.created[kind] += 1
            elif outcome.changes:
                result.updated[kind] += 1
        if dry_run or result.errors:
            transaction.set_rollback(True)
            result.passwords.clear()
            return result
        changes = [
            (f"{kind}s {what}", None, count[kind])
            for what, count in (("created", result.created), ("updated", result.updated))
            for kind in KINDS
            if count[kind]
        ]
        audit_record(
            actor=actor,
            action="import",
            object_type="fleet",
            object_id=tenant.slug,
            label=f"{len(rows)} rows",
            changes=changes or [("rows", None, "no change")],
        )
        result.written = True
    return result


class _RowProblem(Exception):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


def _apply(*, tenant: Tenant, row: Mapping[str, str], result: ImportResult, dry_run: bool) -> tuple[str, Outcome[Any]]:
    kind = row.get("kind", "").strip().lower()
    if kind not in KINDS:
        raise _RowProblem("kind", f"{row.get('kind', '')!r} is not one of {', '.join(KINDS)}")
    for column in REQUIRED[kind]:
        if not row.get(column):
            raise _RowProblem(column, "required")
    if kind == "site":
        values: dict[str, Any] = {
            "slug": row["site"],
            "name": row["name"],
            "limit_a": _decimal(row, "limit_a"),
            "phases": _integer(row, "phases", 3),
            "voltage_v": _decimal(row, "voltage_v", Decimal("230")),
            "timezone": row.get("timezone") or "UTC",
            "actor": "import",
        }
        if row.get("demand_cap_kw"):
            values["demand_cap_kw"] = _decimal(row, "demand_cap_kw")
        return kind, site_create_or_update(**values)
    site = site_get(slug=row["site"])
    if kind == "circuit":
        circuit_values: dict[str, Any] = {
            "site": site,
            "name": row["name"],
            "limit_a": _decimal(row, "limit_a"),
            "parent_name": row.get("parent") or None,
            "actor": "import",
        }
        if row.get("kind_of_circuit"):
            circuit_values["kind"] = row["kind_of_circuit"]
        return kind, circuit_create_or_update(**circuit_values)
    password: str | None = row.get("password") or None
    generated = False
    if password is None:
        with schema_context(get_public_schema_name()):
            registered = identity_find(charge_point_id=row["charge_point_id"]) is not None
        if not registered:  # a registered charger keeps its password; a new one gets a generated one
            password = secrets.token_urlsafe(GENERATED_PASSWORD_CHARS)[:GENERATED_PASSWORD_CHARS]
            generated = True
    outcome = charger_register(
        tenant=tenant,
        site_slug=site.slug,
        charge_point_id=row["charge_point_id"],
        password=password,
        max_current_a=_decimal(row, "max_current_a"),
        phases=_integer(row, "phases", 3),
        connectors=_integer(row, "connectors", 1),
        circuit_name=row.get("circuit") or None,
    )
    if generated and password is not None and not dry_run:
        result.passwords[row["charge_point_id"]] = password
    return kind, outcome


def _decimal(row: Mapping[str, str], column: str, default: Decimal | None = None) -> Decimal:
    raw = row.get(column) or ""
    if not raw and default is not None:
        return default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _RowProblem(column, f"{raw!r} is not a number") from None
    if not value.is_finite():
        raise _RowProblem(column, f"{raw!r} is not a finite number")
    return value


def _integer(row: Mapping[str, str], column: str, default: int) -> int:
    raw = row.get(column) or ""
    if not raw:
        return default
    try:
        value = Decimal(raw)
        if value != value.to_integral_value():
            raise ValueError(raw)
        return int(value)
    except (ArithmeticError, ValueError):  # not a number, NaN, infinite, or with a fraction
        raise _RowProblem(column, f"{raw!r} is not a whole number") from None


# The services' field names where the file's columns are named otherwise.
COLUMN_OF_FIELD = {"slug": "site", "parent_name": "parent", "circuit_name": "circuit", "site_slug": "site"}


def _row_errors(row: int, exc: Exception) -> list[RowError]:
    if isinstance(exc, _RowProblem):
        return [RowError(row, exc.column, exc.message)]
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return [
            RowError(row, COLUMN_OF_FIELD.get(column, column), " ".join(messages))
            for column, messages in exc.message_dict.items()
        ]
    if isinstance(exc, ValidationError):
        return [RowError(row, "", " ".join(exc.messages))]
    return [RowError(row, str(getattr(exc, "field", "")), str(exc))]
