"""Sign-in, brute-force lockout, password reset, users and roles, API tokens, the audit log."""

import json
import re

import pytest
from django.core import mail
from django.test import Client, override_settings

from tenants.accounts.models import ApiToken, AuditEvent, Role, User
from tests.conftest import ALPHA
from tests.evplatform.test_settings import run_python

pytestmark = pytest.mark.django_db


def sign_in(client: Client, email: str, password: str):
    return client.post("/accounts/login/", {"username": email, "password": password})


def test_sign_in_with_email_and_password_lands_on_the_overview(alpha_client) -> None:
    response = sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password)
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert alpha_client.get("/").status_code == 200


def test_repeated_wrong_passwords_lock_the_account_for_that_address(alpha_client) -> None:
    for _ in range(4):
        assert sign_in(alpha_client, ALPHA.admin_email, "wrong-password").status_code == 200
    assert sign_in(alpha_client, ALPHA.admin_email, "wrong-password").status_code == 429  # the 5th locks
    locked = sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password)
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.content.decode()
    assert alpha_client.get("/").status_code == 302  # still signed out


def test_password_reset_sends_a_link_that_sets_a_new_password(alpha_client) -> None:
    alpha_client.post("/accounts/password_reset/", {"email": ALPHA.admin_email})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+)", mail.outbox[0].body).group(1)
    form_page = alpha_client.get(link, follow=True)
    set_url = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link
    done = alpha_client.post(
        set_url, {"new_password1": "a-brand-new-secret-77", "new_password2": "a-brand-new-secret-77"}
    )
    assert done.status_code == 302
    assert User.objects.get(email=ALPHA.admin_email).check_password("a-brand-new-secret-77")


def test_an_admin_adds_a_person_who_gets_a_sign_in_link(make_user) -> None:
    _, client = make_user(Role.ADMIN)
    client.post("/users/", {"email": "New.Person@Alpha.example", "full_name": "New Person", "role": Role.FINANCE})
    person = User.objects.get(email="new.person@alpha.example")
    assert person.role == Role.FINANCE
    assert mail.outbox
    assert mail.outbox[0].to == ["new.person@alpha.example"]
    assert AuditEvent.objects.filter(object_type="user", object_label="new.person@alpha.example").exists()


def test_an_admin_changes_roles_but_cannot_demote_themself(make_user) -> None:
    admin, client = make_user(Role.ADMIN)
    viewer, _ = make_user(Role.SITE_VIEWER)
    client.post(f"/users/{viewer.pk}/", {"role": Role.ENERGY_MANAGER, "is_active": "on"})
    viewer.refresh_from_db()
    assert viewer.role == Role.ENERGY_MANAGER
    client.post(f"/users/{admin.pk}/", {"role": Role.SITE_VIEWER, "is_active": "on"})
    admin.refresh_from_db()
    assert admin.role == Role.ADMIN


@pytest.mark.parametrize("role", [Role.SITE_VIEWER, Role.FINANCE, Role.ENERGY_MANAGER])
def test_only_admins_manage_people(make_user, role) -> None:
    _, client = make_user(role)
    assert client.get("/users/").status_code == 403


def test_a_token_is_shown_once_then_only_its_prefix_and_can_be_revoked(make_user) -> None:
    user, client = make_user(Role.SITE_VIEWER)
    page = client.post("/tokens/", {"name": "BMS", "expires_in_days": "30"}).content.decode()
    raw = re.search(r"(evp_[A-Za-z0-9_-]+)", page).group(1)
    token = ApiToken.objects.get(user=user)
    assert raw not in client.get("/tokens/").content.decode()
    assert Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/sites/").status_code == 200
    client.post(f"/tokens/{token.pk}/revoke/")
    assert Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/sites/").status_code == 401


def test_the_audit_log_shows_changes_to_managers_not_viewers(make_user) -> None:
    AuditEvent.objects.create(
        actor="x@alpha.example",
        action="update",
        object_type="site",
        object_id="1",
        object_label="Mall",
        field="limit_a",
        old_value="63",
        new_value="50",
    )
    _, manager = make_user(Role.ENERGY_MANAGER)
    _, viewer = make_user(Role.SITE_VIEWER)
    assert "x@alpha.example" in manager.get("/audit/").content.decode()
    assert viewer.get("/audit/").status_code == 403


def test_sign_in_ignores_the_letter_case_of_the_email(alpha_client) -> None:
    assert sign_in(alpha_client, "Admin@Alpha.LocalHost", ALPHA.admin_password).status_code == 302
    assert alpha_client.get("/").status_code == 200


