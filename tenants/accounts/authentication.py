"""REST API authentication by bearer token (``Authorization: Bearer <token>``). Schema: tenant.

The token is looked up by its SHA-256 hash in the schema of the request's host, so a token of
one organisation is unknown on every other organisation's domain.

A token's scope is enforced here, for every endpoint at once (views name their own roles, so
no per-view permission class could be forgotten): a ``read`` token only reads; a
``meter-write`` token only POSTs to a view that sets ``accepts_meter_write_token = True`` (the
site meter readings). Anything else is 403.
"""

from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from tenants.accounts.models import ApiToken
from tenants.accounts.tokens import token_hash

LAST_USED_RESOLUTION_S = 60


class ApiTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=token_hash(parts[1].decode(errors="replace")))
            .first()
        )
        if token is None or not token.is_usable or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        _check_scope(token, request)
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_S:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


def _check_scope(token: ApiToken, request: Request) -> None:
    if token.scope == ApiToken.Scope.READ and request.method not in SAFE_METHODS:
        raise exceptions.PermissionDenied("This token is read-only.")
    if token.scope == ApiToken.Scope.METER_WRITE:
        view = (getattr(request, "parser_context", None) or {}).get("view")
        if request.method != "POST" or not getattr(view, "accepts_meter_write_token", False):
            raise exceptions.PermissionDenied("This token may only post site meter readings.")


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the token (HTTP bearer)."""

    target_class = "tenants.accounts.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A token from the portal's 'API tokens' page."}
