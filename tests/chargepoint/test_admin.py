"""Organisation admins manage the idTag allow-list and read the command log."""

import pytest

from chargepoint.models import IdTag
from tests.factories import SiteFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_an_organisation_admin_lists_and_adds_allowed_id_tags(alpha_client) -> None:
    admin = UserFactory(email="idtags@alpha.localhost", is_staff=True, is_superuser=True)
    site = SiteFactory(free_vend=False)
    alpha_client.force_login(admin)

    added = alpha_client.post(
        "/admin/chargepoint/idtag/add/", {"id_tag": "CARD-0042", "label": "Dana", "site": site.pk, "is_active": "on"}
    )
    listing = alpha_client.get("/admin/chargepoint/idtag/")
    commands = alpha_client.get("/admin/chargepoint/chargercommand/")

    assert added.status_code == 302
    assert IdTag.objects.filter(id_tag="CARD-0042", site=site, is_active=True).exists()
    assert b"CARD-0042" in listing.content
    assert commands.status_code == 200
