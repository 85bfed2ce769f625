"""Every page and API endpoint keeps to the sites a person reaches: a site outside it is a 404.

The URL maps themselves are walked (portal and API), so an endpoint added later is checked too:
any URL naming a site, a charger or a row of a site answers 404 to someone whose roles are on
another site group, and every list leaves that site's rows out.
"""

import json
import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver
from django.utils import timezone

from balancing.models import LimitOverride, SiteGrant, SiteGroup, SiteLimitSchedule
from billing.tariff_versions import tariff_version_import
from evplatform import urls_api, urls_portal
from tenants.accounts.models import ApiToken, AuditEvent, Role, User
from tenants.accounts.tokens import api_token_create
from tests.billing.conftest import simple_record
from tests.campus import Campus, campus_build, group_user
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db

# Pages for a role on the whole organisation: refused (403) to a person with roles on a group only.
ORGANISATION_PAGES = {
    "import",
    "report-download",
    "report-regenerate",
    "users",
    "user-change",
    "grant-create",
    "grant-delete",
    "group-create",
    "group-change",
    "group-delete",
    "audit",
    "webhooks",
    "webhook-act",
    "webhook-deliveries",
}
# API endpoints a group's person may not reach: a report by id (of the whole organisation or
# absent) and regenerating one (it stores and mails an organisation-wide version).
ORGANISATION_ENDPOINTS = {"report-detail", "report-download", "report-regenerate", "import-fleet"}
# Lists narrowed to the person's sites whose rows may be empty in this data (reports, exports):
# a 200 without the library, but not necessarily with the group's own sites.
NARROWED = {"reports", "report-list", "sessions-export"}
# Downloads that need the period they cover.
QUERIES = {"sessions-export": "?month=2026-10&file_format=csv"}


@pytest.fixture
def campus() -> Campus:
    return campus_build()


@pytest.fixture
def manager(campus) -> User:
    return group_user(campus, "engineering.manager@alpha.localhost")


@pytest.fixture
def manager_client(manager) -> Client:
    client = Client(HTTP_HOST=ALPHA.domain)
    client.force_login(manager)
    return client


def _token_client(user: User, **options) -> Client:
    _, raw = api_token_create(user=user, name="integration", **options)
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.fixture
def manager_api(manager, campus) -> Client:
    return _token_client(manager, site_groups=[campus.group])


def _patterns(patterns, prefix: str = "") -> list[tuple[str, str, str]]:
    """(name, route regex, prefix) of every URL pattern, without DRF's format-suffix twins."""
    found = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found.extend(_patterns(entry.url_patterns, prefix + str(entry.pattern)))
        elif isinstance(entry, URLPattern) and "format" not in entry.pattern.regex.groupindex:
            found.append((entry.name or "", entry.pattern.regex.pattern, prefix))
    return found


PORTAL = _patterns(urls_portal.urlpatterns)
API = [p for p in _patterns(urls_api.urlpatterns) if p[0] != "api-root"]


def _library_kwargs(campus: Campus, name: str, regex: str, outsider: dict[str, int]) -> dict[str, str]:
    """Values for a URL's parameters that name the library (outside the group) or its rows."""
    library = "library"
    pks = {
        "schedule-delete": campus.schedules[library].pk,
        "schedule-detail": campus.schedules[library].pk,
        "circuit-detail": campus.circuits[library].pk,
        "run-detail": campus.runs[library].pk,
        "session-detail": campus.sessions[library].pk,
        **outsider,
    }
    values = {}
    for group in re.compile(regex).groupindex:
        if group == "slug":
            values[group] = campus.library.slug
        elif group == "charge_point_id":
            values[group] = campus.stations[library].charge_point_id
        elif group == "file_format":
            values[group] = "pdf"
        elif group == "pk":
            assert name in pks, f"{name}: say which row of an out-of-reach site (or organisation) this URL names"
            values[group] = str(pks[name])
        else:
            pytest.fail(f"{name}: unknown URL parameter {group!r}: teach this test what it names")
    return values


def _fill(regex: str, values: dict[str, str]) -> str:
    path = regex.lstrip("^").rstrip("$").replace(r"\Z", "")
    for name, value in values.items():
        path = re.sub(rf"\(\?P<{name}>[^)]*\)", value, path)
    return path.replace("\\.", ".")


