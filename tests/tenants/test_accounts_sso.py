"""Identity providers: claims, the group -> role mapping, the allauth adapter's decisions, the admin."""

import pytest
from allauth.core import context
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.models import SocialAccount, SocialLogin
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.test import RequestFactory, override_settings

from tenants.accounts.adapters import AccountAdapter, SocialAccountAdapter
from tenants.accounts.models import AuditEvent, IdentityProvider, Role, User
from tenants.accounts.sso import (
    Assignment,
    assignment_for_groups,
    claims_of,
    client_secret_of,
    group_roles_errors,
    social_app_of,
)
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db
MAPPING = {"ev-admins": Role.ADMIN, "ev-finance": Role.FINANCE, "ev-energy": Role.ENERGY_MANAGER}


def make_provider(**fields) -> IdentityProvider:
    defaults = {
        "slug": "corp",
        "name": "Corp SSO",
        "server_url": "https://login.corp.example/",
        "client_id": "evp",
        "client_secret": "stored-secret",
        "group_roles": MAPPING,
    }
    return IdentityProvider.objects.create(**{**defaults, **fields})


def test_claims_merge_the_id_token_and_userinfo_and_read_the_groups_claim() -> None:
    claims = claims_of(
        {
            "id_token": {"sub": "1", "email": "Old@Corp.Example", "roles": ["ev-admins"]},
            "userinfo": {"email": "Alice@Corp.Example", "email_verified": True, "name": "Alice"},
        },
        groups_claim="roles",
    )
    assert claims.email == "alice@corp.example"
    assert claims.email_verified is True
    assert claims.name == "Alice"
    assert claims.groups == frozenset({"ev-admins"})


def test_a_single_group_string_and_a_string_email_verified_are_understood() -> None:
    claims = claims_of(
        {"userinfo": {"email": "b@x.example", "email_verified": "true", "groups": "ev-finance"}}, groups_claim="groups"
    )
    assert (claims.email_verified, claims.groups) == (True, frozenset({"ev-finance"}))
    assert claims_of({"userinfo": {"email": "c@x.example"}}, groups_claim="groups").email_verified is False


def org_role(groups: list[str], default_role: str = "") -> str | None:
    assignment = assignment_for_groups(group_roles=MAPPING, groups=groups, default_role=default_role)
    return assignment.org_role if assignment else None


def test_the_strongest_mapped_role_wins_and_no_mapped_group_falls_back_to_the_default() -> None:
    assert org_role(["ev-finance", "ev-admins", "other"]) == "admin"
    assert org_role(["ev-finance", "ev-energy"]) == "energy_manager"
    assert org_role(["other"], default_role="site_viewer") == "site_viewer"
    assert org_role([]) is None


def test_a_group_mapped_to_a_site_group_gives_a_role_there_and_none_on_the_organisation() -> None:
    mapping = {**MAPPING, "north-fm": {"role": "energy_manager", "site_group": "north"}}
    assert assignment_for_groups(group_roles=mapping, groups=["north-fm"], default_role="site_viewer") == Assignment(
        org_role="", group_grants=frozenset({("north", "energy_manager")})
    )
    both = assignment_for_groups(group_roles=mapping, groups=["north-fm", "ev-finance"], default_role="")
    assert both == Assignment(org_role="finance", group_grants=frozenset({("north", "energy_manager")}))


def test_a_mapping_to_an_unknown_role_is_refused_naming_the_group() -> None:
    assert group_roles_errors({"ev-admins": "admin"}) == []
    assert group_roles_errors({"ev-boss": "owner"}) == [
        "Group 'ev-boss': 'owner' is not a role (one of admin, energy_manager, site_viewer, finance)."
    ]
    assert group_roles_errors(["ev-admins"]) != []
    assert group_roles_errors({"north-fm": {"role": "energy_manager", "site_group": "north"}}) == []
    assert group_roles_errors({"north-fm": {"role": "energy_manager"}}) == [
        'Group \'north-fm\': give {"role": ..., "site_group": "<slug>"}.'
    ]


def test_a_provider_without_any_secret_or_with_a_reserved_id_is_invalid() -> None:
    provider = IdentityProvider(
        slug="openid_connect", name="X", server_url="https://x.example/", client_id="c", client_secret_env="SECRET_X"
    )
    provider.group_roles = {"g": "boss"}
    with pytest.raises(ValidationError) as refused:
        provider.clean()
    assert set(refused.value.message_dict) == {"slug", "group_roles", "client_secret_env"}
    provider.slug, provider.client_secret_env, provider.group_roles = "x", "", {}
    with pytest.raises(ValidationError) as refused:
        provider.clean()
    assert set(refused.value.message_dict) == {"client_secret"}


