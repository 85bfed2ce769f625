"""Retention: history older than its setting is deleted in batches, what is still in use stays."""

import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from celery.schedules import crontab
from django.conf import settings as django_settings
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from balancing.models import BalancingRun, ProfilePush, Site, SiteAlert, SiteMeterReading
from balancing.retention import history_prune
from balancing.tasks import prune_history, prune_history_all_tenants, prune_history_chunk
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector
from evplatform.celery import queue_name, route_task
from tests.factories import ChargingStationFactory, ConnectorFactory, SiteFactory

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)
DAY = timedelta(days=1)


def days_ago(days: float) -> datetime:
    return NOW - days * DAY


def a_run(site: Site, age_days: float, *, repeated_until_days: float | None = None) -> BalancingRun:
    return BalancingRun.objects.create(
        site=site,
        reason="sweep",
        started_at=days_ago(age_days),
        finished_at=days_ago(age_days),
        inputs_digest="d" * 64,
        problem={},
        repeats=0 if repeated_until_days is None else 10,
        last_repeated_at=None if repeated_until_days is None else days_ago(repeated_until_days),
    )


def a_push(run: BalancingRun, station: ChargingStation, connector: Connector | None, **fields) -> ProfilePush:
    values = {"kind": ProfilePush.Kind.LOWER, "new_limit_a": Decimal(10), "status": "Accepted"}
    values.update(fields)
    return ProfilePush.objects.create(
        run=run, station=station, connector=connector, payload={}, sent_at=run.started_at, **values
    )


def a_command(station: ChargingStation | None, age_days: float) -> ChargerCommand:
    return ChargerCommand.objects.create(
        request_id=uuid.uuid4(),
        station=station,
        charge_point_id=station.charge_point_id if station else "GONE-1",
        action="SetChargingProfile",
        payload={},
        status=ChargerCommand.Status.ACCEPTED,
        requested_at=days_ago(age_days),
    )


def ages(site: Site) -> list[int]:
    return [round((NOW - r.started_at) / DAY) for r in BalancingRun.objects.filter(site=site).order_by("started_at")]


def test_old_runs_and_their_pushes_go_while_recent_ones_and_each_sites_latest_stay(settings) -> None:
    settings.RETENTION_RUNS_DAYS = 90
    busy, lone, steady = SiteFactory(slug="busy"), SiteFactory(slug="lone"), SiteFactory(slug="steady")
    station = ChargingStationFactory(site=busy)
    for age in (200, 120, 100, 10):
        a_run(busy, age)
    refused = a_push(BalancingRun.objects.get(site=busy, started_at=days_ago(120)), station, None, status="Rejected")
    a_run(lone, 200)  # its only run: what the site page and the status API show
    a_run(steady, 150, repeated_until_days=5)  # stored long ago, but it ran until 5 days ago
    a_run(steady, 1)

    counts = history_prune(now=NOW)

    assert (counts.runs, counts.pushes) == (3, 1)
    assert ages(busy) == [10]
    assert ages(lone) == [200]
    assert ages(steady) == [150, 1]
    assert not ProfilePush.objects.filter(pk=refused.pk).exists()


def test_a_run_whose_profile_is_still_in_force_or_read_is_kept(settings) -> None:
    settings.RETENTION_RUNS_DAYS = 90
    site = SiteFactory(slug="garage")
    station = ChargingStationFactory(site=site)
    tx_connector = ConnectorFactory(station=station, connector_id=1)
    parked = ConnectorFactory(station=station, connector_id=2)
    ChargingSession.objects.create(  # a car parked for 95 days: billing reads its session's pushes
        station=station, connector=parked, transaction_id="long", started_at=days_ago(95), meter_start_wh=0
    )
    superseded = a_run(site, 120)
    a_push(superseded, station, tx_connector)
    in_force = a_run(site, 100)
    a_push(in_force, station, tx_connector)  # the connector's last accepted TxProfile
    default = a_run(site, 110)
    a_push(default, station, None, kind=ProfilePush.Kind.FAILSAFE)  # the station's confirmed fail-safe
    station_max = a_run(site, 130)
    a_push(station_max, station, None, kind=ProfilePush.Kind.RAISE)  # its station-wide maximum, read by every run
    old_default = a_run(site, 140)
    a_push(old_default, station, None, kind=ProfilePush.Kind.FAILSAFE)
    during_session = a_run(site, 93)
    a_push(during_session, station, parked, status="Rejected")
    a_run(site, 1)

    counts = history_prune(now=NOW)

    kept = set(BalancingRun.objects.filter(site=site).values_list("pk", flat=True))
    assert {superseded.pk, old_default.pk}.isdisjoint(kept)
    assert {in_force.pk, default.pk, station_max.pk, during_session.pk} <= kept
    assert (counts.runs, counts.pushes) == (2, 2)


