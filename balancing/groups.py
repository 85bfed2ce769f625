"""Site groups and the roles granted on them or on single sites: writes (audited) and reads. Schema: tenant.

Who may call these (an admin of the whole organisation) is the caller's business: the portal
views and the Django admin check it. Every change is one audit row per changed field, written
in the same transaction as the change.

Accounts (tenancy, below this app) asks about grants and groups through
``tenants.accounts.hooks``: ``SiteGroupAccountHooks`` answers, registered by ``BalancingConfig.ready``.
"""

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import slugify

from balancing.access import Access, access_for_user, access_of
from balancing.models import Site, SiteGrant, SiteGroup
from tenants.accounts.hooks import AccountHooks, GroupGrants, TokenReach
from tenants.accounts.models import Role, User
from tenants.accounts.services import audit_record


def _slugs(sites: Iterable[Site]) -> str:
    return ", ".join(sorted(site.slug for site in sites))


def site_group_create(*, name: str, slug: str = "", sites: Iterable[Site] = (), actor: str) -> SiteGroup:
    """A new group of ``sites``; ``slug`` from the name when not given. A taken slug is refused."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "give the group a name"})
    slug = (slug.strip() or slugify(name))[:50]
    if not slug:
        raise ValidationError({"slug": "the name must contain letters or digits"})
    if SiteGroup.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"a group {slug!r} exists already"})
    chosen = list(sites)
    with transaction.atomic():
        group = SiteGroup.objects.create(name=name[:200], slug=slug)
        group.sites.set(chosen)
        audit_record(
            actor=actor,
            action="create",
            object_type="site_group",
            object_id=group.pk,
            label=group.name,
            changes=[("name", None, group.name), ("slug", None, slug), ("sites", None, _slugs(chosen))],
        )
    return group


def site_group_update(*, group: SiteGroup, name: str, sites: Iterable[Site], actor: str) -> list[str]:
    """Rename the group and make ``sites`` its sites; returns what changed (audited)."""
    name = name.strip()[:200]
    if not name:
        raise ValidationError({"name": "give the group a name"})
    chosen = list(sites)
    with transaction.atomic():
        stored = SiteGroup.objects.select_for_update().get(pk=group.pk)
        before = list(stored.sites.all())
        changes: list[tuple[str, object, object]] = []
        if stored.name != name:
            changes.append(("name", stored.name, name))
            stored.name = name
            stored.save(update_fields=["name", "updated_at"])
        if {s.pk for s in before} != {s.pk for s in chosen}:
            changes.append(("sites", _slugs(before), _slugs(chosen)))
            stored.sites.set(chosen)
        if changes:
            audit_record(
                actor=actor,
                action="update",
                object_type="site_group",
                object_id=stored.pk,
                label=stored.name,
                changes=changes,
            )
    group.name = stored.name
    return [field for field, _, _ in changes]


def site_group_delete(*, group: SiteGroup, actor: str) -> None:
    """Remove the group and the roles granted on it; tokens limited to it alone are revoked."""
    with transaction.atomic():
        grants = list(group.grants.select_related("user"))
        for grant in grants:
            _audit_grant(grant, action="delete", actor=actor)
        audit_record(
            actor=actor,
            action="delete",
            object_type="site_group",
            object_id=group.pk,
            label=group.name,
            changes=[("name", group.name, None), ("sites", _slugs(group.sites.all()), None)],
        )
        # A token limited to this group alone would otherwise lose its limit: it is revoked.
        now = timezone.now()
        for token in group.api_tokens.annotate(groups=Count("site_groups")).filter(groups=1, revoked_at=None):
            token.revoked_at = now
            token.save(update_fields=["revoked_at"])
            audit_record(
                actor=actor,
                action="update",
                object_type="api_token",
                object_id=token.pk,
                label=str(token),
                changes=[("revoked_at", None, now.isoformat())],
            )
        group.delete()


def _grant_label(grant: SiteGrant) -> str:
    where = f"group {grant.group.name}" if grant.group is not None else f"site {grant.site.name if grant.site else ''}"
    return f"{grant.user.email}: {grant.role} on {where}"


def _audit_grant(grant: SiteGrant, *, action: str, actor: str) -> None:
    value = grant.role
    audit_record(
        actor=actor,
        action=action,
        object_type="site_grant",
        object_id=grant.pk,
        label=_grant_label(grant),
        changes=[("role", value, None) if action == "delete" else ("role", None, value)],
    )


def site_grant_create(
    *, user: User, role: str, group: SiteGroup | None = None, site: Site | None = None, actor: str
) -> SiteGrant:
    """Give ``user`` ``role`` on one group or one site (exactly one of them); audited."""
    if role not in Role.values:
        raise ValidationError({"role": f"{role!r} is not one of {', '.join(Role.values)}"})
    if (group is None) == (site is None):
        raise ValidationError({"target": "name a site group or a site, not both"})
    if SiteGrant.objects.filter(user=user, role=role, group=group, site=site).exists():
        raise ValidationError({"target": "this person already holds that role there"})
    try:
        with transaction.atomic():
            grant = SiteGrant.objects.create(user=user, role=role, group=group, site=site)
            _audit_grant(grant, action="create", actor=actor)
    except IntegrityError as exc:  # the same grant made at the same moment elsewhere
        raise ValidationError({"target": "this person already holds that role there"}) from exc
    return grant


def site_grant_delete(*, grant: SiteGrant, actor: str) -> None:
    with transaction.atomic():
        _audit_grant(grant, action="delete", actor=actor)
        grant.delete()


def site_group_grants_set(
    *, user: User, grants: GroupGrants
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]] | None:
    """Make the person's site-group roles exactly ``grants`` (site group slug, role); groups that do
    not exist are skipped; roles on single sites are left alone. The (old, new) grants when changed.

    Not audited here: an identity provider's sign-in sets them, and its caller
    (``tenants.accounts.services.user_sso_sync``) audits them with the person's other changes.
    """
    current = SiteGrant.objects.filter(user=user, group__isnull=False)
    old = set(current.values_list("group__slug", "role"))
    groups = {group.slug: group for group in SiteGroup.objects.filter(slug__in={slug for slug, _ in grants})}
    new = {(slug, role) for slug, role in grants if slug in groups}
    if old == new:
        return None
    for slug, role in old - new:
        current.filter(group__slug=slug, role=role).delete()
    SiteGrant.objects.bulk_create([SiteGrant(user=user, group=groups[slug], role=role) for slug, role in new - old])
    return old, new


# --- Reads ----------------------------------------------------------------------------------


def groups_within(access: Access) -> QuerySet[SiteGroup]:
    """The groups all of whose sites (at least one) are in reach: those a token may be limited to.

    The whole organisation reaches every group, the empty ones too.
    """
    groups = SiteGroup.objects.order_by("name")
    ids = access.site_ids()
    if ids is None:
        return groups
    outside = Count("sites", filter=~Q(sites__in=ids))
    return groups.annotate(n_sites=Count("sites"), n_outside=outside).filter(n_sites__gt=0, n_outside=0)


def grants_of_users() -> dict[int, list[SiteGrant]]:
    """Every grant, by user id, with its group or site (for the users page)."""
    grants: dict[int, list[SiteGrant]] = {}
    for grant in SiteGrant.objects.select_related("group", "site").order_by("role", "group__name", "site__name"):
        grants.setdefault(grant.user_id, []).append(grant)
    return grants


# --- Accounts' questions ------------------------------------------------------------------------


class SiteGroupAccountHooks(AccountHooks):
    """What accounts asks about site groups and grants (``tenants.accounts.hooks``), answered here."""

    def roles_granted(self, user: User) -> set[str]:
        return set(SiteGrant.objects.filter(user=user).values_list("role", flat=True))

    def token_reach(self, user: User, request: HttpRequest | None = None) -> TokenReach:
        # On a page the request's reach is worked out (and cached on it) already.
        access = access_of(request) if request is not None else access_for_user(user)
        return TokenReach(
            whole_org=access.whole_org,
            roles=frozenset(role for role in Role.values if access.can_anywhere((role,))),
            site_groups=groups_within(access),
        )

    def site_group_slugs(self) -> set[str]:
        return set(SiteGroup.objects.values_list("slug", flat=True))

    def group_grants_set(
        self, *, user: User, grants: GroupGrants
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]] | None:
        return site_group_grants_set(user=user, grants=grants)