@pytest.fixture
def overrides_and_tariffs(campus) -> dict[str, int]:
    """A limit override and a tariff at north (the lists show the group's own rows) and at the
    library; returns the library's by the URL names that take their pk."""
    now = timezone.now()
    library = {}
    for site in (campus.north, campus.library):
        override = LimitOverride.objects.create(
            site=site,
            reason=f"works at {site.slug}",
            limit_kw=Decimal("10"),
            starts_at=now,
            ends_at=now + timedelta(hours=2),
            created_by="facilities@alpha.localhost",
        )
        tariff = tariff_version_import(site=site, record=simple_record(), valid_from=date(2026, 1, 1), actor="test").obj
        library = {"override-detail": override.pk, "tariff-detail": tariff.pk}
    return library


@pytest.fixture
def outsider(campus, overrides_and_tariffs) -> dict[str, int]:
    """Rows of the organisation a group's person may not touch, by the URL names that take their pk."""
    admin = User.objects.create_user(email="someone.admin@alpha.localhost", password="x-long-pass-9", role=Role.ADMIN)
    token, _ = api_token_create(user=admin, name="admin's")
    other = SiteGroup.objects.create(slug="scope-library-group", name="Library group")
    other.sites.add(campus.library)
    grant = SiteGrant.objects.create(user=admin, role=Role.SITE_VIEWER, site=campus.library)
    from balancing.notifications.services import webhook_endpoint_create

    endpoint, _ = webhook_endpoint_create(
        name="library hook",
        url="http://127.0.0.1:9/hook",
        kinds=[],
        send_cleared=False,
        group_ids=[other.pk],
        actor="test",
    )
    return {
        "webhook-act": endpoint.pk,
        "user-change": admin.pk,
        "token-revoke": token.pk,
        "grant-delete": grant.pk,
        "group-change": other.pk,
        "group-delete": other.pk,
        "report-download": 1,
        "report-detail": 1,
        **overrides_and_tariffs,
    }


def _markers(campus: Campus) -> tuple[str, ...]:
    return (campus.library.slug, campus.library.name, campus.stations["library"].charge_point_id)


@pytest.mark.parametrize(("name", "regex", "prefix"), PORTAL, ids=[p[0] for p in PORTAL])
def test_every_portal_page_hides_a_site_outside_the_persons_group(
    manager_client, campus, outsider, name, regex, prefix
) -> None:
    path = "/" + _fill(regex, _library_kwargs(campus, name, regex, outsider)) + QUERIES.get(name, "")
    response = manager_client.get(path)
    if response.status_code == 405:
        response = manager_client.post(path)

    body = response.content.decode(errors="replace")
    if name in ORGANISATION_PAGES:
        assert response.status_code in (403, 404), f"{path}: {response.status_code}"
    elif re.compile(regex).groupindex:
        assert response.status_code == 404, f"{path}: {response.status_code}"
    else:
        assert response.status_code == 200, f"{path}: {response.status_code}"
    assert not any(marker in body for marker in _markers(campus)), f"{path} shows the library"


@pytest.mark.parametrize(("name", "regex", "prefix"), API, ids=[p[0] for p in API])
def test_every_api_endpoint_hides_a_site_outside_the_tokens_group(
    manager_api, campus, outsider, name, regex, prefix
) -> None:
    params = re.compile(regex).groupindex
    path = "/api/v1/" + _fill(regex, _library_kwargs(campus, name, regex, outsider)) + QUERIES.get(name, "")
    response = manager_api.get(path)
    if response.status_code == 405:
        response = manager_api.post(path, data="{}", content_type="application/json")

    body = response.content.decode(errors="replace")
    if name in ORGANISATION_ENDPOINTS:
        assert response.status_code in (403, 404, 405), f"{path}: {response.status_code}"
    elif params:
        assert response.status_code == 404, f"{path}: {response.status_code} {body[:200]}"
    elif name in NARROWED:
        assert response.status_code == 200, f"{path}: {response.status_code} {body[:200]}"
    else:
        assert response.status_code == 200, f"{path}: {response.status_code} {body[:200]}"
        # The group's own rows are there: the list is not simply empty.
        assert campus.north.slug in body or campus.stations["north"].charge_point_id in body, path
    assert not any(marker in body for marker in _markers(campus)), f"{path} shows the library"


