"""Site groups and grants: an organisation admin manages them on the users page and in the admin,
every change is audited, and a person's tokens stay within the groups it reaches."""

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from balancing.access import access_for_user
from balancing.groups import groups_within, site_group_delete
from balancing.models import SiteGrant, SiteGroup
from tenants.accounts.models import ApiToken, AuditEvent, Role, User
from tenants.accounts.tokens import api_token_create
from tests.campus import Campus, campus_build, group_user
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db
ADMIN = "groups.admin@alpha.localhost"


@pytest.fixture
def campus() -> Campus:
    return campus_build("grp")


@pytest.fixture
def admin_client() -> Client:
    admin = User.objects.create_user(email=ADMIN, password="x-long-pass-9", role=Role.ADMIN, is_staff=True)
    admin.is_superuser = True
    admin.save()
    client = Client(HTTP_HOST=ALPHA.domain)
    client.force_login(admin)
    return client


def test_an_admin_creates_renames_regroups_and_removes_a_group_on_the_users_page(admin_client, campus) -> None:
    created = admin_client.post(
        "/users/groups/", {"name": "Science", "sites": [campus.north.pk, campus.library.pk]}, follow=True
    )
    group = SiteGroup.objects.get(slug="science")
    assert "Group &#x27;Science&#x27; created with 2 sites" in created.content.decode()
    assert set(group.sites.all()) == {campus.north, campus.library}

    admin_client.post(f"/users/groups/{group.pk}/", {"name": "Sciences", "sites": [campus.library.pk]})
    group.refresh_from_db()
    assert group.name == "Sciences"
    assert list(group.sites.all()) == [campus.library]

    admin_client.post(f"/users/groups/{group.pk}/delete/")
    assert not SiteGroup.objects.filter(pk=group.pk).exists()
    trail = list(
        AuditEvent.objects.filter(object_type="site_group", object_id=str(group.pk))
        .order_by("at", "pk")
        .values_list("action", "field", "old_value", "new_value")
    )
    assert ("create", "sites", "", f"{campus.library.slug}, {campus.north.slug}") in trail
    assert ("update", "name", "Science", "Sciences") in trail
    assert ("update", "sites", f"{campus.library.slug}, {campus.north.slug}", campus.library.slug) in trail
    assert ("delete", "name", "Sciences", "") in trail
    assert all(
        actor == ADMIN for actor in AuditEvent.objects.filter(object_type="site_group").values_list("actor", flat=True)
    )


def test_an_admin_grants_and_removes_roles_on_a_group_a_site_and_the_organisation(admin_client, campus) -> None:
    person = User.objects.create_user(email="new.person@alpha.localhost", password="x-long-pass-9", role="")

    admin_client.post(
        "/users/grants/", {"user": person.pk, "role": Role.ENERGY_MANAGER, "target": f"group:{campus.group.pk}"}
    )
    admin_client.post(
        "/users/grants/", {"user": person.pk, "role": Role.SITE_VIEWER, "target": f"site:{campus.library.pk}"}
    )
    access = access_for_user(person)
    assert access.can([Role.ENERGY_MANAGER], campus.north.pk)
    assert access.can([Role.SITE_VIEWER], campus.library.pk, write=False)
    assert not access.can([Role.ENERGY_MANAGER], campus.library.pk)

    page = admin_client.get("/users/").content.decode()
    assert "— (site grants only)" in page
    assert "Energy manager on group <strong>Engineering</strong>" in page
    assert f"Site viewer on site <strong>{campus.library.name}</strong>" in page

    admin_client.post("/users/grants/", {"user": person.pk, "role": Role.FINANCE, "target": "organisation"})
    person.refresh_from_db()
    assert person.role == Role.FINANCE
    library_grant = SiteGrant.objects.get(user=person, site=campus.library)
    admin_client.post(f"/users/grants/{library_grant.pk}/delete/")
    assert list(SiteGrant.objects.filter(user=person).values_list("role", flat=True)) == [Role.ENERGY_MANAGER]
    trail = set(AuditEvent.objects.filter(object_type="site_grant").values_list("action", "object_id"))
    assert ("create", str(library_grant.pk)) in trail
    assert ("delete", str(library_grant.pk)) in trail
    assert AuditEvent.objects.filter(object_type="user", field="role", new_value=Role.FINANCE).exists()


def test_a_grant_twice_is_refused_naming_why_and_nothing_is_written(admin_client, campus) -> None:
    person = group_user(campus, "twice@alpha.localhost")

    page = admin_client.post(
        "/users/grants/",
        {"user": person.pk, "role": Role.ENERGY_MANAGER, "target": f"group:{campus.group.pk}"},
        follow=True,
    ).content.decode()

    assert "Role not granted: target: this person already holds that role there" in page
    assert SiteGrant.objects.filter(user=person).count() == 1


def test_only_an_organisation_admin_manages_groups_and_grants(campus) -> None:
    manager = group_user(campus, "no.admin@alpha.localhost")
    SiteGrant.objects.create(user=manager, role=Role.ADMIN, group=campus.group)
    client = Client(HTTP_HOST=ALPHA.domain)
    client.force_login(manager)

    assert client.get("/users/").status_code == 403
    assert client.post("/users/groups/", {"name": "Mine", "sites": [campus.library.pk]}).status_code == 403
    refused = client.post("/users/grants/", {"user": manager.pk, "role": Role.ADMIN, "target": "organisation"})
    assert refused.status_code == 403
    assert client.post(f"/users/groups/{campus.group.pk}/delete/").status_code == 403
    assert SiteGroup.objects.filter(pk=campus.group.pk).exists()
    manager.refresh_from_db()
    assert manager.role == ""


