"""API clients for write tests: a bearer token of a user with an organisation role or site grants."""

import json
from typing import Any

from django.test import Client

from balancing.models import Site, SiteGrant, SiteGroup
from tenants.accounts.models import ApiToken, AuditEvent, User
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA


def bearer(raw: str) -> Client:
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


def token_clients() -> Any:
    """``make(role, grants=[(role, group_or_site)], scope="full")``: a client with a fresh token each time.

    A user without a role on the whole organisation (``role=""``) gets a token limited to the groups
    of its grants, as ``api_token_create`` requires of it (grant groups for such a user, not sites).
    """
    made = 0

    def make(role: str = "", *, grants: tuple[tuple[str, SiteGroup | Site], ...] = (), scope: str = "full") -> Client:
        nonlocal made
        made += 1
        user = User.objects.create_user(
            email=f"api{made}.{role or 'granted'}@alpha.localhost", password="x" * 20, role=role
        )
        for grant_role, target in grants:
            if isinstance(target, SiteGroup):
                SiteGrant.objects.create(user=user, role=grant_role, group=target)
            else:
                SiteGrant.objects.create(user=user, role=grant_role, site=target)
        groups = [target for _, target in grants if isinstance(target, SiteGroup)] if not role else []
        _, raw = api_token_create(user=user, name="test", scope=ApiToken.Scope(scope), site_groups=groups)
        return bearer(raw)

    return make


def send(client: Client, method: str, url: str, body: Any = None, **headers: str) -> Any:
    """A JSON request (``headers`` as Django's test client takes them: ``HTTP_IDEMPOTENCY_KEY``)."""
    data = json.dumps(body) if body is not None else None
    return client.generic(method, url, data or "", content_type="application/json", **headers)


def audit_rows(object_type: str, object_id: object | None = None) -> list[AuditEvent]:
    rows = AuditEvent.objects.filter(object_type=object_type)
    if object_id is not None:
        rows = rows.filter(object_id=str(object_id))
    return list(rows.order_by("pk"))
