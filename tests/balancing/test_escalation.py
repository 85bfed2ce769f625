"""Opt-in escalation of a charger that keeps overdrawing: one remote stop or one
ChangeAvailability per episode, alerted and audited.

The command path itself needs a gateway; here only ``command_send`` is replaced by a fake that
records the Command built and answers like a charger would.
"""

from datetime import timedelta
from decimal import Decimal

import pytest

from balancing.escalation import site_escalations_apply
from balancing.models import ConnectorLimit, Site, SiteAlert
from chargepoint.commands import Command, CommandResult
from chargepoint.models import ChargingSession
from tenants.accounts.models import AuditEvent
from tests.balancing.conftest import NOW

pytestmark = pytest.mark.django_db


class FakeCommandPath:
    def __init__(self, status: str = "Accepted") -> None:
        self.status = status
        self.sent: list[Command] = []

    def __call__(self, *, command: Command, timeout_s: float = 30.0) -> CommandResult:
        self.sent.append(command)
        return CommandResult(self.status)


@pytest.fixture
def command_path(monkeypatch) -> FakeCommandPath:
    fake = FakeCommandPath()
    monkeypatch.setattr("chargepoint.actions.command_send", fake)
    return fake


def escalating(site: Site, mode: str, after_s: int = 300) -> Site:
    site.overdraw_escalation, site.overdraw_escalation_after_s = mode, after_s
    site.save(update_fields=["overdraw_escalation", "overdraw_escalation_after_s"])
    return site


def overdraw(connector, *, limit_a: str = "10", drawn_a: str = "16", seconds: int = 301):
    ConnectorLimit.objects.update_or_create(
        connector=connector, defaults={"limit_a": Decimal(limit_a), "overdraw_a": Decimal(drawn_a)}
    )
    session = ChargingSession.objects.filter(connector=connector, stopped_at__isnull=True).first()
    return (connector, session, NOW - timedelta(seconds=seconds))


def test_a_long_overdraw_is_stopped_once_alerted_and_audited(garage, plug_in, command_path) -> None:
    escalating(garage, Site.Escalation.STOP)
    connector = plug_in(garage, "CP-1", ocpp_version="1.6")
    entry = overdraw(connector)

    lines = site_escalations_apply(site=garage, overdrawing=[entry], now=NOW)

    session = entry[1]
    assert command_path.sent == [
        Command("CP-1", "RemoteStopTransaction", {"transactionId": int(session.transaction_id)})
    ]
    assert lines == ["CP-1/1 drew 16.0 A over its 10.0 A limit for 301 s: RemoteStopTransaction sent, answer Accepted"]
    alert = SiteAlert.objects.get(site=garage, kind="escalated", cleared_at__isnull=True)
    assert (alert.connector, alert.detail) == (connector, lines[0])
    audit = AuditEvent.objects.get(action="remote_stop", object_type="charger")
    assert (audit.actor, audit.object_label, audit.new_value) == ("system:balancing", "CP-1", "Accepted")

    # The same episode, runs later: nothing is sent again.
    assert site_escalations_apply(site=garage, overdrawing=[entry], now=NOW + timedelta(seconds=30)) == []
    assert len(command_path.sent) == 1


def test_ocpp_201_gets_request_stop_transaction(garage, plug_in, command_path) -> None:
    escalating(garage, Site.Escalation.STOP)
    connector = plug_in(garage, "CP-2", ocpp_version="2.0.1")
    entry = overdraw(connector)

    site_escalations_apply(site=garage, overdrawing=[entry], now=NOW)

    assert command_path.sent == [Command("CP-2", "RequestStopTransaction", {"transactionId": entry[1].transaction_id})]


def test_nothing_is_sent_before_the_delay_or_when_the_site_did_not_opt_in(garage, plug_in, command_path) -> None:
    connector = plug_in(garage, "CP-1")
    assert site_escalations_apply(site=garage, overdrawing=[overdraw(connector, seconds=3600)], now=NOW) == []

    escalating(garage, Site.Escalation.STOP, after_s=300)
    assert site_escalations_apply(site=garage, overdrawing=[overdraw(connector, seconds=299)], now=NOW) == []

    assert command_path.sent == []
    assert not SiteAlert.objects.filter(kind="escalated").exists()


def test_unavailable_is_scheduled_for_the_end_of_the_session(garage, plug_in, monkeypatch) -> None:
    fake = FakeCommandPath("Scheduled")
    monkeypatch.setattr("chargepoint.actions.command_send", fake)
    escalating(garage, Site.Escalation.UNAVAILABLE, after_s=60)
    connector = plug_in(garage, "CP-1", ocpp_version="1.6")

    [line] = site_escalations_apply(site=garage, overdrawing=[overdraw(connector, seconds=61)], now=NOW)

    assert fake.sent == [Command("CP-1", "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})]
    assert line.endswith(
        "ChangeAvailability Inoperative sent, answer Scheduled: the connector becomes unavailable when the session ends"
    )


def test_a_new_episode_after_the_last_one_ended_is_acted_on_again(garage, plug_in, command_path) -> None:
    escalating(garage, Site.Escalation.STOP)
    connector = plug_in(garage, "CP-1")
    site_escalations_apply(site=garage, overdrawing=[overdraw(connector)], now=NOW)

    # The overdraw stops: the marker closes.
    assert site_escalations_apply(site=garage, overdrawing=[], now=NOW + timedelta(minutes=1)) == []
    assert not SiteAlert.objects.filter(kind="escalated", cleared_at__isnull=True).exists()

    later = NOW + timedelta(minutes=20)
    entry = (connector, ChargingSession.objects.get(connector=connector), later - timedelta(seconds=400))
    assert len(site_escalations_apply(site=garage, overdrawing=[entry], now=later)) == 1
    assert len(command_path.sent) == 2


def test_a_stop_without_a_session_sends_nothing(garage, plug_in, command_path) -> None:
    escalating(garage, Site.Escalation.STOP)
    connector = plug_in(garage, "CP-1", session=False)

    assert site_escalations_apply(site=garage, overdrawing=[overdraw(connector)], now=NOW) == []
    assert command_path.sent == []
