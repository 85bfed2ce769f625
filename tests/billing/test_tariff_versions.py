"""Tariff versions per site: validity dates, and a bad record that writes nothing."""

from datetime import date

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from billing.models import Tariff
from billing.selectors import tariff_in_force
from billing.tariff_versions import tariff_import, tariff_version_import
from tests.billing.conftest import FIXTURES, b19_record, simple_record
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


def test_a_new_version_closes_the_one_before_and_each_date_finds_its_own() -> None:
    site = SiteFactory(slug="campus")
    first = tariff_import(site=site, record=simple_record(), valid_from=date(2026, 1, 1))
    second = tariff_import(site=site, record=b19_record(), valid_from=date(2026, 6, 1))

    first.refresh_from_db()
    assert (first.version, first.valid_until) == (1, date(2026, 6, 1))
    assert (second.version, second.valid_until) == (2, None)
    assert tariff_in_force(site=site, on=date(2026, 5, 31)) == first
    assert tariff_in_force(site=site, on=date(2026, 6, 1)) == second
    assert tariff_in_force(site=site, on=date(2025, 12, 31)) is None
    assert second.utility == "Pacific Gas & Electric Co"
    assert len(second.record_sha256) == 64


def test_a_version_that_does_not_start_after_the_last_is_refused() -> None:
    site = SiteFactory(slug="campus")
    tariff_import(site=site, record=simple_record(), valid_from=date(2026, 6, 1))
    with pytest.raises(ValidationError) as raised:
        tariff_import(site=site, record=b19_record(), valid_from=date(2026, 6, 1))
    assert "valid_from" in raised.value.message_dict
    assert Tariff.objects.count() == 1


def test_the_same_record_from_the_same_day_again_is_the_same_version() -> None:
    site = SiteFactory(slug="campus")
    first = tariff_version_import(site=site, record=simple_record(), valid_from=date(2026, 6, 1), actor="a@x.test")
    again = tariff_version_import(site=site, record=simple_record(), valid_from=date(2026, 6, 1), actor="a@x.test")

    assert first.created
    assert not again.created
    assert again.obj.pk == first.obj.pk
    assert Tariff.objects.filter(site=site).count() == 1


def test_a_record_missing_a_field_names_it_and_writes_nothing() -> None:
    site = SiteFactory(slug="campus")
    record = simple_record()
    del record["flatdemandmonths"]

    with pytest.raises(ValidationError) as raised:
        tariff_import(site=site, record=record, valid_from=date(2026, 1, 1))

    assert raised.value.message_dict == {"flatdemandmonths": ["missing or not 12 period indices"]}
    assert not Tariff.objects.exists()


def test_the_import_command_names_the_bad_field_and_writes_nothing(tmp_path) -> None:
    SiteFactory(slug="campus")
    record = b19_record()
    del record["demandratestructure"][1][0]["rate"]
    path = tmp_path / "bad.json"
    import json

    path.write_text(json.dumps(record))

    with pytest.raises(CommandError, match=r"demandratestructure\[1\]\[0\]\.rate: missing"):
        call_command(
            "import_tariff", "--tenant", "alpha", "--site", "campus", "--file", path, "--valid-from", "2026-01-01"
        )
    assert not Tariff.objects.exists()

    call_command(
        "import_tariff",
        "--tenant",
        "alpha",
        "--site",
        "campus",
        "--file",
        FIXTURES / "pge_b19_secondary.json",
        "--valid-from",
        "2026-01-01",
    )
    assert Tariff.objects.get().name.startswith("B-19")
