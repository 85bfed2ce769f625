"""Billing tasks on the ``reports`` queue (the router maps the billing app to it).

Schema: tenant (``roll_up_intervals``, ``simulation_checkpoints``, ``generate_savings_report``);
public for the beat fan-outs (``roll_up_all_tenants``, ``simulation_checkpoints_all_tenants``,
``monthly_reports_all_tenants``) and their chunks of tenants
(``tenants.fanout``), which enter each tenant.
"""

import hashlib
import smtplib
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from billing.interval_rollup import intervals_rebuild_month, intervals_roll_up
from billing.report_mail import report_delivery_fail, report_mail_plan, report_mail_send, report_ready_notify
from billing.reports.checkpoints import simulation_checkpoints_advance
from billing.savings_reports import savings_report_generate
from billing.selectors import report_latest, site_list, site_timezone
from billing.tariffs import previous_months
from evplatform.celery import PublicTask, TenantTask, app
from tenants.fanout import tenant_chunk, tenant_chunks_send

REPORT_SENT_MEMORY_S = 6 * 3600  # a scheduled report is not sent again for this long
ROLLUP_MAX_BATCHES_PER_TASK = 50  # 50 x 5,000 pending marks; the next beat run takes the rest


@app.task(name="billing.tasks.roll_up_intervals")
def roll_up_intervals() -> int:
    """Fold new meter readings of the tenant into interval energy; returns the pending marks taken."""
    return intervals_roll_up(max_batches=ROLLUP_MAX_BATCHES_PER_TASK).marks


@app.task(base=PublicTask, name="billing.tasks.roll_up_all_tenants")
def roll_up_all_tenants() -> int:
    """Beat: one rollup task per active tenant, sent by a task per chunk of tenants; returns the chunks."""
    return tenant_chunks_send(roll_up_tenants)


@app.task(base=PublicTask, name="billing.tasks.roll_up_tenants")
def roll_up_tenants(*, schemas: list[str]) -> int:
    """One chunk of the rollup fan-out: a rollup task in each of these tenants."""
    count = 0
    for _tenant in tenant_chunk(schemas):
        roll_up_intervals.delay()
        count += 1
    return count


# A tenant's first checkpoints of a month cost about a second a busy site: a run stops starting
# sites after this long, well inside the task time limit, and the next hour's run goes on.
CHECKPOINT_BUDGET_S = 200.0


@app.task(name="billing.tasks.simulation_checkpoints")
def simulation_checkpoints() -> int:
    """Move the tenant's sites' simulated cost-aware months up to their last local midnight
    (``billing.reports.checkpoints``), so the monthly report replays only the last hours."""
    return simulation_checkpoints_advance(now=timezone.now(), budget_s=CHECKPOINT_BUDGET_S)


@app.task(base=PublicTask, name="billing.tasks.simulation_checkpoints_all_tenants")
def simulation_checkpoints_all_tenants() -> int:
    """Beat: one checkpoint task per active tenant, sent by a task per chunk of tenants; returns the chunks."""
    return tenant_chunks_send(simulation_checkpoints_tenants)


@app.task(base=PublicTask, name="billing.tasks.simulation_checkpoints_tenants")
def simulation_checkpoints_tenants(*, schemas: list[str]) -> int:
    """One chunk of the checkpoint fan-out: a checkpoint task in each of these tenants."""
    count = 0
    for _tenant in tenant_chunk(schemas):
        simulation_checkpoints.delay()
        count += 1
    return count


REPORT_SOFT_TIME_LIMIT_S = 3600  # with ``rebuild``, a month of raw readings of a large tenant is re-read first
REPORT_TIME_LIMIT_S = 3900


@app.task(
    name="billing.tasks.generate_savings_report",
    soft_time_limit=REPORT_SOFT_TIME_LIMIT_S,
    time_limit=REPORT_TIME_LIMIT_S,
)
def generate_savings_report(
    *, month: str, reason: str = "request", requested_by: str = "", rebuild: bool = False
) -> int:
    """Store a new version of the tenant's report for ``month`` (YYYY-MM); returns its id.

    First the rollup takes every pending mark, so the readings that came in since its last run,
    late ones for the month included (the ingest marks each interval it writes to), are in the
    intervals and session draws: seconds, however large the tenant. ``rebuild`` (an operator's
    repair, as ``manage.py rebuild_intervals``) recomputes the whole month from the raw
    readings instead, about an hour for 1,000 chargers; where the raw readings are gone (the
    retention period) the intervals stay as they were rolled up.
    """
    year, number = (int(part) for part in month.split("-"))
    intervals_roll_up()
    if rebuild:
        intervals_rebuild_month(year=year, month=number)
    report = savings_report_generate(year=year, month=number, reason=reason, requested_by=requested_by)
    transaction.on_commit(lambda: mail_report.delay(report_id=report.pk))
    report_ready_notify(report=report)  # after the mail is on its way: a webhook fault never costs it
    return report.pk


