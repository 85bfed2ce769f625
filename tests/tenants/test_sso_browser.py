"""Single sign-on and second factors in a real Chromium, against a real OpenID Connect provider.

The provider (npm oidc-provider, tests/oidc/provider.mjs) runs on 127.0.0.1 with its own login
form; the portal is a real web process (tests/tenants/conftest.py `sso_stack`). The data the
server reads is committed by module- and class-scoped fixtures (a test's own writes stay in its
transaction, which the server would neither see nor get past) and removed afterwards.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pyotp
import pytest
from django_tenants.utils import tenant_context
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tenants.accounts.models import AuditEvent, Enforcement, IdentityProvider, Role, SignInPolicy, User
from tests.evplatform.test_browser import ARTIFACTS, CHROMIUM_FLAGS
from tests.tenants.conftest import CLIENT_ID, PROVIDER_SLUG, SECRET_ENV, SsoStack

pytestmark = pytest.mark.django_db
IDP_NAME = "Test IdP"
IDP_DOMAIN = "idp.example"
PASSWORD = "sso-browser-pass-2026"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture(scope="module")
def idp(tenant, django_db_blocker, sso_stack: SsoStack) -> Iterator[IdentityProvider]:
    """Alpha's identity provider (secret from the server's environment); everything the
    sign-ins made is removed afterwards."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        provider = IdentityProvider.objects.create(
            slug=PROVIDER_SLUG,
            name=IDP_NAME,
            server_url=sso_stack.provider.issuer,
            client_id=CLIENT_ID,
            client_secret_env=SECRET_ENV,
            group_roles={"ev-admins": "admin", "ev-finance": "finance", "ev-energy": "energy_manager"},
        )
    yield provider
    with django_db_blocker.unblock(), tenant_context(tenant):
        User.objects.filter(email__endswith=f"@{IDP_DOMAIN}").delete()  # their IdP links, emails, authenticators
        AuditEvent.objects.filter(actor__startswith="sso:").delete()
        SignInPolicy.objects.all().delete()
        provider.delete()


@pytest.fixture(scope="module")
def people(tenant, django_db_blocker, idp) -> None:
    """People invited before SSO: alice as a site viewer (her IdP groups say admin), erin with a password."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        User.objects.create_user(email=f"alice@{IDP_DOMAIN}", password=PASSWORD, role=Role.SITE_VIEWER)
        User.objects.create_user(email=f"erin@{IDP_DOMAIN}", password=PASSWORD, role=Role.ENERGY_MANAGER)


@contextmanager
def sign_in_policy(tenant, django_db_blocker, **fields: str) -> Iterator[None]:
    """Alpha's sign-in policy set (committed for the server) while the block runs, none after."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        SignInPolicy.objects.create(**fields)
    try:
        yield
    finally:
        with django_db_blocker.unblock(), tenant_context(tenant):
            SignInPolicy.objects.all().delete()


def open_page(browser: Browser, sso_stack: SsoStack) -> Page:
    context = browser.new_context(base_url=sso_stack.base_url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def sign_in_at_idp(page: Page, sso_stack: SsoStack, login: str) -> None:
    """Click "Sign in with Test IdP" and sign in at the provider's own form, consenting to share the profile."""
    page.goto("/accounts/login/")
    page.get_by_role("button", name=f"Sign in with {IDP_NAME}").click()
    page.wait_for_url(f"{sso_stack.provider.issuer}/**")
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any-password-the-dev-form-takes")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{sso_stack.base_url}/**")


def test_an_idp_admin_signs_in_through_sso_and_gets_the_admin_role_from_the_groups_claim(
    browser, sso_stack, idp, people, tenant
) -> None:
    page = open_page(browser, sso_stack)
    sign_in_at_idp(page, sso_stack, "alice")

    expect(page.locator(".who")).to_contain_text(f"alice@{IDP_DOMAIN} · Admin")
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sso-admin-users.png"), full_page=True)
    with tenant_context(tenant):
        alice = User.objects.get(email=f"alice@{IDP_DOMAIN}")
        assert (alice.role, alice.is_staff) == (Role.ADMIN, True)
        assert alice.socialaccount_set.get().provider == PROVIDER_SLUG
        change = AuditEvent.objects.get(object_type="user", object_id=str(alice.pk), field="role", action="update")
        assert (change.actor, change.old_value, change.new_value) == (f"sso:{PROVIDER_SLUG}", "site_viewer", "admin")


def test_a_finance_person_is_created_on_first_sso_sign_in_with_the_finance_role(
    browser, sso_stack, idp, tenant
) -> None:
    page = open_page(browser, sso_stack)
    sign_in_at_idp(page, sso_stack, "bob")

    expect(page.locator(".who")).to_contain_text(f"bob@{IDP_DOMAIN} · Finance")
    expect(page.get_by_role("link", name="Reports")).to_be_visible()
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    response = page.goto("/users/")
    assert response is not None
    assert response.status == 403
    with tenant_context(tenant):
        bob = User.objects.get(email=f"bob@{IDP_DOMAIN}")
        assert (bob.role, bob.full_name, bob.is_staff, bob.has_usable_password()) == (
            Role.FINANCE, "Bob Finance", False, False
        )  # fmt: skip
        created = AuditEvent.objects.get(object_type="user", object_id=str(bob.pk), action="create")
        assert (created.actor, created.new_value) == (f"sso:{PROVIDER_SLUG}", "finance")


