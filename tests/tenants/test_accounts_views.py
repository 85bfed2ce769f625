"""Sign-in, brute-force lockout, password reset, users and roles, API tokens, the audit log."""

import re

import pytest
from django.core import mail
from django.test import Client

from tenants.accounts.models import ApiToken, AuditEvent, Role, User
from tests.conftest import ALPHA

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
