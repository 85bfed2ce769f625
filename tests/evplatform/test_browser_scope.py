"""Site groups end to end in a real Chromium against the real server: an admin makes a group and
invites a group energy manager, who sets a password from the mailed link and then sees, changes
and reaches (pages, tokens, API) only the group's sites.

The data is committed (the server is another process) and removed afterwards; the server sends
its mail to a real SMTP server of the test.
"""

import json
import re
import urllib.error
import urllib.request

import pytest
from django_tenants.utils import tenant_context
from playwright.sync_api import expect

from balancing.models import BalancingRun, Site, SiteAlert, SiteGroup, SiteMeterReading
from chargepoint.models import ChargingSession, ChargingStation
from tenants.accounts.models import ApiToken, AuditEvent, Role, User
from tests.campus import Campus, campus_build
from tests.conftest import ALPHA, start_web_server, stop_web_server
from tests.evplatform.test_browser import PASSWORD, browser, open_page, shot, sign_in  # noqa: F401 - a fixture

ADMIN = "scope.admin@alpha.localhost"
MANAGER = "engineering.lead@alpha.localhost"
PREFIX = "brw"


@pytest.fixture(scope="module")
def campus(tenant, django_db_blocker):
    """Three committed sites (no group yet), an organisation admin, and a group of the third site
    the manager must never be offered."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        built = campus_build(PREFIX, group=False)
        User.objects.create_user(email=ADMIN, password=PASSWORD, role=Role.ADMIN)
        SiteGroup.objects.create(slug=f"{PREFIX}-library-wing", name="Library wing").sites.add(built.library)
    yield built
    with django_db_blocker.unblock(), tenant_context(tenant):
        SiteGroup.objects.filter(slug__in=["engineering", f"{PREFIX}-library-wing"]).delete()
        User.objects.filter(email__in=[ADMIN, MANAGER]).delete()
        AuditEvent.objects.filter(actor__in=[ADMIN, MANAGER]).delete()
        sites = Site.objects.filter(slug__startswith=f"{PREFIX}-")
        SiteAlert.objects.filter(site__in=sites).delete()
        BalancingRun.objects.filter(site__in=sites).delete()
        SiteMeterReading.objects.filter(site__in=sites).delete()
        ChargingSession.objects.filter(station__site__in=sites).delete()
        ChargingStation.objects.filter(site__in=sites).delete()  # their readings with them (ON DELETE CASCADE)
        for site in sites:
            site.circuits.all().delete()
            site.delete()


def api_get(port: str, path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Host": f"{ALPHA.domain}:{port}", "Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own local server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def mailing_server(smtp_server, django_db_blocker):
    """The web process, sending its mail to ``smtp_server``; yields its port."""
    with django_db_blocker.unblock():
        server, port = start_web_server(env={"EMAIL_URL": smtp_server.url})
    yield port
    stop_web_server(server)


@pytest.mark.django_db
def test_an_admin_makes_a_group_manager_who_then_reaches_only_the_groups_sites(
    browser,  # noqa: F811 - the fixture imported above
    mailing_server,
    smtp_server,
    campus: Campus,
) -> None:
    north, south, library = campus.north, campus.south, campus.library
    port = mailing_server
    admin = open_page(browser, port)
    sign_in(admin, ADMIN)
    admin.get_by_role("link", name="Users").click()

    new_group = admin.locator("form[action='/users/groups/']")
    new_group.get_by_label("Group name").fill("Engineering")
    new_group.get_by_label(north.name).check()
    new_group.get_by_label(south.name).check()
    new_group.get_by_role("button", name="Create group").click()
    expect(admin.get_by_text("Group 'Engineering' created with 2 sites")).to_be_visible()

    invite = admin.locator("form", has=admin.get_by_role("button", name="Add and send a sign-in link"))
    invite.get_by_label("Email").fill(MANAGER)
    invite.get_by_label("Role").select_option(label="— (site grants only)")
    invite.get_by_role("button", name="Add and send a sign-in link").click()
    expect(admin.get_by_text(f"{MANAGER} added")).to_be_visible()

    grant = admin.locator("form[action='/users/grants/']")
    grant.get_by_label("Person").select_option(label=MANAGER)
    grant.get_by_label("Role").select_option(label="Energy manager")
    grant.get_by_label("On", exact=True).select_option(label="Group: Engineering")
    grant.get_by_role("button", name="Grant role").click()
    expect(admin.get_by_text(f"{MANAGER} is energy manager on group Engineering")).to_be_visible()
    shot(admin, "users-site-groups")

    assert User.objects.get(email=MANAGER).role == ""

    # The invitation's mail holds the link where the new manager chooses a password.
    (invitation,) = [m for m in smtp_server.messages if m["To"] == MANAGER]
    body = invitation.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"https?://[^/\s]+(/accounts/reset/\S+)", body)
    assert link is not None, body
    page = open_page(browser, port)
    page.goto(link.group(1))
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("Again").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    sign_in(page, MANAGER)
    expect(page.get_by_role("link", name=north.name)).to_be_visible()
    expect(page.get_by_role("link", name=south.name)).to_be_visible()
    expect(page.get_by_role("link", name=library.name)).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    shot(page, "overview-group-manager")

    page.get_by_role("link", name=north.name).click()
    page.get_by_role("link", name="Change limits").click()
    page.get_by_label("Demand cap (kW)").fill("14")
    page.get_by_role("button", name="Review changes").click()
    page.get_by_role("button", name="Confirm and apply").click()
    expect(page.get_by_text("Limits saved")).to_be_visible()

    response = page.goto(f"/sites/{library.slug}/")
    assert response is not None
    assert response.status == 404
    response = page.goto(f"/sites/{library.slug}/settings/")
    assert response is not None
    assert response.status == 404

    page.goto("/tokens/")
    offered = page.locator("input[name=site_groups]")
    expect(offered).to_have_count(1)
    expect(page.get_by_label("Engineering")).to_be_visible()
    expect(page.get_by_label("Library wing")).to_have_count(0)
    page.get_by_label("What is it for?").fill("BMS")
    page.get_by_label("Engineering").check()
    page.get_by_role("button", name="Create token").click()
    raw = page.locator("code.secret").inner_text()
    expect(page.get_by_role("cell", name="Engineering", exact=True)).to_be_visible()
    shot(page, "tokens-group-manager")

    assert api_get(port, f"/api/v1/sites/{north.slug}/", raw)[0] == 200
    assert api_get(port, f"/api/v1/sites/{library.slug}/", raw)[0] == 404
    assert api_get(port, f"/api/v1/circuits/{campus.circuits['library'].pk}/", raw)[0] == 404
    assert api_get(port, f"/api/v1/circuits/?site={library.slug}", raw)[1]["results"] == []
    assert api_get(port, f"/api/v1/chargers/{campus.stations['library'].charge_point_id}/", raw)[0] == 404
    assert api_get(port, f"/api/v1/chargers/{campus.stations['north'].charge_point_id}/", raw)[0] == 200

    north.refresh_from_db()
    library.refresh_from_db()
    token = ApiToken.objects.get(user__email=MANAGER)
    assert (north.demand_cap_kw, library.demand_cap_kw) == (14, 20)
    assert list(token.site_groups.values_list("name", flat=True)) == ["Engineering"]
