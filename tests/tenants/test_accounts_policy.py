"""The sign-in policy: SSO-only sign-in, second factors required, the sign-in page's SSO buttons."""

import html
import json

import pyotp
import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP
from django.test import Client

from tenants.accounts.models import AuditEvent, Enforcement, IdentityProvider, Role, SignInPolicy, User
from tenants.accounts.services import authenticator_remove
from tests.conftest import ALPHA
from tests.evplatform.test_browser import csp_directives

pytestmark = pytest.mark.django_db
PASSWORD = "policy-test-pass-2026"
SSO_ONLY = "This organisation signs in with single sign-on (SSO) only: use 'Sign in with Corp SSO'."


@pytest.fixture
def provider() -> IdentityProvider:
    return IdentityProvider.objects.create(
        slug="corp",
        name="Corp SSO",
        server_url="https://login.corp.example/realms/ev",
        client_id="evp",
        client_secret="s",
    )


def person(role: str, email: str | None = None) -> User:
    return User.objects.create_user(email=email or f"{role}.policy@alpha.localhost", password=PASSWORD, role=role)


def sign_in(client: Client, email: str, password: str = PASSWORD, path: str = "/accounts/login/"):
    return client.post(path, {"username": email, "password": password})


def text(response) -> str:
    return html.unescape(response.content.decode())


def test_the_sign_in_page_offers_each_active_provider_and_lets_its_form_reach_the_provider(
    alpha_client, provider
) -> None:
    IdentityProvider.objects.create(
        slug="off", name="Old IdP", server_url="https://old.example/", client_id="c", client_secret="s", is_active=False
    )
    response = alpha_client.get("/accounts/login/?next=/reports/")
    page = response.content.decode()
    assert 'action="/accounts/oidc/corp/login/"' in page
    assert "Sign in with Corp SSO" in page
    assert "Old IdP" not in page
    assert '<input type="hidden" name="next" value="/reports/">' in page
    assert csp_directives(response["Content-Security-Policy"])["form-action"] == "'self' https://login.corp.example"


def test_without_providers_the_sign_in_page_keeps_the_plain_policy(alpha_client) -> None:
    response = alpha_client.get("/accounts/login/")
    assert "Sign in with" not in response.content.decode()
    assert csp_directives(response["Content-Security-Policy"])["form-action"] == "'self'"


def test_sso_for_everyone_refuses_a_password_without_checking_it(alpha_client, provider) -> None:
    SignInPolicy.objects.create(require_sso=Enforcement.EVERYONE)
    for password in (ALPHA.admin_password, "wrong-password"):
        refused = sign_in(alpha_client, ALPHA.admin_email, password)
        assert refused.status_code == 200
        assert SSO_ONLY in text(refused)
    assert alpha_client.get("/").status_code == 302  # still signed out
    admin_login = sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password, path="/admin/login/")
    assert admin_login.status_code == 200
    assert SSO_ONLY in text(admin_login)


def test_sso_for_admins_refuses_an_admins_right_password_but_lets_others_sign_in(alpha_client, provider) -> None:
    SignInPolicy.objects.create(require_sso=Enforcement.ADMINS)
    wrong = text(sign_in(alpha_client, ALPHA.admin_email, "wrong-password"))
    assert "Please enter a correct" in wrong
    assert SSO_ONLY not in wrong
    assert SSO_ONLY in text(sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password))
    finance = person(Role.FINANCE)
    assert sign_in(alpha_client, finance.email).status_code == 302
    assert alpha_client.get("/").status_code == 200


def test_a_second_factor_for_everyone_sends_a_signed_in_person_to_set_one_up_first(alpha_client) -> None:
    SignInPolicy.objects.create(require_mfa=Enforcement.EVERYONE)
    finance = person(Role.FINANCE)
    assert sign_in(alpha_client, finance.email)["Location"] == "/"
    home = alpha_client.get("/")
    assert (home.status_code, home["Location"]) == (302, "/accounts/2fa/")
    setup = alpha_client.get("/accounts/2fa/", follow=True)
    assert "Your organisation requires a second factor" in setup.content.decode()
    activate = alpha_client.get("/accounts/2fa/totp/activate/")
    assert activate.status_code == 200, "no second password right after signing in"
    assert 'id="authenticator_secret"' in activate.content.decode()
    api = alpha_client.get("/api/v1/sites/")
    assert api.status_code == 403
    assert "requires a second factor" in json.loads(api.content)["detail"]


