"""What accounts asks of the domain about roles below the whole organisation. Schema: tenant.

A role is held on the whole organisation (``User.role``, kept here) or granted on a site group
or a single site, which belong to the domain (the balancing app's site groups and grants).
Accounts needs a few answers about those grants: how long a person's token may last, how far a
new token may reach, which site groups an identity provider's mapping may name, and making a
person's roles on site groups what their identity provider says. Tenancy sits below the domain
and imports none of it: the domain app registers its answers at start-up
(``account_hooks_register`` from its ``AppConfig.ready``). Until one does, an organisation has
roles on the whole organisation only: no grants, no site groups.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from django.http import HttpRequest

if TYPE_CHECKING:
    from tenants.accounts.models import User

# Roles on site groups: (site group slug, role).
GroupGrants = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class TokenReach:
    """How far a new API token of one person may reach.

    ``whole_org``: they hold a role on the whole organisation, so a token need not be limited to
    site groups. ``roles``: every role they hold on the whole organisation or on some site in
    reach. ``site_groups``: the groups a token may be limited to (all of whose sites are in
    reach); None where the organisation has no site groups to offer.
    """

    whole_org: bool = False
    roles: frozenset[str] = frozenset()
    site_groups: QuerySet[Any] | None = None

    def can_anywhere(self, roles: Iterable[str]) -> bool:
        """Holds one of ``roles`` somewhere: on the whole organisation or on a site in reach."""
        return bool(self.roles & frozenset(roles))


class AccountHooks:
    """The answers of an organisation with roles on the whole organisation only (no domain app);
    a domain app subclasses it and registers an instance (``account_hooks_register``)."""

    def roles_granted(self, user: "User") -> set[str]:
        """The roles ``user`` is granted on site groups or single sites (not on the whole organisation)."""
        return set()

    def token_reach(self, user: "User", request: HttpRequest | None = None) -> TokenReach:
        """How far a new token of ``user`` may reach; ``request`` is theirs when they are on a page."""
        if not user.is_authenticated or not user.is_active or not user.role:
            return TokenReach()
        return TokenReach(whole_org=True, roles=frozenset({user.role}))

    def site_group_slugs(self) -> set[str]:
        """The slugs of the organisation's site groups (what an identity provider's mapping may name)."""
        return set()

    def group_grants_set(
        self, *, user: "User", grants: GroupGrants
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]] | None:
        """Make ``user``'s roles on site groups exactly ``grants``, skipping groups that do not exist
        and leaving roles on single sites alone; the (old, new) grants when they changed, else None.
        The caller audits the change. With no site groups nothing exists to grant on: None."""
        return None


_hooks = AccountHooks()


def account_hooks_register(hooks: AccountHooks) -> None:
    """Install the domain's answers (once, from its ``AppConfig.ready``)."""
    global _hooks
    _hooks = hooks


def account_hooks() -> AccountHooks:
    """The answers in force: the domain's once registered, else ``AccountHooks``' defaults."""
    return _hooks
