"""Reads of sites and circuits. Schema: tenant."""

from django.core.exceptions import ObjectDoesNotExist

from balancing.models import Circuit, Site


class SiteNotFoundError(ObjectDoesNotExist):
    field = "site"

    def __init__(self, slug: str) -> None:
        super().__init__(f"no site with slug {slug!r} in this organisation")
        self.slug = slug


class CircuitNotFoundError(ObjectDoesNotExist):
    field = "circuit"

    def __init__(self, site: Site, name: str) -> None:
        super().__init__(f"no circuit named {name!r} in site {site.slug!r}")
        self.name = name


def site_get(*, slug: str) -> Site:
    site = Site.objects.filter(slug=slug).first()
    if site is None:
        raise SiteNotFoundError(slug)
    return site


def circuit_get(*, site: Site, name: str) -> Circuit:
    circuit = Circuit.objects.filter(site=site, name=name).first()
    if circuit is None:
        raise CircuitNotFoundError(site, name)
    return circuit


def site_ids() -> list[int]:
    return list(Site.objects.order_by("pk").values_list("pk", flat=True))
