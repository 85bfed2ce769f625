"""Each stored report version is mailed to the finance people, each with the report narrowed to
the sites they reach, through a real SMTP server; a failed send is retried and recorded."""

import csv
import io
import logging
from email.message import EmailMessage

import pytest
from django.test import override_settings
from pypdf import PdfReader

from balancing.models import SiteGrant
from bench.tcpproxy import free_port
from billing.models import ReportDelivery
from billing.savings_reports import savings_report_generate
from billing.tasks import generate_savings_report, mail_report
from evplatform.celery import app
from tenants.accounts.models import Role, User
from tests.billing.test_report_scope import GENERATED, group_of, two_sites

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_tasks():
    """Tasks sent with ``delay`` run here and now, with Celery's own retries (no worker: the SMTP
    server and its settings are this process's)."""
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def readers():
    """mall in group north; org-wide finance, north's finance, an org admin and a mall site viewer."""
    mall, plaza = two_sites()
    north = group_of(mall)
    org = User.objects.create_user(email="cfo@alpha.example", password="pw-finance-org-1", role=Role.FINANCE)
    grp = User.objects.create_user(email="north.fin@alpha.example", password="pw-finance-grp-1", role="")
    SiteGrant.objects.create(user=grp, role=Role.FINANCE, group=north)
    User.objects.create_user(email="admin@alpha.example", password="pw-admin-000001", role=Role.ADMIN)
    viewer = User.objects.create_user(email="viewer@alpha.example", password="pw-viewer-00001", role="")
    SiteGrant.objects.create(user=viewer, role=Role.SITE_VIEWER, site=mall)
    return {"org": org, "group": grp, "mall": mall, "plaza": plaza}


def attachments(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}


