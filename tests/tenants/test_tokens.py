"""API tokens last no longer than their user's role allows, and never forever."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from tenants.accounts.models import ApiToken, Role
from tenants.accounts.tokens import api_token_create

pytestmark = pytest.mark.django_db


TOKEN_CAPS = [(Role.SITE_VIEWER, 90), (Role.FINANCE, 90), (Role.ENERGY_MANAGER, 180), (Role.ADMIN, 365)]


@pytest.mark.parametrize(("role", "max_days"), TOKEN_CAPS)
def test_a_token_may_last_as_long_as_the_role_allows_and_no_longer(make_user, role, max_days) -> None:
    user, client = make_user(role)

    refused = client.post("/tokens/", {"name": "Long", "expires_in_days": str(max_days + 1)})
    two_years = client.post("/tokens/", {"name": "Longer", "expires_in_days": "730"})
    assert not ApiToken.objects.filter(user=user).exists()
    assert refused.status_code == 200
    assert f"may last at most {max_days} days" in refused.content.decode()
    assert f"may last at most {max_days} days" in two_years.content.decode()

    client.post("/tokens/", {"name": "Longest allowed", "expires_in_days": str(max_days)})
    token = ApiToken.objects.get(user=user)
    assert timedelta(days=max_days - 1) < token.expires_at - timezone.now() <= timedelta(days=max_days)


@pytest.mark.parametrize(("role", "max_days"), TOKEN_CAPS)
def test_the_token_service_caps_the_lifetime_by_role_and_never_makes_an_endless_token(
    make_user, role, max_days
) -> None:
    user, _ = make_user(role)

    with pytest.raises(ValidationError) as raised:
        api_token_create(user=user, name="x", expires_at=timezone.now() + timedelta(days=max_days + 1))
    token, _ = api_token_create(user=user, name="default")

    assert f"at most {max_days} days" in raised.value.message_dict["expires_at"][0]
    assert token.expires_at is not None
    assert token.expires_at - timezone.now() <= timedelta(days=max_days)
