"""Bulk onboarding: every row's errors before anything is written, then the whole file or nothing."""

import csv
import io
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import schema_context
from openpyxl import Workbook, load_workbook

from balancing.models import Circuit, Site
from chargepoint.models import ChargingStation, Connector
from chargepoint.onboarding import ImportFileError, RowError, fleet_import, fleet_rows_read
from tenants.accounts.models import AuditEvent, Role
from tenants.models import ChargePointIdentity

pytestmark = pytest.mark.django_db

HEADER = [
    "kind",
    "site",
    "name",
    "limit_a",
    "parent",
    "charge_point_id",
    "max_current_a",
    "phases",
    "circuit",
    "connectors",
]


def campus_rows(chargers: int = 300) -> list[dict[str, str]]:
    """One campus: a site, a main panel, three feeders and ``chargers`` chargers shared among them."""
    rows = [
        {"kind": "site", "site": "campus", "name": "North campus", "limit_a": "1600"},
        {"kind": "circuit", "site": "campus", "name": "Main", "limit_a": "1600"},
    ]
    rows += [
        {"kind": "circuit", "site": "campus", "name": f"Feeder {n}", "limit_a": "630", "parent": "Main"}
        for n in (1, 2, 3)
    ]
    rows += [
        {
            "kind": "charger",
            "site": "campus",
            "charge_point_id": f"CAMPUS-{i:03d}",
            "max_current_a": "32",
            "circuit": f"Feeder {i % 3 + 1}",
            "connectors": "2" if i % 10 == 0 else "1",
        }
        for i in range(chargers)
    ]
    return rows


def as_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*HEADER, "password"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_300_chargers_with_two_bad_rows_are_all_reported_and_nothing_is_written_until_fixed(tenant) -> None:
    rows = campus_rows()
    rows[40]["max_current_a"] = "thirty-two"  # file row 42
    rows[200]["circuit"] = "Feeder 9"  # file row 202: no such circuit
    parsed = fleet_rows_read(filename="campus.csv", content=as_csv(rows))

    refused = fleet_import(tenant=tenant, rows=parsed, dry_run=False, actor="test")

    assert [(e.row, e.column) for e in refused.errors] == [(42, "max_current_a"), (202, "circuit")]
    assert "'thirty-two' is not a number" in refused.errors[0].message
    assert "Feeder 9" in refused.errors[1].message
    assert not refused.written
    assert not Site.objects.filter(slug="campus").exists()
    assert not ChargingStation.objects.filter(charge_point_id__startswith="CAMPUS-").exists()
    with schema_context("public"):
        assert not ChargePointIdentity.objects.filter(charge_point_id__startswith="CAMPUS-").exists()

    rows[40]["max_current_a"] = "32"
    rows[200]["circuit"] = "Feeder 3"
    fixed = fleet_rows_read(filename="campus.csv", content=as_csv(rows))
    dry = fleet_import(tenant=tenant, rows=fixed, dry_run=True, actor="test")
    assert dry.errors == []
    assert not dry.written
    assert dry.created["charger"] == 300
    assert not Site.objects.filter(slug="campus").exists()

    done = fleet_import(tenant=tenant, rows=fixed, dry_run=False, actor="test")

    assert done.written
    assert done.errors == []
    assert (done.created["site"], done.created["circuit"], done.created["charger"]) == (1, 4, 300)
    assert ChargingStation.objects.filter(site__slug="campus").count() == 300
    assert Connector.objects.filter(station__site__slug="campus").count() == 330
    assert Circuit.objects.get(site__slug="campus", name="Feeder 2").parent.name == "Main"
    assert len(done.passwords) == 300
    with schema_context("public"):
        identity = ChargePointIdentity.objects.get(charge_point_id="CAMPUS-007")
        assert identity.check_password(done.passwords["CAMPUS-007"])
        assert done.passwords["CAMPUS-007"] not in identity.password_hash
    assert AuditEvent.objects.filter(action="import", field="chargers created", new_value="300").exists()


def test_the_same_file_again_changes_nothing(tenant) -> None:
    rows = fleet_rows_read(filename="small.csv", content=as_csv(campus_rows(chargers=5)))
    fleet_import(tenant=tenant, rows=rows, dry_run=False, actor="test")

    again = fleet_import(tenant=tenant, rows=rows, dry_run=False, actor="test")

    assert again.errors == []
    assert sum(again.created.values()) == 0
    assert sum(again.updated.values()) == 0
    assert again.passwords == {}