def test_the_settings_decide_how_long_and_zero_keeps_forever(settings) -> None:
    site = SiteFactory(slug="garage")
    for age in (400, 200, 100, 1):
        a_run(site, age)

    settings.RETENTION_RUNS_DAYS = 0
    assert history_prune(now=NOW).runs == 0
    settings.RETENTION_RUNS_DAYS = 365
    assert history_prune(now=NOW).runs == 1
    assert ages(site) == [200, 100, 1]
    settings.RETENTION_RUNS_DAYS = 30
    assert history_prune(now=NOW).runs == 2
    assert ages(site) == [1]


def test_rows_go_in_batches_until_none_is_left(settings, django_assert_max_num_queries) -> None:
    settings.RETENTION_RUNS_DAYS = 90
    settings.RETENTION_COMMANDS_DAYS = 90
    site = SiteFactory(slug="garage")
    station = ChargingStationFactory(site=site)
    for age in range(100, 107):
        a_push(a_run(site, age), station, None, status="Rejected")
        a_command(station, age)
    a_run(site, 1)

    counts = history_prune(now=NOW, batch=3)

    assert (counts.runs, counts.pushes, counts.commands) == (7, 7, 7)
    assert ages(site) == [1]
    assert not ChargerCommand.objects.exists()


def test_charger_commands_older_than_their_setting_go(settings) -> None:
    settings.RETENTION_COMMANDS_DAYS = 90
    station = ChargingStationFactory()
    old, recent = a_command(station, 91), a_command(station, 89)
    orphan = a_command(None, 200)  # its station was deleted since

    assert history_prune(now=NOW).commands == 2

    assert list(ChargerCommand.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not ChargerCommand.objects.filter(pk__in=[old.pk, orphan.pk]).exists()
    settings.RETENTION_COMMANDS_DAYS = 30
    assert history_prune(now=NOW).commands == 1


def test_site_meter_readings_go_with_the_raw_readings_retention_but_each_sites_latest_stays(settings) -> None:
    settings.TELEMETRY_RETENTION_DAYS = 90
    busy, quiet = SiteFactory(slug="busy"), SiteFactory(slug="quiet")

    def reading(site: Site, age_days: float) -> SiteMeterReading:
        return SiteMeterReading.objects.create(site=site, measured_at=days_ago(age_days), source="api", current_a=[])

    old, recent = reading(busy, 91), reading(busy, 89)
    quiet_latest = reading(quiet, 200)  # the quiet site's meter fell silent long ago: its last word stays

    assert history_prune(now=NOW, dry_run=True).meter_readings == 1
    assert SiteMeterReading.objects.filter(pk=old.pk).exists()
    assert history_prune(now=NOW).meter_readings == 1
    assert set(SiteMeterReading.objects.values_list("pk", flat=True)) == {recent.pk, quiet_latest.pk}
    settings.TELEMETRY_RETENTION_DAYS = 0
    reading(busy, 400)
    assert history_prune(now=NOW).meter_readings == 0


def test_cleared_alerts_go_after_their_period_and_open_ones_never(settings) -> None:
    settings.RETENTION_ALERTS_DAYS = 365
    site = SiteFactory(slug="garage")

    def alert(kind: str, opened_days: float, cleared_days: float | None) -> SiteAlert:
        return SiteAlert.objects.create(
            site=site,
            kind=kind,
            detail="x",
            opened_at=days_ago(opened_days),
            last_seen_at=days_ago(cleared_days or 0),
            cleared_at=None if cleared_days is None else days_ago(cleared_days),
        )

    gone = alert(SiteAlert.Kind.OVERDRAW, 400, 399)
    recent = alert(SiteAlert.Kind.OVERDRAW, 400, 300)
    still_open = alert(SiteAlert.Kind.FAILSAFE, 500, None)

    assert history_prune(now=NOW).alerts == 1

    assert set(SiteAlert.objects.values_list("pk", flat=True)) == {recent.pk, still_open.pk}
    assert gone.pk not in SiteAlert.objects.values_list("pk", flat=True)


def test_expired_portal_sessions_go() -> None:
    Session.objects.create(session_key="a" * 32, session_data="x", expire_date=NOW - timedelta(hours=1))
    Session.objects.create(session_key="b" * 32, session_data="x", expire_date=NOW + timedelta(hours=1))

    assert history_prune(now=NOW).sessions == 1

    # Other tests' browsers may have left live sessions of their own: only these two are looked at.
    kept = set(Session.objects.filter(session_key__in=["a" * 32, "b" * 32]).values_list("session_key", flat=True))
    assert kept == {"b" * 32}


def test_a_dry_run_counts_and_deletes_nothing(settings) -> None:
    settings.RETENTION_RUNS_DAYS = 90
    site = SiteFactory(slug="garage")
    station = ChargingStationFactory(site=site)
    a_push(a_run(site, 120), station, None, status="Rejected")
    a_run(site, 1)
    a_command(station, 100)

    counts = history_prune(now=NOW, dry_run=True)

    assert (counts.runs, counts.pushes, counts.commands) == (1, 1, 1)
    assert BalancingRun.objects.count() == 2
    assert ProfilePush.objects.count() == ChargerCommand.objects.count() == 1


def test_the_deletes_go_by_time_through_an_index(settings) -> None:
    """Each prune statement finds its rows through an index on (site or station, time), never a table scan."""
    site = SiteFactory(slug="garage")
    station = ChargingStationFactory(site=site)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # an index that exists is used even on a tiny table
        for table, where in (
            (BalancingRun._meta.db_table, f"site_id = {site.pk} AND started_at < now()"),
            (ChargerCommand._meta.db_table, f"station_id = {station.pk} AND requested_at < now()"),
            (SiteAlert._meta.db_table, f"site_id = {site.pk} AND cleared_at < now()"),
            (ProfilePush._meta.db_table, f"connector_id = {station.pk} AND status = 'Accepted' AND sent_at > now()"),
        ):
            cursor.execute(f"EXPLAIN SELECT id FROM {table} WHERE {where}")  # noqa: S608
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "Index" in plan, f"{table}: {plan}"


def test_the_command_prints_what_it_deleted_and_a_dry_run_deletes_nothing(settings, capsys) -> None:
    settings.RETENTION_RUNS_DAYS = 90
    site = SiteFactory(slug="garage")
    a_run(site, 120)
    a_run(site, 1)

    call_command("prune_history", "--tenant", "alpha", "--dry-run")
    dry = capsys.readouterr().out
    assert "keeping runs 90 days, commands 90 days, alerts 365 days, meter readings 3650 days (dry run" in dry
    assert "alpha: would delete 1 balancing runs" in dry
    assert BalancingRun.objects.count() == 2

    call_command("prune_history", "--tenant", "alpha")
    assert "alpha: deleted 1 balancing runs (0 profile pushes)" in capsys.readouterr().out
    assert ages(site) == [1]


def test_the_prune_is_a_daily_beat_task_on_the_reports_queue_fanned_out_per_tenant(
    tenant, other_tenant, monkeypatch, caplog
) -> None:
    entry = next(
        e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == prune_history_all_tenants.name
    )
    assert entry["schedule"] == crontab(minute=17, hour=django_settings.RETENTION_HOUR_UTC)
    for task in (prune_history, prune_history_all_tenants, prune_history_chunk):
        assert route_task(task.name, (), {}, {}) == {"queue": queue_name("reports")}

    chunks: list[list[str]] = []
    monkeypatch.setattr(prune_history_chunk, "apply_async", lambda kwargs, **_: chunks.append(kwargs["schemas"]))
    sent_for: list[str] = []
    monkeypatch.setattr(prune_history, "delay", lambda: sent_for.append(connection.schema_name))
    assert prune_history_all_tenants.run() == len(chunks) >= 1
    for schemas in chunks:
        prune_history_chunk.run(schemas=schemas)
    assert {tenant.schema_name, other_tenant.schema_name} <= set(sent_for)
    assert len(sent_for) == len(set(sent_for))

    caplog.set_level(logging.INFO, logger="balancing.retention")
    assert prune_history.run() == {
        "runs": 0,
        "pushes": 0,
        "commands": 0,
        "alerts": 0,
        "meter_readings": 0,
        "sessions": 0,
        "idempotency_keys": 0,
    }
    assert f"history of {tenant.schema_name} pruned: 0 balancing runs" in caplog.text