def test_a_person_invited_without_an_organisation_role_reaches_nothing_until_granted(admin_client, campus) -> None:
    admin_client.post("/users/", {"email": "later@alpha.localhost", "full_name": "Later", "role": ""})
    person = User.objects.get(email="later@alpha.localhost")
    client = Client(HTTP_HOST=ALPHA.domain)
    client.force_login(person)

    assert person.role == ""
    assert campus.north.name not in client.get("/").content.decode()
    assert client.get(f"/sites/{campus.north.slug}/").status_code == 404


def test_the_django_admin_adds_a_group_with_sites_and_a_grant_both_audited(admin_client, campus) -> None:
    added = admin_client.post(
        "/admin/balancing/sitegroup/add/", {"name": "Admin group", "slug": "admin-group", "sites": [campus.south.pk]}
    )
    assert added.status_code == 302, added.content.decode()[:3000]
    group = SiteGroup.objects.get(slug="admin-group")
    assert list(group.sites.all()) == [campus.south]

    changed = admin_client.post(
        f"/admin/balancing/sitegroup/{group.pk}/change/",
        {"name": "Admin group", "sites": [campus.south.pk, campus.north.pk]},
    )
    assert changed.status_code == 302, changed.content.decode()[:3000]
    assert set(group.sites.all()) == {campus.south, campus.north}

    person = User.objects.create_user(email="admin.granted@alpha.localhost", password="x-long-pass-9", role="")
    granted = admin_client.post(
        "/admin/balancing/sitegrant/add/", {"user": person.pk, "role": Role.FINANCE, "group": group.pk, "site": ""}
    )
    assert granted.status_code == 302, granted.content.decode()[:3000]
    grant = SiteGrant.objects.get(user=person)
    both = admin_client.post(
        "/admin/balancing/sitegrant/add/",
        {"user": person.pk, "role": Role.SITE_VIEWER, "group": group.pk, "site": campus.library.pk},
    )
    assert both.status_code == 200  # the form refuses a grant on a group and a site at once
    assert SiteGrant.objects.filter(user=person).count() == 1

    admin_client.post(f"/admin/balancing/sitegrant/{grant.pk}/delete/", {"post": "yes"})
    assert not SiteGrant.objects.filter(pk=grant.pk).exists()
    events = set(AuditEvent.objects.filter(actor=ADMIN).values_list("object_type", "action", "field"))
    assert {("site_group", "create", "sites"), ("site_group", "update", "sites")} <= events
    assert {("site_grant", "create", "role"), ("site_grant", "delete", "role")} <= events


def test_a_scoped_persons_token_must_be_limited_to_groups_within_its_reach(campus) -> None:
    manager = group_user(campus, "token.manager@alpha.localhost")
    elsewhere = SiteGroup.objects.create(slug="grp-elsewhere", name="Elsewhere")
    elsewhere.sites.add(campus.north, campus.library)

    with pytest.raises(ValidationError) as unlimited:
        api_token_create(user=manager, name="any")
    with pytest.raises(ValidationError) as outside:
        api_token_create(user=manager, name="wide", site_groups=[elsewhere])
    token, _ = api_token_create(user=manager, name="ok", site_groups=[campus.group])

    assert "site_groups" in unlimited.value.message_dict
    assert "Elsewhere" in outside.value.message_dict["site_groups"][0]
    assert list(token.site_groups.all()) == [campus.group]
    assert list(groups_within(access_for_user(manager))) == [campus.group]
    assert ApiToken.objects.filter(user=manager).count() == 1


def test_the_tokens_page_offers_a_group_manager_only_its_group_and_lists_it(campus) -> None:
    manager = group_user(campus, "page.manager@alpha.localhost")
    SiteGroup.objects.create(slug="grp-other", name="Other campus").sites.add(campus.library)
    client = Client(HTTP_HOST=ALPHA.domain)
    client.force_login(manager)

    page = client.get("/tokens/").content.decode()
    refused = client.post("/tokens/", {"name": "none", "expires_in_days": "30", "scope": "full"}).content.decode()
    made = client.post(
        "/tokens/", {"name": "BMS", "expires_in_days": "180", "scope": "full", "site_groups": [campus.group.pk]}
    ).content.decode()

    assert "Engineering" in page
    assert "Other campus" not in page
    assert "This field is required" in refused
    assert "Your new token" in made
    token = ApiToken.objects.get(user=manager)
    assert list(token.site_groups.all()) == [campus.group]
    assert "<td>Engineering</td>" in made.replace("\n", "")


def test_removing_a_group_revokes_tokens_limited_to_it_alone(campus) -> None:
    admin = User.objects.create_user(email="rm.admin@alpha.localhost", password="x-long-pass-9", role=Role.ADMIN)
    token, _ = api_token_create(user=admin, name="engineering only", site_groups=[campus.group])
    broad, _ = api_token_create(user=admin, name="everything")

    site_group_delete(group=campus.group, actor=ADMIN)

    token.refresh_from_db()
    broad.refresh_from_db()
    assert token.revoked_at is not None
    assert broad.revoked_at is None
