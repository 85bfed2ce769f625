"""Who reaches which site: a role on the organisation, a site group or one site, narrowed by tokens."""

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.http import Http404
from django.test import RequestFactory

from balancing.access import access_for_user, access_of, site_for, users_with_role
from balancing.models import SiteGrant
from tenants.accounts.models import ApiToken, Role
from tenants.accounts.tokens import api_token_create
from tests.balancing.conftest import person

pytestmark = pytest.mark.django_db


def test_an_organisation_role_reaches_every_site(campus) -> None:
    _, north, _, library = campus
    access = access_for_user(person("admin@x.test", Role.ADMIN))

    assert access.site_ids() is None
    assert access.can([Role.ADMIN], library.pk)
    assert access.has_org_role([Role.ADMIN])
    assert set(access.sites().values_list("pk", flat=True)) >= {north.pk, library.pk}


def test_a_group_grant_reaches_the_group_sites_only_and_a_site_grant_adds_one_site(campus) -> None:
    group, north, south, library = campus
    manager = person("manager@x.test")
    SiteGrant.objects.create(user=manager, role=Role.ENERGY_MANAGER, group=group)
    SiteGrant.objects.create(user=manager, role=Role.SITE_VIEWER, site=library)

    access = access_for_user(manager)

    assert access.site_ids() == {north.pk, south.pk, library.pk}
    assert access.can([Role.ENERGY_MANAGER], north.pk)
    assert not access.can([Role.ENERGY_MANAGER], library.pk)
    assert access.can([Role.SITE_VIEWER], library.pk)
    assert access.can_anywhere([Role.ENERGY_MANAGER])
    assert not access.has_org_role([Role.ENERGY_MANAGER, Role.ADMIN])


def test_a_person_with_no_role_and_no_grant_reaches_nothing(campus) -> None:
    access = access_for_user(person("nobody@x.test"))

    assert access.site_ids() == set()
    assert not access.sites().exists()
    assert not access.can_anywhere(Role.values)


def test_a_site_outside_reach_is_absent_and_a_missing_role_is_forbidden(campus) -> None:
    group, north, _, library = campus
    viewer = person("viewer@x.test")
    SiteGrant.objects.create(user=viewer, role=Role.SITE_VIEWER, group=group)
    request = RequestFactory().get("/")
    request.user = viewer

    assert site_for(request, "north") == north
    with pytest.raises(Http404):
        site_for(request, library.slug)
    with pytest.raises(PermissionDenied):
        site_for(request, "north", [Role.ENERGY_MANAGER])


def test_a_group_token_narrows_an_admin_and_a_read_token_never_writes(campus) -> None:
    group, north, _, library = campus
    admin = person("admin2@x.test", Role.ADMIN)
    token, _ = api_token_create(user=admin, name="BMS", scope=ApiToken.Scope.READ)
    group.api_tokens.add(token)
    request = RequestFactory().get("/")
    request.user, request.auth = admin, token

    access = access_of(request)

    assert access.sees(north.pk)
    assert not access.sees(library.pk)
    assert access.can([Role.ADMIN], north.pk, write=False)
    assert not access.can([Role.ADMIN], north.pk)
    assert not access.has_org_role([Role.ADMIN])


def test_people_to_notify_are_found_through_organisation_group_and_site_roles(campus) -> None:
    group, north, _, library = campus
    org_finance = person("cfo@x.test", Role.FINANCE)
    group_finance = person("eng-finance@x.test")
    SiteGrant.objects.create(user=group_finance, role=Role.FINANCE, group=group)
    site_finance = person("lib-finance@x.test")
    SiteGrant.objects.create(user=site_finance, role=Role.FINANCE, site=library)
    person("viewer2@x.test", Role.SITE_VIEWER)

    assert list(users_with_role([north.pk], [Role.FINANCE])) == [org_finance, group_finance]
    assert list(users_with_role([library.pk], [Role.FINANCE])) == [org_finance, site_finance]


def test_a_grant_names_a_group_or_a_site_never_both_nor_neither(campus) -> None:
    group, north, _, _ = campus
    user = person("both@x.test")

    for fields in ({"group": group, "site": north}, {}):
        with pytest.raises(IntegrityError), transaction.atomic():
            SiteGrant.objects.create(user=user, role=Role.SITE_VIEWER, **fields)