def test_a_person_in_no_mapped_group_is_refused_with_a_message_and_no_account(browser, sso_stack, idp, tenant) -> None:
    page = open_page(browser, sso_stack)
    sign_in_at_idp(page, sso_stack, "carol")

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("You cannot sign in here")
    expect(alert).to_contain_text(f"Your account at {IDP_NAME} (carol@{IDP_DOMAIN}) is in none of the groups")
    page.goto("/")
    assert "/accounts/login/" in page.url
    with tenant_context(tenant):
        assert not User.objects.filter(email=f"carol@{IDP_DOMAIN}").exists()


def enter_totp(page: Page, secret: str, label: str) -> None:
    page.get_by_label(label).fill(pyotp.TOTP(secret).now())


@pytest.fixture(scope="class")
def second_factor_for_everyone(tenant, django_db_blocker, idp) -> Iterator[None]:
    with sign_in_policy(tenant, django_db_blocker, require_mfa=Enforcement.EVERYONE):
        yield


@pytest.fixture(scope="class")
def sso_for_everyone(tenant, django_db_blocker, idp) -> Iterator[None]:
    with sign_in_policy(tenant, django_db_blocker, require_sso=Enforcement.EVERYONE):
        yield


@pytest.mark.usefixtures("second_factor_for_everyone")
class TestSecondFactorForEveryone:
    """Alpha requires a second factor of everyone (SignInPolicy.require_mfa)."""

    def test_an_organisation_requiring_a_second_factor_has_it_set_up_before_the_portal_and_asked_at_each_sign_in(
        self, browser, sso_stack, idp, tenant
    ) -> None:
        page = open_page(browser, sso_stack)
        sign_in_at_idp(page, sso_stack, "dave")

        # Signed in, but every portal page sends them to set up a second factor first.
        expect(page.get_by_text("Your organisation requires a second factor")).to_be_visible()
        assert page.url.endswith("/accounts/2fa/")
        page.goto("/reports/")
        assert page.url.endswith("/accounts/2fa/")
        page.get_by_role("link", name="Activate").click()
        secret = page.locator("#authenticator_secret").input_value()
        assert len(secret) >= 16
        page.screenshot(path=str(ARTIFACTS / "sso-totp-setup.png"), full_page=True)
        enter_totp(page, secret, "Authenticator code")
        page.get_by_role("button", name="Activate").click()
        expect(page.get_by_role("heading", name="Recovery Codes")).to_be_visible()
        page.goto("/")
        expect(page.locator(".who")).to_contain_text(f"dave@{IDP_DOMAIN} · Energy manager")
        expect(page.get_by_role("heading", name="Sites")).to_be_visible()
        page.context.close()

        # A later sign-in, from another browser: the provider, then the code, then the portal.
        page = open_page(browser, sso_stack)
        sign_in_at_idp(page, sso_stack, "dave")
        assert "/accounts/2fa/authenticate/" in page.url
        expect(page.locator(".who")).to_have_count(0)
        enter_totp(page, secret, "Code")
        page.get_by_role("button", name="Sign In").click()
        expect(page.locator(".who")).to_contain_text(f"dave@{IDP_DOMAIN}")

    def test_a_security_key_is_added_as_a_second_factor_under_the_content_security_policy(
        self, browser, sso_stack, idp, tenant
    ) -> None:
        page = open_page(browser, sso_stack)
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        # Chromium's virtual authenticator stands in for the key (DevTools WebAuthn domain).
        devtools = page.context.new_cdp_session(page)
        devtools.send("WebAuthn.enable")
        devtools.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "usb",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                }
            },
        )
        sign_in_at_idp(page, sso_stack, "bob")
        expect(page.get_by_text("Your organisation requires a second factor")).to_be_visible()
        page.goto("/accounts/2fa/webauthn/add/")
        page.get_by_label("Name").fill("Desk key")
        page.get_by_role("button", name="Add", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("Security key added.")
        page.goto("/")
        expect(page.locator(".who")).to_contain_text(f"bob@{IDP_DOMAIN} · Finance")
        with tenant_context(tenant):
            key = User.objects.get(email=f"bob@{IDP_DOMAIN}").authenticator_set.get(type="webauthn")
            assert key.wrap().name == "Desk key"
        assert refused == []


@pytest.mark.usefixtures("sso_for_everyone")
class TestSsoForEveryone:
    """Alpha requires single sign-on of everyone (SignInPolicy.require_sso)."""

    def test_an_organisation_requiring_sso_refuses_the_password_form_and_names_sso(
        self, browser, sso_stack, idp, people, tenant
    ) -> None:
        page = open_page(browser, sso_stack)
        page.goto("/accounts/login/")
        page.get_by_label("Email").fill(f"erin@{IDP_DOMAIN}")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()

        expect(page.get_by_role("alert")).to_contain_text(
            f"This organisation signs in with single sign-on (SSO) only: use 'Sign in with {IDP_NAME}'."
        )
        page.goto("/")
        assert "/accounts/login/" in page.url

        sign_in_at_idp(page, sso_stack, "erin")
        expect(page.locator(".who")).to_contain_text(f"erin@{IDP_DOMAIN} · Energy manager")