def test_a_stale_session_without_the_required_factor_signs_in_again_first() -> None:
    SignInPolicy.objects.create(require_mfa=Enforcement.EVERYONE)
    client = Client(HTTP_HOST=ALPHA.domain)
    client.force_login(person(Role.SITE_VIEWER))  # a session from before the policy
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/?next=/accounts/2fa/")
    assert client.get("/accounts/2fa/").status_code == 302  # signed out


def test_a_second_factor_for_admins_leaves_other_roles_alone(alpha_client) -> None:
    SignInPolicy.objects.create(require_mfa=Enforcement.ADMINS)
    sign_in(alpha_client, person(Role.ENERGY_MANAGER).email)
    assert alpha_client.get("/").status_code == 200
    admin_client = Client(HTTP_HOST=ALPHA.domain)
    sign_in(admin_client, ALPHA.admin_email, ALPHA.admin_password)
    assert admin_client.get("/")["Location"] == "/accounts/2fa/"


def test_a_password_sign_in_with_a_totp_app_asks_for_the_code_before_signing_in(alpha_client) -> None:
    finance = person(Role.FINANCE)
    secret = pyotp.random_base32()
    TOTP.activate(finance, secret)

    response = sign_in(alpha_client, finance.email)
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert alpha_client.get("/reports/").status_code == 302  # not signed in yet
    wrong = alpha_client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert wrong.status_code == 200
    assert "Incorrect code" in wrong.content.decode()
    done = alpha_client.post("/accounts/2fa/authenticate/", {"code": pyotp.TOTP(secret).now()})
    assert (done.status_code, done["Location"]) == (302, "/")
    assert alpha_client.get("/reports/").status_code == 200


def test_the_admin_sign_in_asks_for_the_second_factor_too(alpha_client) -> None:
    admin = User.objects.get(email=ALPHA.admin_email)
    secret = pyotp.random_base32()
    TOTP.activate(admin, secret)
    response = sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password, path="/admin/login/?next=/admin/")
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert alpha_client.get("/admin/")["Location"].startswith("/admin/login/")
    done = alpha_client.post("/accounts/2fa/authenticate/", {"code": pyotp.TOTP(secret).now()})
    assert done["Location"] == "/admin/"
    assert alpha_client.get("/admin/").status_code == 200


def test_removing_a_lost_second_factor_is_audited() -> None:
    finance = person(Role.FINANCE)
    authenticator = TOTP.activate(finance, pyotp.random_base32()).instance
    authenticator_remove(authenticator=authenticator, actor=ALPHA.admin_email)
    assert not Authenticator.objects.filter(user=finance).exists()
    event = AuditEvent.objects.get(object_type="authenticator")
    assert (event.actor, event.object_label, event.old_value) == (ALPHA.admin_email, finance.email, "totp")


def test_the_policy_edited_in_the_admin_is_audited(make_user) -> None:
    admin, client = make_user(Role.ADMIN)
    admin.is_staff = admin.is_superuser = True
    admin.save()
    response = client.post("/admin/accounts/signinpolicy/add/", {"require_sso": "everyone", "require_mfa": "none"})
    assert response.status_code == 302
    assert SignInPolicy.current().require_sso == Enforcement.EVERYONE
    changes = [(e.field, e.old_value, e.new_value) for e in AuditEvent.objects.filter(object_type="signinpolicy")]
    assert changes == [("require_sso", "", "everyone")]  # a new row: no old value
    assert client.get("/admin/accounts/signinpolicy/add/").status_code == 403  # one policy per organisation


def test_there_is_no_public_sign_up_nor_allauths_email_and_password_pages(alpha_client, make_user) -> None:
    assert "Sign Up Closed" in alpha_client.get("/accounts/signup/").content.decode()
    _, client = make_user(Role.FINANCE)
    for path in ("/accounts/email/", "/accounts/password/change/", "/accounts/password/reset/"):
        assert client.get(path).status_code == 404, path
    assert client.get("/accounts/password_change/").status_code == 200  # Django's own
