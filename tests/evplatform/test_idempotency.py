"""Idempotency-Key on the API's creating requests: a retry replays, another body is 422, a race creates once."""

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import tenant_context

from balancing.models import Circuit, Site
from balancing.retention import history_prune
from tenants.accounts.models import ApiToken, AuditEvent, IdempotencyKey, Role, User
from tenants.accounts.tokens import api_token_create
from tests.api_clients import audit_rows, bearer, send, token_clients
from tests.conftest import forget_balancing_keys
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db
WAIT_S = 30


@pytest.fixture
def api_as() -> Any:
    return token_clients()


def circuit_body(**changes: Any) -> dict[str, Any]:
    return {"site": "mall", "name": "Feeder A", "limit_a": "100", **changes}


def test_a_repeat_with_the_same_key_replays_the_first_answer_and_writes_once(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    earlier = {row.pk for row in audit_rows("circuit")}  # other tests' committed rows (the fuzz run's)

    first = send(client, "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY="key-1")
    again = send(client, "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY="key-1")

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Circuit.objects.filter(site__slug="mall", name="Feeder A").count() == 1
    written = [row for row in audit_rows("circuit") if row.pk not in earlier]
    assert written == audit_rows("circuit", first.json()["id"])
    assert {row.action for row in written} == {"create"}


def test_the_same_key_with_another_body_is_422_naming_the_key_and_changes_nothing(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    send(client, "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY="order-7")

    other = send(client, "POST", "/api/v1/circuits/", circuit_body(name="Feeder B"), HTTP_IDEMPOTENCY_KEY="order-7")

    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert "'order-7'" in other.json()["error"]["message"]
    assert not Circuit.objects.filter(name="Feeder B").exists()


def test_keys_belong_to_their_user(api_as) -> None:
    SiteFactory(slug="mall")
    send(api_as(Role.ENERGY_MANAGER), "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY="shared")

    other_user = send(
        api_as(Role.ADMIN), "POST", "/api/v1/circuits/", circuit_body(name="Feeder B"), HTTP_IDEMPOTENCY_KEY="shared"
    )

    assert other_user.status_code == 201
    assert "Idempotent-Replayed" not in other_user


def test_a_refused_request_keeps_no_answer_so_the_corrected_one_may_use_the_key(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)

    bad = send(client, "POST", "/api/v1/circuits/", circuit_body(limit_a="-1"), HTTP_IDEMPOTENCY_KEY="k")
    fixed = send(client, "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY="k")

    assert bad.status_code == 400
    assert "limit_a" in bad.json()["error"]["fields"]
    assert fixed.status_code == 201
    assert Circuit.objects.filter(name="Feeder A").count() == 1


@pytest.mark.parametrize("key", ["", " leading-space", "x" * 256, "tab\tinside"])
def test_a_key_that_is_not_1_to_255_printable_characters_is_400_naming_the_header(api_as, key) -> None:
    SiteFactory(slug="mall")

    response = send(api_as(Role.ENERGY_MANAGER), "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert not Circuit.objects.filter(name="Feeder A").exists()


def test_an_expired_key_is_a_new_request_and_the_daily_prune_removes_expired_keys(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    send(client, "POST", "/api/v1/circuits/", circuit_body(), HTTP_IDEMPOTENCY_KEY="old")
    IdempotencyKey.objects.filter(key="old").update(expires_at=timezone.now() - timedelta(seconds=1))

    again = send(client, "POST", "/api/v1/circuits/", circuit_body(name="Feeder B"), HTTP_IDEMPOTENCY_KEY="old")
    assert again.status_code == 201
    send(client, "POST", "/api/v1/circuits/", circuit_body(name="Feeder C"), HTTP_IDEMPOTENCY_KEY="live")
    IdempotencyKey.objects.filter(key="old").update(expires_at=timezone.now() - timedelta(seconds=1))

    counts = history_prune(now=timezone.now())

    assert counts.idempotency_keys == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["live"]


# --- Two identical requests at once, each on its own connection, committing -----------------


class InThread:
    def __init__(self, tenant: Any, fn: Any) -> None:
        self.out: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(tenant, fn))
        self.thread.start()

    def _run(self, tenant: Any, fn: Any) -> None:
        try:
            with tenant_context(tenant):
                self.out["result"] = fn()
        except BaseException as exc:  # re-raised by result()
            self.out["error"] = exc
        finally:
            connection.close()

    def result(self) -> Any:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "still running"
        if "error" in self.out:
            raise self.out["error"]
        return self.out.get("result")


def in_thread(tenant: Any, fn: Any) -> Any:
    return InThread(tenant, fn).result()


@pytest.fixture
def committed_site(tenant, django_db_blocker):
    """A committed site and an energy manager's raw token in alpha; removed afterwards."""

    def make() -> tuple[int, str]:
        site = Site.objects.create(slug="race-site", name="Race site", limit_a=Decimal(63))
        user = User.objects.create_user(email="race@alpha.localhost", password="x" * 20, role=Role.ENERGY_MANAGER)
        _, raw = api_token_create(user=user, name="race")
        return site.pk, raw

    def remove(site_id: int) -> None:
        circuits = list(Circuit.objects.filter(site_id=site_id).values_list("pk", flat=True))
        AuditEvent.objects.filter(object_type="circuit", object_id__in=[str(pk) for pk in circuits]).delete()
        AuditEvent.objects.filter(object_type="site", object_id=str(site_id)).delete()
        Circuit.objects.filter(site_id=site_id).delete()
        Site.objects.filter(pk=site_id).delete()
        IdempotencyKey.objects.filter(user__email="race@alpha.localhost").delete()
        ApiToken.objects.filter(user__email="race@alpha.localhost").delete()
        User.objects.filter(email="race@alpha.localhost").delete()
        forget_balancing_keys(tenant.schema_name, site_id)

    with django_db_blocker.unblock():
        site_id, raw = in_thread(tenant, make)
        try:
            yield site_id, raw
        finally:
            in_thread(tenant, lambda: remove(site_id))


def test_two_identical_requests_at_once_create_one_circuit_and_the_second_replays(tenant, committed_site) -> None:
    site_id, raw = committed_site
    site_locked, release = threading.Event(), threading.Event()

    def hold_the_site() -> None:
        # Adding a circuit sizes the site's fail-safe under the site's row lock: held here, the
        # first request stops there with its key claimed, and the second reaches its key meanwhile.
        with transaction.atomic():
            Site.objects.select_for_update().get(pk=site_id)
            site_locked.set()
            assert release.wait(WAIT_S)

    def post() -> Any:
        body = {"site": "race-site", "name": "Feeder", "limit_a": "40"}
        return send(bearer(raw), "POST", "/api/v1/circuits/", body, HTTP_IDEMPOTENCY_KEY="race-key")

    holder = InThread(tenant, hold_the_site)
    assert site_locked.wait(WAIT_S)
    requests = [InThread(tenant, post), InThread(tenant, post)]
    for request in requests:
        request.thread.join(1.0)
    both_waiting = all(request.thread.is_alive() for request in requests)
    release.set()
    holder.result()
    answers = [request.result() for request in requests]

    assert both_waiting  # one at the site's lock, the other at the key's
    assert sorted(answer.status_code for answer in answers) == [201, 201]
    assert sorted(answer.get("Idempotent-Replayed", "") for answer in answers) == ["", "true"]
    assert answers[0].json() == answers[1].json()
    created = in_thread(tenant, lambda: list(Circuit.objects.filter(site_id=site_id).values_list("pk", flat=True)))
    assert len(created) == 1
    audited = in_thread(
        tenant,
        lambda: list(AuditEvent.objects.filter(object_type="circuit", object_id=str(created[0])).values_list("field")),
    )
    assert audited == [("limit_a",)]  # one creation (its other fields are at their defaults)
