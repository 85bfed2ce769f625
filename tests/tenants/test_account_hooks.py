"""Accounts without a domain app: roles on the whole organisation only, no site groups or grants.

Tenancy sits below the domain and imports none of it (``tenants.accounts.hooks``); until a domain
app registers its answers, tokens, sign-in mappings and the tokens page still work, reaching
every site through an organisation role and nothing through a site group.
"""

import pytest
from django.core.exceptions import ValidationError

from tenants.accounts import hooks
from tenants.accounts.forms import TokenForm
from tenants.accounts.models import ApiToken, AuditEvent, IdentityProvider, Role, User
from tenants.accounts.services import user_sso_sync
from tenants.accounts.tokens import TOKEN_MAX_DAYS, api_token_create, token_max_days

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_domain(monkeypatch: pytest.MonkeyPatch) -> hooks.AccountHooks:
    """The hooks as they are before any domain app registers its own."""
    defaults = hooks.AccountHooks()
    monkeypatch.setattr(hooks, "_hooks", defaults)
    return defaults


def test_the_balancing_app_answers_accounts_questions() -> None:
    from balancing.groups import SiteGroupAccountHooks

    assert isinstance(hooks.account_hooks(), SiteGroupAccountHooks)


def test_an_organisation_role_makes_tokens_reaching_every_site(no_domain) -> None:
    admin = User.objects.create_user(email="admin@alpha.example", password="admin-pass-2026", role=Role.ADMIN)

    token, raw = api_token_create(user=admin, name="BMS", scope=ApiToken.Scope.METER_WRITE)

    assert raw.startswith("evp_")
    assert token.scope == ApiToken.Scope.METER_WRITE
    assert token_max_days(admin) == TOKEN_MAX_DAYS[Role.ADMIN]
    assert hooks.account_hooks().token_reach(admin) == hooks.TokenReach(whole_org=True, roles=frozenset({Role.ADMIN}))


def test_a_meter_write_token_still_needs_a_role_that_changes_limits(no_domain) -> None:
    viewer = User.objects.create_user(email="viewer@alpha.example", password="viewer-pass-2026", role=Role.SITE_VIEWER)

    with pytest.raises(ValidationError) as refused:
        api_token_create(user=viewer, name="meter", scope=ApiToken.Scope.METER_WRITE)

    assert "needs the energy manager or admin role" in refused.value.message_dict["scope"][0]


def test_without_an_organisation_role_nothing_is_in_reach(no_domain) -> None:
    nobody = User.objects.create_user(email="nobody@alpha.example", password="nobody-pass-2026", role="")

    with pytest.raises(ValidationError) as refused:
        api_token_create(user=nobody, name="x")

    assert "site_groups" in refused.value.message_dict
    assert token_max_days(nobody) == min(TOKEN_MAX_DAYS.values())
    assert not ApiToken.objects.filter(user=nobody).exists()


def test_the_token_form_has_no_site_groups_to_offer(no_domain) -> None:
    form = TokenForm({"name": "BMS", "expires_in_days": "30"}, max_days=365, site_groups=None, groups_required=False)

    assert form.is_valid(), form.errors
    assert "site_groups" not in form.fields


def test_the_tokens_page_makes_a_token_without_site_groups(no_domain, make_user) -> None:
    user, client = make_user(Role.ENERGY_MANAGER)

    page = client.get("/tokens/")
    made = client.post("/tokens/", {"name": "Integration", "expires_in_days": "30", "scope": "read"})

    assert page.status_code == 200
    assert 'name="site_groups"' not in page.content.decode()
    assert made.status_code == 200
    assert ApiToken.objects.get(user=user).scope == ApiToken.Scope.READ


def test_a_sign_in_mapping_may_name_no_site_group_and_changes_none(no_domain) -> None:
    provider = IdentityProvider(
        slug="x", name="X", server_url="https://x.example/", client_id="c", client_secret="s",
        group_roles={"g": {"role": "site_viewer", "site_group": "north"}},
    )  # fmt: skip
    with pytest.raises(ValidationError) as refused:
        provider.clean()
    person = User.objects.create_user(email="fm@corp.example", password="fm-password-2026", role=Role.SITE_VIEWER)

    changed = user_sso_sync(
        user=person, org_role=Role.SITE_VIEWER, group_grants=frozenset({("north", "site_viewer")}), actor="sso"
    )

    assert refused.value.message_dict == {"group_roles": ["No site group 'north'."]}
    assert changed == []
    assert not AuditEvent.objects.filter(object_id=str(person.pk)).exists()