MAIL_MAX_RETRIES = 6  # with the backoff below: about 30 s, 1, 2, 4, 8 and 16 minutes, half an hour in all
MAIL_RETRY_BACKOFF_S = 30
MAIL_RETRY_BACKOFF_MAX_S = 1800


@app.task(name="billing.tasks.mail_report")
def mail_report(*, report_id: int) -> int:
    """Send a stored report version to each of the organisation's finance people (a task each,
    so one bad address or a slow server does not hold up the others); returns the mails queued."""
    delivery_ids = report_mail_plan(report_id=report_id)
    for delivery_id in delivery_ids:
        mail_report_to.delay(delivery_id=delivery_id)
    return len(delivery_ids)


class ReportMailTask(TenantTask):
    """When its retries are spent, the delivery row is marked failed (and an error logged)."""

    abstract = True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        delivery_id = (kwargs or {}).get("delivery_id")
        if delivery_id is not None:
            report_delivery_fail(delivery_id=delivery_id, error=f"{type(exc).__name__}: {exc}")


@app.task(
    base=ReportMailTask,
    name="billing.tasks.mail_report_to",
    autoretry_for=(smtplib.SMTPException, OSError),
    retry_backoff=MAIL_RETRY_BACKOFF_S,
    retry_backoff_max=MAIL_RETRY_BACKOFF_MAX_S,
    retry_jitter=False,
    max_retries=MAIL_MAX_RETRIES,
)
def mail_report_to(*, delivery_id: int) -> str:
    """One person's mail of a report; an SMTP or network error is retried with a growing wait."""
    return report_mail_send(delivery_id=delivery_id).status


def month_closed_everywhere(now: datetime) -> str | None:
    """The month (YYYY-MM) that has closed in every site's zone and is the latest to do so."""
    sites = site_list()
    if not sites:
        return None
    months = []
    for site in sites:
        local = now.astimezone(site_timezone(site))
        months.append(previous_months(local.year, local.month, 1)[0])
    closed = min(months)
    return f"{closed.year:04d}-{closed.month:02d}"


def report_start_delay_s(schema_name: str) -> int:
    """Seconds a tenant's scheduled report waits before it starts, in ``[0, BILLING_REPORT_SPREAD_S)``.

    Derived from the schema name alone (a hash, not Python's salted ``hash``), so it is the same
    for a tenant every month and on every beat host, and tenants spread evenly over the window:
    the month-close reports of many organisations do not all start in the same minute.
    """
    spread = int(settings.BILLING_REPORT_SPREAD_S)
    if spread <= 0:
        return 0
    digest = hashlib.blake2b(f"evp:report-start:{schema_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % spread


@app.task(base=PublicTask, name="billing.tasks.monthly_reports_all_tenants")
def monthly_reports_all_tenants() -> int:
    """Beat: for each tenant whose last month has closed at all its sites, generate it once.

    The tenants are checked a chunk per task (``monthly_reports_tenants``); returns the chunks sent.
    """
    return tenant_chunks_send(monthly_reports_tenants)


@app.task(base=PublicTask, name="billing.tasks.monthly_reports_tenants")
def monthly_reports_tenants(*, schemas: list[str]) -> int:
    """One chunk: the month's report of each of these tenants that has none yet, sent once.

    Each report task is sent with the tenant's own countdown (``report_start_delay_s``). The
    "sent" mark in the cache outlives that wait and the report's run, so the hourly beat does
    not send it again while it waits or runs; a report stored for the month ends it for good.
    Returns the reports sent.
    """
    sent = 0
    now = timezone.now()
    remember_s = REPORT_SENT_MEMORY_S + int(settings.BILLING_REPORT_SPREAD_S)
    for tenant in tenant_chunk(schemas):
        month = month_closed_everywhere(now)
        if month is None:
            continue
        year, number = (int(part) for part in month.split("-"))
        if report_latest(month=date(year, number, 1)) is not None:
            continue
        if not cache.add(f"billing:report-sent:{month}", now.isoformat(), remember_s):
            continue  # sent within the last hours: waiting for its start, or still running
        generate_savings_report.apply_async(
            kwargs={"month": month, "reason": "schedule"}, countdown=report_start_delay_s(tenant.schema_name)
        )
        sent += 1
    return sent