@pytest.mark.parametrize("endpoint", ["chargers", "circuits", "schedules", "runs", "sessions"])
def test_filtering_a_list_by_a_site_outside_reach_finds_nothing(manager_api, campus, endpoint) -> None:
    response = manager_api.get(f"/api/v1/{endpoint}/", {"site": campus.library.slug})

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_readings_of_a_charger_outside_reach_are_an_empty_page(manager_api, campus) -> None:
    library_cp = campus.stations["library"].charge_point_id
    response = manager_api.get("/api/v1/readings/", {"charger": library_cp})
    own = manager_api.get("/api/v1/readings/", {"charger": campus.stations["north"].charge_point_id})

    assert response.status_code == 200
    assert response.json()["results"] == []
    assert len(own.json()["results"]) == 1


def test_a_group_manager_changes_its_sites_over_the_api_but_not_the_others(manager_api, campus) -> None:
    changed = manager_api.patch(
        f"/api/v1/sites/{campus.north.slug}/",
        data=json.dumps({"demand_cap_kw": "15.00"}),
        content_type="application/json",
    )
    hidden = manager_api.patch(
        f"/api/v1/sites/{campus.library.slug}/",
        data=json.dumps({"demand_cap_kw": "15.00"}),
        content_type="application/json",
    )
    body = {"site": campus.library.slug, "name": "Night", "weekdays": "56", "start_time": "22:00", "end_time": "06:00"}
    schedule_elsewhere = manager_api.post(
        "/api/v1/schedules/", data=json.dumps({**body, "limit_kw": "5.00"}), content_type="application/json"
    )
    schedule_own = manager_api.post(
        "/api/v1/schedules/",
        data=json.dumps({**body, "site": campus.south.slug, "limit_kw": "5.00"}),
        content_type="application/json",
    )

    assert changed.status_code == 200, changed.content
    assert changed.json()["demand_cap_kw"] == "15.00"
    assert hidden.status_code == 404
    assert schedule_elsewhere.status_code == 400
    assert "site" in schedule_elsewhere.json()["error"]["fields"]
    assert schedule_own.status_code == 201, schedule_own.content
    campus.library.refresh_from_db()
    assert campus.library.demand_cap_kw == 20
    assert not SiteLimitSchedule.objects.filter(site=campus.library, name="Night").exists()


def test_a_group_viewer_reads_its_sites_and_may_change_none_of_them(campus) -> None:
    viewer = group_user(campus, "engineering.viewer@alpha.localhost", Role.SITE_VIEWER)
    api = _token_client(viewer, site_groups=[campus.group])
    portal = Client(HTTP_HOST=ALPHA.domain)
    portal.force_login(viewer)

    assert api.get(f"/api/v1/sites/{campus.north.slug}/").status_code == 200
    patch = api.patch(
        f"/api/v1/sites/{campus.north.slug}/",
        data=json.dumps({"demand_cap_kw": "1.00"}),
        content_type="application/json",
    )
    assert patch.status_code == 403
    assert portal.get(f"/sites/{campus.north.slug}/").status_code == 200
    assert portal.get(f"/sites/{campus.north.slug}/settings/").status_code == 403
    assert portal.get(f"/sites/{campus.library.slug}/settings/").status_code == 404
    assert (
        portal.post(f"/chargers/{campus.stations['north'].charge_point_id}/act/", {"action": "reset"}).status_code
        == 403
    )
    assert "Change limits" not in portal.get(f"/sites/{campus.north.slug}/").content.decode()


def test_a_site_grant_adds_one_site_and_its_role_holds_there_only(campus) -> None:
    person = group_user(campus, "mixed@alpha.localhost", Role.SITE_VIEWER)
    SiteGrant.objects.create(user=person, role=Role.ENERGY_MANAGER, site=campus.north)
    portal = Client(HTTP_HOST=ALPHA.domain)
    portal.force_login(person)

    assert portal.get(f"/sites/{campus.north.slug}/settings/").status_code == 200
    assert portal.get(f"/sites/{campus.south.slug}/settings/").status_code == 403
    assert portal.get(f"/sites/{campus.library.slug}/").status_code == 404