def test_an_xlsx_file_reads_like_the_csv(tenant) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for row in campus_rows(chargers=3):
        sheet.append([row.get(column, "") for column in HEADER])
    content = io.BytesIO()
    book.save(content)

    rows = fleet_rows_read(filename="campus.XLSX", content=content.getvalue())

    from_csv = fleet_rows_read(filename="campus.csv", content=as_csv(campus_rows(chargers=3)))
    assert rows == [{key: value for key, value in row.items() if key != "password"} for row in from_csv]
    assert load_workbook(io.BytesIO(content.getvalue())).active.max_row == 9


@pytest.mark.parametrize(
    ("filename", "content", "problem"),
    [
        ("fleet.txt", b"kind\n", "expected a .csv or .xlsx"),
        ("fleet.csv", b"site,name\ncampus,x\n", "no 'kind' column"),
        ("fleet.csv", b"", "empty"),
        ("fleet.csv", b"\xff\xfekind", "not UTF-8"),
        ("fleet.csv", b"kind,site\nsite,a\x00b\n", "NUL"),
        ("fleet.xlsx", b"not a zip", "not an XLSX workbook"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_naming_why(filename, content, problem) -> None:
    with pytest.raises(ImportFileError, match=problem):
        fleet_rows_read(filename=filename, content=content)


def test_rows_name_their_problems_by_column(tenant) -> None:
    rows = [
        {"kind": "building", "site": "x"},
        {"kind": "site", "site": "a", "name": "A"},
        {"kind": "charger", "site": "nowhere", "charge_point_id": "CP-X", "max_current_a": "32"},
        {"kind": "site", "site": "b", "name": "B", "limit_a": "63", "phases": "two"},
        {"kind": "site", "site": "c", "name": "C", "limit_a": "63", "phases": "2.5"},
    ]

    result = fleet_import(tenant=tenant, rows=rows, dry_run=True, actor="test")

    assert result.errors[:2] == [
        RowError(2, "kind", "'building' is not one of site, circuit, charger"),
        RowError(3, "limit_a", "required"),
    ]
    assert (result.errors[2].row, result.errors[2].column) == (4, "site")
    assert result.errors[3] == RowError(5, "phases", "'two' is not a whole number")
    assert result.errors[4] == RowError(6, "phases", "'2.5' is not a whole number")


def test_the_command_prints_every_row_error_and_fails_then_imports_with_passwords_once(tenant, tmp_path) -> None:
    rows = campus_rows(chargers=4)
    rows[3]["limit_a"] = "-5"
    path = tmp_path / "fleet.csv"
    path.write_bytes(as_csv(rows))
    err = StringIO()

    with pytest.raises(CommandError, match="2 errors in 9 rows; nothing was written"):
        call_command("import_fleet", str(path), "--tenant", "alpha", stdout=StringIO(), stderr=err)
    assert "row 5, limit_a:" in err.getvalue()  # the circuit, and the charger on it after it
    assert "row 8, circuit:" in err.getvalue()

    rows[3]["limit_a"] = "630"
    path.write_bytes(as_csv(rows))
    out = StringIO()
    call_command("import_fleet", str(path), "--tenant", "alpha", stdout=out)
    assert "chargers: 4 new" in out.getvalue()
    assert out.getvalue().count("CAMPUS-00") == 4


def upload(client, rows: list[dict[str, str]], *, dry_run: bool):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"file": SimpleUploadedFile("campus.csv", as_csv(rows), content_type="text/csv")}
    if dry_run:
        data["dry_run"] = "on"
    return client.post("/import/", data)


def test_the_portal_lists_every_bad_row_then_imports_the_fixed_file_for_an_admin_only(make_user) -> None:
    _, admin = make_user(Role.ADMIN)
    _, manager = make_user(Role.ENERGY_MANAGER)
    rows = campus_rows(chargers=20)
    rows[7]["max_current_a"] = "lots"  # file row 9
    rows[12]["site"] = "elsewhere"  # file row 14

    refused = upload(admin, rows, dry_run=False)

    assert refused.status_code == 400
    page = refused.content.decode()
    assert "2 problems in campus.csv (25 rows): nothing was written" in page
    assert "<td>9</td><td>max_current_a</td>" in page
    assert "<td>14</td><td>site</td>" in page
    assert not Site.objects.filter(slug="campus").exists()
    assert manager.get("/import/").status_code == 403

    rows[7]["max_current_a"] = "32"
    rows[12]["site"] = "campus"
    checked = upload(admin, rows, dry_run=True)
    assert "all 25 rows are valid (dry run, nothing written)" in checked.content.decode()
    assert not Site.objects.filter(slug="campus").exists()

    imported = upload(admin, rows, dry_run=False)

    assert imported.status_code == 200
    assert "Chargers: 20 new, 0 changed" in imported.content.decode()
    assert imported.content.decode().count('<code class="secret">') == 20
    assert ChargingStation.objects.filter(site__slug="campus").count() == 20
