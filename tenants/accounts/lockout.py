"""The account a failed sign-in counts against (django-axes), one key per email address.

Sign-in finds the user case-insensitively (``UserManager.get_by_natural_key``), so ``ALICE@x``
and ``alice@x`` must also share one failure count, or a guesser gets the limit once per spelling.
"""

from typing import Any

from django.http import HttpRequest


def lockout_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The posted email, stripped and lowercased as the sign-in lookup reads it."""
    value = (credentials or getattr(request, "data", request.POST)).get("username")
    return value.strip().lower() if isinstance(value, str) else value