def test_the_client_secret_comes_from_the_named_environment_variable_before_the_stored_one() -> None:
    provider = make_provider(client_secret_env="OIDC_SECRET_CORP")
    with override_settings(OIDC_CLIENT_SECRETS={"OIDC_SECRET_CORP": "from-the-environment"}):
        assert client_secret_of(provider) == "from-the-environment"
        app = social_app_of(provider)
    assert (app.provider, app.provider_id, app.client_id, app.secret) == (
        "openid_connect",
        "corp",
        "evp",
        "from-the-environment",
    )
    assert app.settings["server_url"] == "https://login.corp.example/"
    with (
        override_settings(OIDC_CLIENT_SECRETS={}),
        pytest.raises(ImproperlyConfigured, match="OIDC_SECRET_CORP is not set"),
    ):
        client_secret_of(provider)
    provider.client_secret_env = ""
    assert client_secret_of(provider) == "stored-secret"


def test_allauth_sees_only_the_active_providers_of_this_organisation(other_tenant) -> None:
    from django_tenants.utils import tenant_context

    make_provider()
    make_provider(slug="old", is_active=False)
    adapter = SocialAccountAdapter()
    assert [app.provider_id for app in adapter.list_apps(None)] == ["corp"]
    assert [app.provider_id for app in adapter.list_apps(None, provider="corp")] == ["corp"]
    assert adapter.list_apps(None, provider="old") == []
    with tenant_context(other_tenant):
        assert adapter.list_apps(None) == []


def test_local_sign_up_is_closed() -> None:
    assert AccountAdapter().is_open_for_signup(RequestFactory().get("/")) is False


def request_on_alpha():
    request = RequestFactory().get("/accounts/oidc/corp/login/callback/", HTTP_HOST=ALPHA.domain)
    SessionMiddleware(lambda r: None).process_request(request)
    request.user = AnonymousUser()
    return request


def social_login(claims: dict, provider: str = "corp") -> SocialLogin:
    account = SocialAccount(provider=provider, uid=claims["sub"], extra_data={"userinfo": claims})
    return SocialLogin(account=account, user=User(email=claims.get("email", "")), email_addresses=[])


def pre_social_login(sociallogin: SocialLogin) -> None:
    request = request_on_alpha()
    with context.request_context(request):
        SocialAccountAdapter(request).pre_social_login(request, sociallogin)


def refusal_of(sociallogin: SocialLogin) -> str:
    with pytest.raises(ImmediateHttpResponse) as refused:
        pre_social_login(sociallogin)
    assert refused.value.response.status_code == 403
    return refused.value.response.content.decode()


def test_a_new_person_gets_the_role_of_their_groups_before_the_account_is_created() -> None:
    make_provider()
    login = social_login({"sub": "u1", "email": "new@corp.example", "email_verified": True, "groups": ["ev-finance"]})
    pre_social_login(login)
    assert (login.user.pk, login.user.role, login.user.is_staff) == (None, Role.FINANCE, False)
    assert SocialAccountAdapter().is_open_for_signup(request_on_alpha(), login) is True


def test_an_existing_person_is_matched_by_email_linked_and_their_role_re_synced_with_an_audit_row() -> None:
    make_provider()
    person = User.objects.create_user(email="pat@corp.example", password="pat-password-2026", role=Role.SITE_VIEWER)
    login = social_login({"sub": "u2", "email": "Pat@Corp.example", "email_verified": True, "groups": ["ev-admins"]})
    pre_social_login(login)

    person.refresh_from_db()
    assert (person.role, person.is_staff, person.is_superuser) == (Role.ADMIN, True, True)
    assert person.check_password("pat-password-2026"), "linking by email keeps the password"
    assert SocialAccount.objects.get(user=person).uid == "u2"
    event = AuditEvent.objects.get(object_type="user", object_id=str(person.pk))
    assert (event.actor, event.field, event.old_value, event.new_value) == ("sso:corp", "role", "site_viewer", "admin")

    # The next sign-in finds the link; groups changed at the IdP demote them, audited again.
    again = social_login({"sub": "u2", "email": "pat@corp.example", "email_verified": True, "groups": ["ev-finance"]})
    again.lookup()
    pre_social_login(again)
    person.refresh_from_db()
    assert (person.role, person.is_staff) == (Role.FINANCE, False)
    assert AuditEvent.objects.filter(object_id=str(person.pk), new_value="finance").count() == 1


def test_a_person_in_no_mapped_group_is_refused_unless_there_is_a_default_role() -> None:
    provider = make_provider()
    claims = {"sub": "u3", "email": "nogroup@corp.example", "email_verified": True, "groups": ["staff"]}
    assert "is in none of the groups that give a role in Alpha University" in refusal_of(social_login(claims))
    provider.default_role = Role.SITE_VIEWER
    provider.save()
    login = social_login(claims)
    pre_social_login(login)
    assert login.user.role == Role.SITE_VIEWER


def test_an_unconfirmed_email_is_refused_unless_the_provider_is_trusted() -> None:
    provider = make_provider()
    claims = {"sub": "u4", "email": "unverified@corp.example", "groups": ["ev-finance"]}
    assert "Corp SSO did not confirm that unverified@corp.example is your email address" in refusal_of(
        social_login(claims)
    )
    assert "did not give an email address" in refusal_of(social_login({"sub": "u5", "groups": ["ev-finance"]}))
    provider.trust_email = True
    provider.save()
    pre_social_login(social_login(claims))


