"""Mail a stored savings report to the finance people of the organisation. Schema: tenant.

Each person holding the finance role on a site of the report (on the whole organisation, a
site group or a site), or who asked for "Monthly report ready" on their notification settings
(``balancing.notifications.routing.email_recipients``), gets one mail: the report narrowed
to the sites they may read reports of, or for the whole organisation the stored files as they
are. The mail has the PDF (summary first), the CSV and the XLSX attached and a short text with
the headline figures. A ``ReportDelivery`` row per person and version records what was sent
and whether it went; the task (``billing.tasks.mail_report_to``) retries a failed send and
marks the row failed when its retries are spent. ``BILLING_REPORT_MAIL`` off sends nothing.
"""

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from balancing.access import access_for_user
from balancing.notifications.models import REPORT_READY, EventType
from balancing.notifications.routing import email_recipients
from balancing.notifications.services import notification_emit, portal_link
from billing.models import ReportDelivery, SavingsReport
from billing.reports import CONTENT_TYPES, FORMATS, render
from billing.reports.render_pdf import month_label
from billing.reports.rows import POLICY_COLUMNS, POLICY_LABELS, SIMULATED, money
from billing.selectors import report_data_for, report_site_ids
from tenants.accounts.models import User

logger = logging.getLogger(__name__)

ERROR_CHARS = 500


def report_mail_site_ids(*, report: SavingsReport) -> set[int]:
    """The sites a report holds (by id; by slug for a report stored before ids were kept)."""
    from balancing.models import Site

    ids = {site["site_id"] for site in report.data["sites"] if "site_id" in site}
    slugs = {site["slug"] for site in report.data["sites"] if "site_id" not in site}
    if slugs:
        ids |= set(Site.objects.filter(slug__in=slugs).values_list("pk", flat=True))
    return ids


def report_mail_recipients(*, report: SavingsReport) -> list[User]:
    """Active people to mail the report to: by default those holding finance on a site of the
    report; a person's notification settings ("Monthly report ready") add or drop them."""
    return email_recipients(kind=REPORT_READY, site_ids=report_mail_site_ids(report=report))


def report_ready_notify(*, report: SavingsReport) -> None:
    """Tell the webhooks subscribed to ``report_ready`` that a report version is stored (people get
    the report itself by mail, ``report_mail_plan``)."""
    path = reverse("portal:reports")
    month = f"{report.month:%Y-%m}"
    notification_emit(
        kind=REPORT_READY,
        event_type=EventType.REPORT_READY,
        site_ids=sorted(report_mail_site_ids(report=report)),
        subject=f"Savings report {month_label(month)} is ready (version {report.version})",
        body=f"Savings report {month_label(month)} version {report.version} is stored: {portal_link(path)}",
        link=portal_link(path),
        email=False,
        data={
            "report": {
                "id": report.pk,
                "month": month,
                "version": report.version,
                "reason": report.reason,
                "generated_at": report.generated_at,
                "data_sha256": report.data_sha256,
                "url": portal_link(path),
            }
        },
    )


def report_mail_plan(*, report_id: int) -> list[int]:
    """A delivery row for each recipient of the report (none twice); the ids of those not sent yet."""
    report = SavingsReport.objects.get(pk=report_id)
    if not settings.BILLING_REPORT_MAIL:
        return []
    pending = []
    for user in report_mail_recipients(report=report):
        delivery, _ = ReportDelivery.objects.get_or_create(report=report, email=user.email, defaults={"user": user})
        if delivery.status != ReportDelivery.Status.SENT:
            pending.append(delivery.pk)
    return pending


def _tenant_name() -> tuple[str, str]:
    tenant = getattr(connection, "tenant", None)
    domain = ""
    if tenant is not None and hasattr(tenant, "get_primary_domain"):
        primary = tenant.get_primary_domain()
        domain = primary.domain if primary is not None else ""
    return getattr(tenant, "name", "") or getattr(tenant, "slug", ""), domain


def _policies_line(total: dict[str, Any]) -> list[str]:
    """The month's bill under each policy, where every site of the report has it."""
    bills = [(POLICY_LABELS[c], total.get(c, {}).get("bill_total")) for c in ("unmanaged", *POLICY_COLUMNS)]
    if any(bill is None for _, bill in bills):
        return []
    shown = ", ".join(f"{label} ${money(bill):,.2f}" for label, bill in bills)
    return [f"Bill by policy: {shown} (the policy each site did not run is {SIMULATED})"]


