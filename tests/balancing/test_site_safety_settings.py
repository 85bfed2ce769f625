"""The closed loop's site settings (fail-safe sizing, idle default, building allowance, overdraw
escalation): portal limits form with its confirmation step, API PATCH and ``create_site``, audited."""

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from balancing.models import Site
from tenants.accounts.models import AuditEvent, Role, User
from tenants.accounts.tokens import api_token_create
from tests.balancing.conftest import SITE_SETTINGS_FORM
from tests.conftest import ALPHA
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

NEW = {
    "failsafe_auto": None,  # unchecked: left out of the POST
    "idle_default_zero": "on",
    "building_allowance_kw": "3.5",
    "overdraw_escalation": "stop",
    "overdraw_escalation_after_s": "120",
}


@pytest.fixture
def site() -> Site:
    return SiteFactory(slug="mall", name="Mall", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))


def safety_settings(site: Site) -> tuple[object, ...]:
    """The site's fail-safe sizing and overdraw settings, in the form's order."""
    return (
        site.failsafe_auto,
        site.idle_default_zero,
        site.building_allowance_kw,
        site.overdraw_escalation,
        site.overdraw_escalation_after_s,
    )


def post_data(values: dict[str, str | None]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def test_the_limits_form_shows_the_new_settings_with_their_help(make_user, site) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)
    page = manager.get("/sites/mall/settings/").content.decode()
    for text in (
        "Size the fail-safe to the site",
        "Idle connectors wait at 0 A",
        "Building load allowance (kW)",
        "When a charger keeps drawing more than offered",
        "Escalate after (s)",
        "A car that plugs in waits for its first profile",
        "Stop the session (RemoteStop)",
    ):
        assert text in page, text


def test_the_new_settings_are_confirmed_then_saved_and_audited(make_user, site) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)
    values = post_data({**SITE_SETTINGS_FORM, **NEW})

    review = manager.post("/sites/mall/settings/", values).content.decode()

    assert "Please confirm these changes" in review
    assert "Size the fail-safe to the site: on → <strong>off</strong>" in review
    assert "Idle connectors wait at 0 A: off → <strong>on</strong>" in review
    assert "Alert only → <strong>Stop the session (RemoteStop)</strong>" in review
    site.refresh_from_db()
    assert site.failsafe_auto is True  # nothing changed before confirming

    # Confirming posts back the hidden fields of the review page (the unchecked box as "False").
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', review))
    assert hidden["failsafe_auto"] == "False"
    assert hidden["confirm"] == "on"
    done = manager.post("/sites/mall/settings/", hidden)

    assert done.status_code == 302
    site.refresh_from_db()
    assert safety_settings(site) == (False, True, Decimal("3.5"), "stop", 120)
    audited = {
        e.field: (e.old_value, e.new_value)
        for e in AuditEvent.objects.filter(object_type="site", actor="energy_manager.user@alpha.localhost")
    }
    assert audited == {
        "failsafe_auto": ("True", "False"),
        "idle_default_zero": ("False", "True"),
        "building_allowance_kw": ("0.00", "3.5"),
        "overdraw_escalation": ("none", "stop"),
        "overdraw_escalation_after_s": ("300", "120"),
    }


def test_bad_values_in_the_form_are_named_and_change_nothing(make_user, site) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)
    page = manager.post(
        "/sites/mall/settings/",
        {**SITE_SETTINGS_FORM, "building_allowance_kw": "-1", "overdraw_escalation": "explode", "confirm": "on"},
    ).content.decode()

    assert "Ensure this value is greater than or equal to 0" in page
    assert "Select a valid choice. explode is not one of the available choices." in page
    site.refresh_from_db()
    assert site.overdraw_escalation == "none"
    assert not AuditEvent.objects.filter(object_type="site", object_id=str(site.pk)).exists()


def api(role: str) -> Client:
    user = User.objects.create_user(email=f"{role}.api@alpha.localhost", password="correct-horse-battery-9", role=role)
    _, raw = api_token_create(user=user, name="ops")
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_the_api_patch_accepts_the_new_settings_and_audits_only_what_changed(site) -> None:
    client = api(Role.ENERGY_MANAGER)

    response = client.patch(
        "/api/v1/sites/mall/",
        {"idle_default_zero": True, "overdraw_escalation": "unavailable", "overdraw_escalation_after_s": 60},
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["idle_default_zero"], body["overdraw_escalation"], body["overdraw_escalation_after_s"]) == (
        True,
        "unavailable",
        60,
    )
    assert body["failsafe_auto"] is True
    site.refresh_from_db()
    assert site.overdraw_escalation == "unavailable"
    fields = set(AuditEvent.objects.filter(object_type="site", object_id=str(site.pk)).values_list("field", flat=True))
    assert fields == {"idle_default_zero", "overdraw_escalation", "overdraw_escalation_after_s"}


def test_the_api_names_a_bad_escalation_and_a_viewer_may_not_patch(site) -> None:
    bad = api(Role.ENERGY_MANAGER).patch(
        "/api/v1/sites/mall/",
        {"overdraw_escalation": "explode", "building_allowance_kw": "-2"},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert {"overdraw_escalation", "building_allowance_kw"} <= set(bad.json()["error"]["fields"])
    denied = api(Role.SITE_VIEWER).patch(
        "/api/v1/sites/mall/", {"idle_default_zero": True}, content_type="application/json"
    )
    assert denied.status_code == 403
    site.refresh_from_db()
    assert site.idle_default_zero is False


SITE = ["--tenant", "alpha", "--name", "Campus North", "--limit-a", "100"]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_site_takes_the_new_flags_and_is_idempotent() -> None:
    flags = [
        "--no-failsafe-auto",
        "--idle-default-zero",
        "--building-allowance-kw",
        "4.5",
        "--overdraw-escalation",
        "stop",
        "--overdraw-escalation-after-s",
        "90",
    ]
    run("create_site", "north", *SITE, *flags)
    site = Site.objects.get(slug="north")
    assert safety_settings(site) == (False, True, Decimal("4.5"), "stop", 90)
    assert "already up to date" in run("create_site", "north", *SITE, *flags)

    output = run("create_site", "north", *SITE, "--failsafe-auto")

    assert "failsafe_auto: False -> True" in output
    assert "overdraw_escalation: stop -> none" in output
    site.refresh_from_db()
    assert (site.failsafe_auto, site.idle_default_zero, site.overdraw_escalation) == (True, False, "none")


def test_create_site_defaults_match_the_model() -> None:
    run("create_site", "south", *SITE)
    site = Site.objects.get(slug="south")
    assert (site.failsafe_auto, site.idle_default_zero, site.building_allowance_kw, site.overdraw_escalation) == (
        True,
        False,
        Decimal("0"),
        "none",
    )
    assert site.overdraw_escalation_after_s == 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--building-allowance-kw", "-1"], "--building-allowance-kw: Ensure this value is greater than or equal to 0"),
        (["--overdraw-escalation-after-s", "-5"], "--overdraw-escalation-after-s: Ensure this value is greater"),
        (["--overdraw-escalation", "explode"], "argument --overdraw-escalation: invalid choice: 'explode'"),
    ],
)
def test_create_site_names_the_bad_flag(args, message) -> None:
    with pytest.raises(CommandError, match=message):
        run("create_site", "west", *SITE, *args)
    assert not Site.objects.filter(slug="west").exists()