def first_page(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_a_stored_report_reaches_each_finance_reader_narrowed_to_its_sites(
    readers, smtp_server, eager_tasks, django_capture_on_commit_callbacks
) -> None:
    with override_settings(**smtp_server.email_settings), django_capture_on_commit_callbacks(execute=True):
        report_id = generate_savings_report.apply(kwargs={"month": "2026-10", "reason": "schedule"}).get()

    by_to = {m["To"]: m for m in smtp_server.messages}
    assert set(by_to) == {"cfo@alpha.example", "north.fin@alpha.example"}  # no admin, no viewer
    org, grp = by_to["cfo@alpha.example"], by_to["north.fin@alpha.example"]
    assert org["Subject"] == "Savings report October 2026 — Alpha University"
    assert grp["Subject"] == org["Subject"]
    org_files, grp_files = attachments(org), attachments(grp)
    assert sorted(org_files) == ["savings-2026-10-v1.csv", "savings-2026-10-v1.pdf", "savings-2026-10-v1.xlsx"]
    assert sorted(grp_files) == [
        "savings-2026-10-v1-your-sites.csv",
        "savings-2026-10-v1-your-sites.pdf",
        "savings-2026-10-v1-your-sites.xlsx",
    ]
    stored = {f.format: bytes(f.content) for f in ReportDelivery.objects.first().report.files.all()}
    assert org_files["savings-2026-10-v1.pdf"] == stored["pdf"]  # the whole organisation: the stored file
    assert "$280.00" in first_page(org_files["savings-2026-10-v1.pdf"])
    assert "Year to date" in first_page(org_files["savings-2026-10-v1.pdf"])
    grp_pdf = grp_files["savings-2026-10-v1-your-sites.pdf"]
    assert "The sites in your reach only: mall" in first_page(grp_pdf)
    assert "$80.00" in first_page(grp_pdf)
    assert not any("plaza" in page.extract_text() for page in PdfReader(io.BytesIO(grp_pdf)).pages)
    grp_csv = grp_files["savings-2026-10-v1-your-sites.csv"]
    rows = {r["site"]: r for r in csv.DictReader(io.StringIO(grp_csv.decode()))}
    assert set(rows) == {"mall", "TOTAL"}
    assert rows["TOTAL"]["savings_total"] == "80.00"
    body = grp.get_body(("plain",)).get_content()
    assert "Savings this month: $80.00 (demand charges avoided $80.00" in body
    assert "Peak demand: 8.0 kW managed vs 16.0 kW unmanaged" in body
    assert "Electrical upgrade avoided (one-time): $4,951.00" in body
    assert "plaza" not in body
    assert "Savings this month: $280.00" in org.get_body(("plain",)).get_content()
    deliveries = {d.email: d for d in ReportDelivery.objects.filter(report_id=report_id)}
    assert {e: (d.status, d.attempts) for e, d in deliveries.items()} == {
        "cfo@alpha.example": ("sent", 1),
        "north.fin@alpha.example": ("sent", 1),
    }
    assert deliveries["cfo@alpha.example"].site_ids is None
    assert deliveries["north.fin@alpha.example"].site_ids == [readers["mall"].pk]


def test_a_report_is_mailed_once_per_person_however_often_the_mail_task_runs(readers, smtp_server, eager_tasks) -> None:
    report = savings_report_generate(year=2026, month=10, reason="request", now=GENERATED)

    with override_settings(**smtp_server.email_settings):
        assert mail_report.apply(kwargs={"report_id": report.pk}).get() == 2
        assert mail_report.apply(kwargs={"report_id": report.pk}).get() == 0

    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize("fault", ["wrong password", "server down"])
def test_a_failed_send_is_retried_then_recorded_and_a_later_run_sends_it(
    readers, smtp_server, eager_tasks, caplog, fault
) -> None:
    report = savings_report_generate(year=2026, month=10, reason="request", now=GENERATED)
    wrong = {**smtp_server.email_settings, "EMAIL_TIMEOUT": 1}
    if fault == "wrong password":
        wrong["EMAIL_HOST_PASSWORD"] = "not-the-password"
    else:
        wrong["EMAIL_PORT"] = free_port()  # nothing listens there

    with override_settings(**wrong), caplog.at_level(logging.WARNING, logger="billing.report_mail"):
        mail_report.apply(kwargs={"report_id": report.pk})

    failed = ReportDelivery.objects.get(report=report, email="cfo@alpha.example")
    assert failed.status == ReportDelivery.Status.FAILED
    assert failed.attempts == 7  # the first try and six retries
    # The test server answers a wrong password by closing the session (smtplib: SMTPServerDisconnected).
    expected = "SMTP" if fault == "wrong password" else "ConnectionRefusedError"
    assert failed.last_error.startswith(expected)
    assert failed.sent_at is None
    assert any(r.levelno == logging.ERROR and "failed after 7 attempts" in r.getMessage() for r in caplog.records)
    assert sum("attempt" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 14
    assert not smtp_server.messages

    with override_settings(**smtp_server.email_settings):
        assert mail_report.apply(kwargs={"report_id": report.pk}).get() == 2

    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.last_error) == ("sent", 8, "")
    assert len(smtp_server.messages) == 2


def test_no_mail_when_report_mail_is_switched_off(readers, smtp_server, eager_tasks) -> None:
    report = savings_report_generate(year=2026, month=10, reason="request", now=GENERATED)

    with override_settings(**smtp_server.email_settings, BILLING_REPORT_MAIL=False):
        assert mail_report.apply(kwargs={"report_id": report.pk}).get() == 0

    assert not smtp_server.messages
    assert not ReportDelivery.objects.exists()


def test_someone_no_longer_finance_when_the_mail_goes_is_not_sent_it(readers, smtp_server, eager_tasks) -> None:
    report = savings_report_generate(year=2026, month=10, reason="request", now=GENERATED)
    SiteGrant.objects.filter(user=readers["group"]).delete()
    from billing.report_mail import report_mail_send

    delivery = ReportDelivery.objects.create(report=report, user=readers["group"], email=readers["group"].email)
    with override_settings(**smtp_server.email_settings):
        report_mail_send(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == ReportDelivery.Status.FAILED
    assert not smtp_server.messages


def test_a_stored_report_is_told_to_report_webhooks_once_and_mailed_once_per_reader(
    readers, django_capture_on_commit_callbacks
) -> None:
    from balancing.notifications.models import EmailDelivery, NotificationEvent, WebhookDelivery
    from balancing.notifications.services import webhook_endpoint_create

    reports_hook, _ = webhook_endpoint_create(
        name="ERP",
        url="http://127.0.0.1:9/erp",
        kinds=["report_ready"],
        send_cleared=False,
        group_ids=[],
        actor="test",
    )
    webhook_endpoint_create(
        name="Pager",
        url="http://127.0.0.1:9/pager",
        kinds=["offline"],
        send_cleared=False,
        group_ids=[],
        actor="test",
    )
    with override_settings(BILLING_REPORT_MAIL=True), django_capture_on_commit_callbacks(execute=False):
        report = savings_report_generate(year=2026, month=10, reason="schedule")
        from billing.report_mail import report_mail_plan, report_ready_notify

        report_ready_notify(report=report)
        planned = report_mail_plan(report_id=report.pk)

    event = NotificationEvent.objects.get(type="report.ready")
    assert event.payload["report"]["month"] == "2026-10"
    assert event.payload["report"]["version"] == report.version
    assert {s["slug"] for s in event.payload["sites"]} == {readers["mall"].slug, readers["plaza"].slug}
    assert list(WebhookDelivery.objects.filter(event=event).values_list("endpoint", flat=True)) == [reports_hook.pk]
    assert not EmailDelivery.objects.filter(event=event).exists()  # the report mails itself, with its files
    assert sorted(ReportDelivery.objects.filter(pk__in=planned).values_list("email", flat=True)) == [
        "cfo@alpha.example",
        "north.fin@alpha.example",
    ]
