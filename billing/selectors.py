"""Reads of tariffs, interval energy, sessions and stored reports. Schema: tenant."""

import re
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db.models import Max, Q

from balancing.models import Site
from billing.counterfactual import SessionLoad
from billing.models import InstallationCostModel, IntervalEnergy, SavingsReport, SavingsReportFile, Tariff
from billing.tariffs import TariffSpec, tariff_from_urdb
from chargepoint.models import ChargingSession, ChargingStation

MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
SESSION_LOOKBACK_DAYS = 7  # a session that began this long before a month may still draw in it


def month_parse(value: str) -> tuple[int, int]:
    """``YYYY-MM`` -> (year, month); a ``ValidationError`` on ``month`` otherwise."""
    found = MONTH_PATTERN.match(value or "")
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 2000:
        raise ValidationError({"month": f"{value!r} is not a month; write YYYY-MM, e.g. 2026-10"})
    return int(found.group(1)), int(found.group(2))


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
    rows = IntervalEnergy.objects.filter(site=site, station__isnull=True, start__gte=start, start__lt=end)
    return dict(rows.values_list("start", "energy_kwh"))


def site_interval_resets(*, site: Site, start: datetime, end: datetime) -> int:
    rows = IntervalEnergy.objects.filter(site=site, station__isnull=True, start__gte=start, start__lt=end)
    return sum(rows.values_list("resets", flat=True))


def station_count(*, site: Site) -> int:
    return ChargingStation.objects.filter(site=site).count()


def rating_kw(station: ChargingStation, voltage_v: Decimal) -> Decimal:
    return Decimal(station.max_current_a) * station.phases * Decimal(voltage_v) / 1000


def site_sessions(*, site: Site, start: datetime, end: datetime) -> list[tuple[ChargingSession, SessionLoad]]:
    """Sessions that may draw in [start, end), with what the counterfactual needs of each."""
    from datetime import timedelta

    sessions = (
        ChargingSession.objects.filter(
            station__site=site, started_at__lt=end, started_at__gte=start - timedelta(days=SESSION_LOOKBACK_DAYS)
        )
        .filter(Q(stopped_at__isnull=True) | Q(stopped_at__gte=start))
        .select_related("station", "draw")
        .order_by("started_at", "pk")
    )
    voltage = Decimal(site.voltage_v)
    out = []
    for session in sessions:
        station = session.station
        draw = getattr(session, "draw", None)
        energy = session.energy_kwh
        if energy is None and session.meter_stop_wh is not None:
            energy = (session.meter_stop_wh - session.meter_start_wh) / 1000
        if energy is None and draw is not None and draw.register_energy_kwh is not None:
            energy = draw.register_energy_kwh
        declared = None
        if session.ev_max_current_a:
            declared = Decimal(session.ev_max_current_a) * station.phases * voltage / 1000
        out.append(
            (
                session,
                SessionLoad(
                    session_id=session.pk,
                    started_at=session.started_at,
                    stopped_at=session.stopped_at,
                    energy_kwh=max(Decimal(energy or 0), Decimal(0)),
                    rating_kw=rating_kw(station, voltage),
                    declared_kw=declared,
                    observed_kw=draw.observed_max_kw if draw is not None else None,
                ),
            )
        )
    return out


def site_timezone(site: Site) -> ZoneInfo:
    return ZoneInfo(site.timezone)


def report_latest(*, month: date) -> SavingsReport | None:
    return SavingsReport.objects.filter(month=month).order_by("-version").first()


def report_versions(*, month: date) -> list[SavingsReport]:
    return list(SavingsReport.objects.filter(month=month).order_by("version"))


def report_next_version(*, month: date) -> int:
    highest = SavingsReport.objects.filter(month=month).aggregate(v=Max("version"))["v"]
    return (highest or 0) + 1


def report_file(*, report: SavingsReport, file_format: str) -> SavingsReportFile:
    return SavingsReportFile.objects.get(report=report, format=file_format)