def test_the_overview_lists_only_the_groups_sites_and_their_alerts(manager_client, campus) -> None:
    page = manager_client.get("/").content.decode()

    assert campus.north.name in page
    assert campus.south.name in page
    assert f"{campus.stations['north'].charge_point_id}: Draws more than offered" in page
    assert campus.library.name not in page
    assert campus.stations["library"].charge_point_id not in page
    assert 'href="/users/"' not in page
    assert 'href="/import/"' not in page
    assert 'href="/audit/"' not in page
    assert "— (site grants only)" in page


def test_a_group_manager_changes_the_limits_of_its_site_in_the_portal(manager_client, campus) -> None:
    form = {
        "limit_a": "63",
        "demand_cap_kw": "12",
        "failsafe_a": "6",
        "failsafe_auto": "on",
        "building_allowance_kw": "0",
        "overdraw_escalation": "none",
        "overdraw_escalation_after_s": "300",
        "confirm": "on",
    }

    own = manager_client.post(f"/sites/{campus.north.slug}/settings/", form)
    other = manager_client.post(f"/sites/{campus.library.slug}/settings/", form)

    assert own.status_code == 302
    assert other.status_code == 404
    campus.north.refresh_from_db()
    campus.library.refresh_from_db()
    assert (campus.north.demand_cap_kw, campus.library.demand_cap_kw) == (12, 20)
    event = AuditEvent.objects.get(object_type="site", object_id=str(campus.north.pk), field="demand_cap_kw")
    assert event.actor == "engineering.manager@alpha.localhost"


def test_an_organisation_token_limited_to_a_group_reaches_only_its_sites(campus) -> None:
    admin = User.objects.create_user(email="org.admin@alpha.localhost", password="x-long-pass-9", role=Role.ADMIN)
    limited = _token_client(admin, site_groups=[campus.group])
    whole = _token_client(admin)

    slugs = {row["slug"] for row in limited.get("/api/v1/sites/").json()["results"]}
    assert {campus.north.slug, campus.south.slug} <= slugs
    assert campus.library.slug not in slugs
    assert limited.get(f"/api/v1/chargers/{campus.stations['library'].charge_point_id}/").status_code == 404
    assert whole.get(f"/api/v1/chargers/{campus.stations['library'].charge_point_id}/").status_code == 200
    # A group's token is not the organisation: it reads reports narrowed to its sites, and may not
    # regenerate one (that stores and mails a version for the whole organisation).
    assert limited.get("/api/v1/reports/").status_code == 200
    regenerate = limited.post(
        "/api/v1/reports/regenerate/", data='{"month": "2026-10"}', content_type="application/json"
    )
    assert regenerate.status_code == 403


def test_a_read_only_group_token_reads_its_sites_and_writes_nothing(manager, campus) -> None:
    api = _token_client(manager, site_groups=[campus.group], scope=ApiToken.Scope.READ)

    assert api.get(f"/api/v1/sites/{campus.north.slug}/").status_code == 200
    patch = api.patch(
        f"/api/v1/sites/{campus.north.slug}/",
        data=json.dumps({"demand_cap_kw": "1.00"}),
        content_type="application/json",
    )
    assert patch.status_code == 403
    assert api.get(f"/api/v1/sites/{campus.library.slug}/").status_code == 404


def test_a_group_managers_meter_token_posts_readings_for_its_sites_only(manager, campus) -> None:
    api = _token_client(manager, site_groups=[campus.group], scope=ApiToken.Scope.METER_WRITE)
    reading = {"measured_at": timezone.now().isoformat(), "current_a": [10, 11, 12]}

    own = api.post(
        f"/api/v1/sites/{campus.north.slug}/meter-readings/", data=json.dumps(reading), content_type="application/json"
    )
    other = api.post(
        f"/api/v1/sites/{campus.library.slug}/meter-readings/",
        data=json.dumps(reading),
        content_type="application/json",
    )

    assert own.status_code == 201, own.content
    assert other.status_code == 404