def test_a_deactivated_person_and_a_disabled_provider_are_refused() -> None:
    make_provider()
    User.objects.create_user(email="gone@corp.example", password="x-password-2026", is_active=False)
    claims = {"sub": "u6", "email": "gone@corp.example", "email_verified": True, "groups": ["ev-admins"]}
    assert "deactivated" in refusal_of(social_login(claims))
    assert not SocialAccount.objects.exists()
    assert User.objects.get(email="gone@corp.example").role == Role.SITE_VIEWER
    assert "not enabled" in refusal_of(social_login({**claims, "sub": "u7"}, provider="elsewhere"))


def test_the_admin_sets_the_client_secret_write_only_and_every_change_is_audited(make_user) -> None:
    admin, client = make_user(Role.ADMIN)
    admin.is_staff = admin.is_superuser = True
    admin.save()
    form = {
        "name": "Corp SSO",
        "slug": "corp",
        "is_active": "on",
        "server_url": "https://login.corp.example/",
        "client_id": "evp",
        "client_secret": "very-secret-value",
        "client_secret_env": "",
        "groups_claim": "groups",
        "group_roles": '{"ev-admins": "admin"}',
        "default_role": "",
    }
    assert client.post("/admin/accounts/identityprovider/add/", form).status_code == 302
    provider = IdentityProvider.objects.get(slug="corp")
    assert provider.client_secret == "very-secret-value"
    page = client.get(f"/admin/accounts/identityprovider/{provider.pk}/change/").content.decode()
    assert "very-secret-value" not in page
    audit = {e.field: e for e in AuditEvent.objects.filter(object_type="identityprovider")}
    assert audit["client_secret"].new_value == "(changed)"
    assert "very-secret-value" not in "".join(e.old_value + e.new_value for e in audit.values())

    # Saved again without a secret: the stored one stays; only the changed field is audited.
    AuditEvent.objects.all().delete()
    form.update(client_secret="", group_roles='{"ev-admins": "admin", "ev-finance": "finance"}')
    assert client.post(f"/admin/accounts/identityprovider/{provider.pk}/change/", form).status_code == 302
    provider.refresh_from_db()
    assert provider.client_secret == "very-secret-value"
    assert [e.field for e in AuditEvent.objects.all()] == ["group_roles"]

    form.update(group_roles='{"ev-admins": "owner"}')
    refused = client.post(f"/admin/accounts/identityprovider/{provider.pk}/change/", form)
    assert refused.status_code == 200
    assert "Group &#x27;ev-admins&#x27;: &#x27;owner&#x27; is not a role" in refused.content.decode()


def test_site_group_mappings_replace_the_persons_site_group_roles_at_each_sign_in() -> None:
    from balancing.models import Site, SiteGrant, SiteGroup

    north = SiteGroup.objects.create(slug="north", name="North campus")
    south = SiteGroup.objects.create(slug="south", name="South campus")
    site = Site.objects.create(slug="lab", name="Lab", limit_a=63)
    provider = make_provider(
        group_roles={
            "north-fm": {"role": "energy_manager", "site_group": "north"},
            "south-view": {"role": "site_viewer", "site_group": "south"},
        }
    )
    provider.full_clean()
    person = User.objects.create_user(email="fm@corp.example", password="fm-password-2026", role=Role.SITE_VIEWER)
    SiteGrant.objects.create(user=person, role=Role.FINANCE, site=site)  # given by an admin: left alone

    pre_social_login(
        social_login({"sub": "fm", "email": "fm@corp.example", "email_verified": True, "groups": ["north-fm"]})
    )
    person.refresh_from_db()
    assert person.role == ""

    def grants() -> set[tuple[str, str | None, str | None]]:
        return set(SiteGrant.objects.filter(user=person).values_list("role", "group__slug", "site__slug"))

    assert grants() == {("energy_manager", "north", None), ("finance", None, "lab")}

    again = social_login({"sub": "fm", "email": "fm@corp.example", "email_verified": True, "groups": ["south-view"]})
    again.lookup()
    pre_social_login(again)
    assert grants() == {("site_viewer", "south", None), ("finance", None, "lab")}
    audited = AuditEvent.objects.filter(object_id=str(person.pk), field="site_group_roles").order_by("at", "pk")
    assert [(e.old_value, e.new_value) for e in audited] == [
        ("", "energy_manager on north"),
        ("energy_manager on north", "site_viewer on south"),
    ]
    assert (south.grants.count(), north.grants.count()) == (1, 0)


def test_a_mapping_to_a_site_group_that_does_not_exist_is_refused() -> None:
    provider = IdentityProvider(
        slug="x", name="X", server_url="https://x.example/", client_id="c", client_secret="s",
        group_roles={"g": {"role": "site_viewer", "site_group": "nowhere"}},
    )  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        provider.clean()
    assert refused.value.message_dict == {"group_roles": ["No site group 'nowhere'."]}