def test_every_way_of_adding_a_person_stores_the_email_lowercased() -> None:
    made = User.objects.create_user(email="Carol@Alpha.Example", password="carol-secret-2026")
    saved = User(email=" Dave@Alpha.Example ", full_name="Dave")
    saved.set_password("dave-secret-2026")
    saved.save()  # as the admin's forms do, past the manager
    assert {made.email, User.objects.get(pk=saved.pk).email} == {"carol@alpha.example", "dave@alpha.example"}


def test_wrong_passwords_count_against_one_account_whatever_the_letter_case(alpha_client) -> None:
    for spelling in ("ADMIN@alpha.localhost", "Admin@Alpha.localhost", "admin@ALPHA.localhost", ALPHA.admin_email):
        assert sign_in(alpha_client, spelling, "wrong-password").status_code == 200
    assert sign_in(alpha_client, "admin@alpha.LOCALHOST", "wrong-password").status_code == 429  # the 5th
    assert sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password).status_code == 429


LOAD_BALANCER = "10.0.0.2"
CLIENT_ADDRESS_SETTINGS = ("AXES_IPWARE_META_PRECEDENCE_ORDER", "AXES_IPWARE_PROXY_COUNT", "IPWARE_STRICT")


def settings_behind_one_proxy() -> dict[str, object]:
    """The settings that say how to find the client's address when TRUSTED_PROXY_COUNT=1."""
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{name: getattr(s, name, None) for name in {CLIENT_ADDRESS_SETTINGS!r}}}))"
    )
    result = run_python(code, DJANGO_SETTINGS_MODULE="evplatform.settings.test", TRUSTED_PROXY_COUNT="1")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def behind_the_proxy(forwarded_for: str) -> Client:
    return Client(HTTP_HOST=ALPHA.domain, REMOTE_ADDR=LOAD_BALANCER, HTTP_X_FORWARDED_FOR=forwarded_for)


def test_behind_a_proxy_a_guesser_locked_out_does_not_lock_out_the_account_elsewhere() -> None:
    with override_settings(**settings_behind_one_proxy()):
        guesser = behind_the_proxy("203.0.113.66")
        for _ in range(5):
            sign_in(guesser, ALPHA.admin_email, "wrong-password")
        assert sign_in(guesser, ALPHA.admin_email, ALPHA.admin_password).status_code == 429
        # Putting another address in front of the one the proxy adds does not get the guesser out.
        forger = behind_the_proxy("198.51.100.7, 203.0.113.66")
        assert sign_in(forger, ALPHA.admin_email, ALPHA.admin_password).status_code == 429
        owner = behind_the_proxy("198.51.100.7")
        assert sign_in(owner, ALPHA.admin_email, ALPHA.admin_password).status_code == 302


def mail_link(message) -> str:
    body = message.get_body(preferencelist=("plain",)).get_content()
    return re.search(r"https?://[^/\s]+(/accounts/reset/\S+)", body).group(1)


def test_password_reset_mail_goes_out_through_the_smtp_server_of_email_url(alpha_client, smtp_server) -> None:
    with override_settings(**smtp_server.email_settings):
        response = alpha_client.post("/accounts/password_reset/", {"email": "Admin@Alpha.localhost"})
    assert response.status_code == 302
    assert len(smtp_server.messages) == 1
    message = smtp_server.messages[0]
    assert message["To"] == ALPHA.admin_email
    link = mail_link(message)
    assert alpha_client.get(link, follow=True).status_code == 200


def test_an_invitation_goes_out_through_the_smtp_server_of_email_url(make_user, smtp_server) -> None:
    _, client = make_user(Role.ADMIN)
    with override_settings(**smtp_server.email_settings):
        client.post("/users/", {"email": "Invited@Alpha.example", "full_name": "Invited", "role": Role.FINANCE})
    assert [m["To"] for m in smtp_server.messages] == ["invited@alpha.example"]
    assert "/accounts/reset/" in mail_link(smtp_server.messages[0])


def test_a_wrong_smtp_password_is_refused_by_the_server_and_logged(alpha_client, smtp_server, caplog) -> None:
    wrong = {**smtp_server.email_settings, "EMAIL_HOST_PASSWORD": "not-the-password", "EMAIL_TIMEOUT": 3}
    with override_settings(**wrong):
        alpha_client.post("/accounts/password_reset/", {"email": ALPHA.admin_email})
    assert smtp_server.messages == []
    assert "Failed to send password reset email" in caplog.text
