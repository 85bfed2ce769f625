"""Reads of tariffs, interval energy, sessions and stored reports. Schema: tenant."""

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db.models import BigIntegerField, FloatField, Max, Q
from django.db.models.functions import Cast, Extract

from balancing.access import Access
from balancing.models import Site
from billing.counterfactual import SessionLoad
from billing.intervals import EPOCH
from billing.models import InstallationCostModel, IntervalEnergy, SavingsReport, SavingsReportFile, Tariff
from billing.tariffs import TariffSpec, tariff_from_urdb
from chargepoint.models import ChargingSession, ChargingStation
from evplatform.permissions import READ_REPORTS

MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
SESSION_LOOKBACK_DAYS = 7  # a session that began this long before a month may still draw in it


def month_parse(value: str, *, today: date | None = None) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); a ``ValidationError`` on ``month`` otherwise.

    With ``today``, a month that has not begun yet (anywhere) is refused too.
    """
    found = MONTH_PATTERN.match(value or "")
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 2000:
        raise ValidationError({"month": f"{value!r} is not a month; write YYYY-MM, e.g. 2026-10"})
    year, month = int(found.group(1)), int(found.group(2))
    if today is not None and date(year, month, 1) > today + timedelta(days=1):
        raise ValidationError({"month": f"{value} has not begun yet: there is nothing to report"})
    return year, month


def site_list() -> list[Site]:
    return list(Site.objects.order_by("slug"))


def tariff_in_force(*, site: Site, on: date) -> Tariff | None:
    """The newest tariff version of the site valid on the local date ``on``."""
    return (
        Tariff.objects.filter(site=site, valid_from__lte=on)
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=on))
        .order_by("-valid_from", "-version")
        .first()
    )


def tariff_spec(tariff: Tariff) -> TariffSpec:
    return tariff_from_urdb(tariff.record)


def installation_cost(*, site: Site) -> InstallationCostModel:
    """The site's cost model, or the brochure's defaults (unsaved) when none was entered."""
    found = InstallationCostModel.objects.filter(site=site).first()
    return found if found is not None else InstallationCostModel(site=site)


def site_intervals(*, site: Site, start: datetime, end: datetime) -> dict[datetime, Decimal]:
    """Site-total interval energy (UTC start -> kWh) in [start, end)."""
    return site_intervals_and_resets(site=site, start=start, end=end)[0]


def site_intervals_and_resets(*, site: Site, start: datetime, end: datetime) -> tuple[dict[datetime, Decimal], int]:
    """Site-total interval energy (UTC start -> kWh) in [start, end), and the register resets in it.

    Starts travel as epoch seconds: parsing a month of timestamps per site is most of the cost.
    """
    rows = (
        IntervalEnergy.objects.filter(site=site, station__isnull=True, start__gte=start, start__lt=end)
        .annotate(epoch=Cast(Extract("start", "epoch"), BigIntegerField()))
        .values_list("epoch", "energy_kwh", "resets")
    )
    intervals = {}
    resets = 0
    for epoch, kwh, count in rows:
        intervals[EPOCH + timedelta(seconds=epoch)] = kwh
        resets += count
    return intervals, resets


def station_count(*, site: Site) -> int:
    return ChargingStation.objects.filter(site=site).count()


def rating_kw(station: ChargingStation, voltage_v: Decimal) -> Decimal:
    return Decimal(station.max_current_a) * station.phases * Decimal(voltage_v) / 1000


@dataclass(frozen=True)
class SessionFacts:
    """A session as the report needs it: its counterfactual input and what it asked for."""

    load: SessionLoad
    energy_needed_kwh: Decimal | None
    was_capped: bool
    station_id: int | None = None


def site_sessions(*, site: Site, start: datetime, end: datetime) -> list[SessionFacts]:
    """Sessions that may draw in [start, end), with what the counterfactual needs of each.

    Read as plain values (no model instances): a large tenant has tens of thousands a month.
    """
    rows = (
        ChargingSession.objects.filter(
            station__site=site, started_at__lt=end, started_at__gte=start - timedelta(days=SESSION_LOOKBACK_DAYS)
        )
        .filter(Q(stopped_at__isnull=True) | Q(stopped_at__gte=start))
        .order_by("started_at", "pk")
        .annotate(
            started_epoch=Cast(Extract("started_at", "epoch"), FloatField()),
            stopped_epoch=Cast(Extract("stopped_at", "epoch"), FloatField()),
        )
        .values_list(
            "pk",
            "station_id",
            "started_epoch",
            "stopped_epoch",
            "energy_kwh",
            "meter_start_wh",
            "meter_stop_wh",
            "ev_max_current_a",
            "energy_needed_kwh",
            "station__max_current_a",
            "station__phases",
            "draw__observed_max_kw",
            "draw__was_capped",
            "draw__register_energy_kwh",
        )
    )
    voltage = Decimal(site.voltage_v)
    out = []
    for (
        pk,
        station_id,
        started_epoch,
        stopped_epoch,
        energy,
        meter_start_wh,
        meter_stop_wh,
        ev_max_a,
        needed_kwh,
        max_a,
        phases,
        observed_kw,
        was_capped,
        register_kwh,
    ) in rows:
        if energy is None and meter_stop_wh is not None:
            energy = (meter_stop_wh - meter_start_wh) / 1000
        if energy is None:
            energy = register_kwh
        kw_per_a = phases * voltage / 1000
        load = SessionLoad(
            session_id=pk,
            started_at=EPOCH + timedelta(seconds=started_epoch),
            stopped_at=None if stopped_epoch is None else EPOCH + timedelta(seconds=stopped_epoch),
            energy_kwh=max(Decimal(energy or 0), Decimal(0)),
            rating_kw=Decimal(max_a) * kw_per_a,
            declared_kw=Decimal(ev_max_a) * kw_per_a if ev_max_a else None,
            observed_kw=observed_kw,
        )
        out.append(SessionFacts(load, needed_kwh, bool(was_capped), station_id))
    return out


def site_timezone(site: Site) -> ZoneInfo:
    return ZoneInfo(site.timezone)


def report_latest(*, month: date) -> SavingsReport | None:
    return SavingsReport.objects.filter(month=month).order_by("-version").first()


def report_latest_data(*, months: list[date]) -> dict[date, dict[str, Any]]:
    """The ``data`` of the latest stored version of each of these months that has one."""
    found: dict[date, dict[str, Any]] = {}
    rows = SavingsReport.objects.filter(month__in=months).order_by("month", "-version").values_list("month", "data")
    for month, data in rows:
        found.setdefault(month, data)
    return found


@dataclass(frozen=True)
class ReportMonth:
    """A month of the reports page: its latest stored version and the older ones, newest first."""

    month: date
    latest: SavingsReport
    older: list[SavingsReport]


def report_months() -> list[ReportMonth]:
    """Every month with a stored report, newest first, with its versions and their files."""
    by_month: dict[date, list[SavingsReport]] = defaultdict(list)
    for report in SavingsReport.objects.prefetch_related("files").order_by("-month", "-version"):
        by_month[report.month].append(report)
    return [ReportMonth(month, versions[0], versions[1:]) for month, versions in by_month.items()]


def report_find(*, pk: int) -> SavingsReport | None:
    return SavingsReport.objects.filter(pk=pk).first()


def report_versions(*, month: date) -> list[SavingsReport]:
    return list(SavingsReport.objects.filter(month=month).order_by("version"))


def report_next_version(*, month: date) -> int:
    highest = SavingsReport.objects.filter(month=month).aggregate(v=Max("version"))["v"]
    return (highest or 0) + 1


def report_file(*, report: SavingsReport, file_format: str) -> SavingsReportFile:
    return SavingsReportFile.objects.get(report=report, format=file_format)


def report_site_ids(access: Access) -> set[int] | None:
    """The sites whose figures this reader may see in a report: those where it holds a role that
    reads reports (finance, admin, energy manager); None for the whole organisation."""
    ids = access.site_ids()
    if ids is None:
        if access.org_role in READ_REPORTS:
            return None
        ids = set(access.site_roles)
    return {site_id for site_id in ids if access.can(READ_REPORTS, site_id, write=False)}


def site_slugs(*, site_ids: set[int]) -> set[str]:
    return set(Site.objects.filter(pk__in=site_ids).values_list("slug", flat=True))


@dataclass(frozen=True)
class ReportContent:
    """A report file as one reader gets it: the stored file, or a rendering narrowed to its sites."""

    content: bytes
    sha256: str
    scoped: bool


SCOPED_CACHE_S = 24 * 3600
SCOPED_CACHE_MAX_BYTES = 2 * 1024 * 1024


def report_data_for(*, report: SavingsReport, site_ids: set[int] | None) -> dict[str, Any] | None:
    """The report's figures narrowed to ``site_ids``; None when the stored report is already
    theirs (the whole organisation, or every site it holds is in reach)."""
    from billing.reports.scope import report_covers_all, report_data_narrow

    if site_ids is None:
        return None
    slugs = site_slugs(site_ids=site_ids)
    if report_covers_all(report.data, site_ids=site_ids, site_slugs=slugs):
        return None
    return report_data_narrow(report.data, site_ids=site_ids, site_slugs=slugs)


def report_content(*, report: SavingsReport, file_format: str, site_ids: set[int] | None) -> ReportContent | None:
    """The file a reader of ``site_ids`` (None: every site) downloads; None if the version has no
    such format. Narrowed renderings are cached a day by report, format and sites (a stored
    version never changes, so neither does its narrowing)."""
    import hashlib

    from django.core.cache import cache

    from billing.reports import render

    stored = SavingsReportFile.objects.filter(report=report, format=file_format).first()
    if stored is None:
        return None
    narrowed = report_data_for(report=report, site_ids=site_ids)
    if narrowed is None:
        return ReportContent(bytes(stored.content), stored.sha256, scoped=False)
    sites = ",".join(map(str, sorted(site_ids or ())))
    key = f"billing:scoped-report:{report.pk}:{report.data_sha256}:{file_format}:{sites}"
    content = cache.get(key)
    if content is None:
        content = render(narrowed, file_format)
        if len(content) <= SCOPED_CACHE_MAX_BYTES:
            cache.set(key, content, SCOPED_CACHE_S)
    return ReportContent(content, hashlib.sha256(content).hexdigest(), scoped=True)