def _body(data: dict[str, Any], org: str, domain: str) -> str:
    total, month = data["total"], month_label(data["month"])
    scope = data.get("scope")
    sites = f"the sites you are responsible for: {', '.join(scope['sites'])}" if scope else "every site"
    lines = [
        f"Savings report {month} for {org} ({sites}).",
        "",
        f"Savings this month: ${money(total['savings']['total']):,.2f} "
        f"(demand charges avoided ${money(total['savings']['demand_charge']):,.2f}, "
        f"energy cost ${money(total['savings']['energy_cost']):,.2f})",
        f"Peak demand: {Decimal(total['actual']['peak_kw']):,.1f} kW managed "
        f"vs {Decimal(total['unmanaged']['peak_kw']):,.1f} kW unmanaged",
        *_policies_line(total),
        f"Energy delivered: {Decimal(total['energy_delivered_kwh']):,.1f} kWh",
        f"Electrical upgrade avoided (one-time): ${money(total['avoided_capital_cost']):,.2f}",
    ]
    ytd = data.get("year_to_date")
    if ytd:
        lines.append(
            f"Year to date ({month_label(ytd['months'][0])} to {month}): "
            f"${money(ytd['total']['savings_total']):,.2f} saved"
        )
    lines += [
        "",
        "Attached: the report as PDF (a one-page summary first, then every figure per site), CSV and XLSX.",
    ]
    if domain:
        lines.append(f"Every version is in the portal: https://{domain}/reports/")
    return "\n".join(lines) + "\n"


def report_mail_message(*, report: SavingsReport, user: User) -> tuple[EmailMessage, set[int] | None] | None:
    """The mail for ``user``: the report narrowed to the sites it reads reports of (None: all);
    None when it reaches none of the report's sites."""
    site_ids = report_site_ids(access_for_user(user))
    if site_ids is not None and not site_ids & report_mail_site_ids(report=report):
        return None
    narrowed = report_data_for(report=report, site_ids=site_ids)
    data = narrowed if narrowed is not None else report.data
    org, domain = _tenant_name()
    month = month_label(data["month"])
    message = EmailMessage(
        subject=f"Savings report {month} — {org}",
        body=_body(data, org, domain),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[user.email],
    )
    stored = {f.format: bytes(f.content) for f in report.files.all()}
    suffix = "-your-sites" if narrowed is not None else ""
    for fmt in ("pdf", *(f for f in FORMATS if f != "pdf")):
        if fmt not in stored:
            continue
        content = render(narrowed, fmt) if narrowed is not None else stored[fmt]
        filename = f"savings-{report.month:%Y-%m}-v{report.version}{suffix}.{fmt}"
        message.attach(filename, content, CONTENT_TYPES[fmt].split(";")[0])
    return message, (None if narrowed is None else site_ids)


def report_mail_send(*, delivery_id: int) -> ReportDelivery:
    """Send one recipient's mail of a report and record it; an SMTP or network error is recorded
    on the row and raised again (the task retries it)."""
    delivery = ReportDelivery.objects.select_related("report", "user").get(pk=delivery_id)
    if delivery.status == ReportDelivery.Status.SENT:
        return delivery
    user = delivery.user
    built = None if user is None or not user.is_active else report_mail_message(report=delivery.report, user=user)
    if built is None:
        delivery.status, delivery.last_error = ReportDelivery.Status.FAILED, "no longer a finance reader of its sites"
        delivery.save(update_fields=["status", "last_error", "updated_at"])
        return delivery
    message, site_ids = built
    delivery.attempts += 1
    delivery.site_ids = None if site_ids is None else sorted(site_ids)
    try:
        message.send(fail_silently=False)
    except Exception as exc:
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        delivery.save(update_fields=["attempts", "site_ids", "last_error", "updated_at"])
        logger.warning(
            "report %s mail to %s failed (attempt %s): %s",
            delivery.report_id,
            delivery.email,
            delivery.attempts,
            delivery.last_error,
        )
        raise
    delivery.status, delivery.sent_at, delivery.last_error = ReportDelivery.Status.SENT, timezone.now(), ""
    delivery.save(update_fields=["attempts", "site_ids", "status", "sent_at", "last_error", "updated_at"])
    return delivery


def report_delivery_fail(*, delivery_id: int, error: str) -> None:
    """The send's retries are spent: the row says so, and the log says it at error level."""
    with transaction.atomic():
        delivery = ReportDelivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status == ReportDelivery.Status.SENT:
            return
        delivery.status = ReportDelivery.Status.FAILED
        delivery.last_error = (error or delivery.last_error)[:ERROR_CHARS]
        delivery.save(update_fields=["status", "last_error", "updated_at"])
    logger.error(
        "report %s mail to %s failed after %s attempts: %s",
        delivery.report_id,
        delivery.email,
        delivery.attempts,
        delivery.last_error,
    )
