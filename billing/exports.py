"""Charging sessions of a period as CSV or XLSX, with a charge-back by site group. Schema: tenant.

One row per session that started in the period (each site's own local month or dates): site,
its groups, charger, connector, start and stop (site local time), kWh, peak kW and the energy
cost at the site's tariff. The charge-back adds sessions, kWh and cost up per site group (a site
in two groups counts in both; sites in no group make the ``ungrouped`` line) and once overall.
Only the sites given (the reader's reach) are read.

Peak kW is the station's highest 15-minute average while the session ran (the rollup's
interval energy, the same basis as demand charges). The energy cost prices the session's kWh
by the tariff's time-of-use period of each interval it drew in, spread as its station drew
(evenly over the session where the station has no intervals); demand and fixed charges are
not split over sessions. It is left blank, with the reason in ``cost_note``, where it cannot be
told: no tariff, a tariff that does not parse, tiered energy prices (a session's tier depends
on the site's whole month), or no energy reading.
"""

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import BigIntegerField
from django.db.models.functions import Cast, Extract
from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.styles import Font  # type: ignore[import-untyped]

from balancing.models import Site, SiteGroup
from billing.intervals import DEFAULT_INTERVAL_MINUTES, EPOCH, ZERO
from billing.models import IntervalEnergy
from billing.reports.rows import money
from billing.selectors import site_timezone, tariff_in_force, tariff_spec
from billing.tariffs import TariffError, TariffSpec, month_bounds
from chargepoint.models import ChargingSession
from evplatform.spreadsheets import csv_row, xlsx_append

UNGROUPED = "ungrouped"
MAX_DAYS = 366
STEP = timedelta(minutes=DEFAULT_INTERVAL_MINUTES)
KWH = Decimal("0.001")
SESSION_COLUMNS = (
    "site",
    "site_name",
    "groups",
    "charger",
    "connector",
    "transaction_id",
    "started_at",
    "stopped_at",
    "energy_kwh",
    "peak_kw",
    "energy_cost",
    "cost_note",
)
CHARGEBACK_COLUMNS = ("group", "group_name", "sites", "sessions", "energy_kwh", "energy_cost", "sessions_without_cost")
NOTES = (
    "Sessions that started in the period, in each site's own time zone.",
    "peak_kw: the station's highest 15-minute average while the session ran.",
    "energy_cost: the session's kWh priced by the site's tariff in force on its start day, by the time-of-use "
    "period of each 15 minutes it drew in; demand and fixed charges are not split over sessions.",
    "A blank energy_cost says why in cost_note; the charge-back adds up the costs it has and counts the "
    "sessions without one.",
    "Charge-back: a site in two groups counts in both; sites in no group are the 'ungrouped' line; "
    "TOTAL counts each session once.",
)


@dataclass(frozen=True)
class Period:
    """Local dates [first, last] (inclusive) at every site, or a month in each site's zone."""

    first: date
    last: date
    label: str

    def bounds(self, site: Site) -> tuple[datetime, datetime]:
        tz = site_timezone(site)
        if self.first.day == 1 and self.last == _month_last(self.first):
            return month_bounds(self.first.year, self.first.month, tz)
        start = datetime(self.first.year, self.first.month, self.first.day, tzinfo=tz)
        after = self.last + timedelta(days=1)
        return start, datetime(after.year, after.month, after.day, tzinfo=tz)


def _month_last(first: date) -> date:
    after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return after - timedelta(days=1)


def period_of_month(year: int, month: int) -> Period:
    first = date(year, month, 1)
    return Period(first, _month_last(first), f"{year:04d}-{month:02d}")


def period_of_dates(first: date, last: date) -> Period:
    return Period(first, last, f"{first.isoformat()}_{last.isoformat()}")


@dataclass
class SessionRow:
    site: str
    site_name: str
    groups: list[str]
    charger: str
    connector: int
    transaction_id: str
    started_at: datetime
    stopped_at: datetime | None
    energy_kwh: Decimal | None
    peak_kw: Decimal | None
    energy_cost: Decimal | None
    cost_note: str


@dataclass
class ChargeBack:
    group: str
    group_name: str
    sites: list[str] = field(default_factory=list)
    sessions: int = 0
    energy_kwh: Decimal = ZERO
    energy_cost: Decimal = ZERO
    sessions_without_cost: int = 0

    def add(self, row: SessionRow) -> None:
        self.sessions += 1
        self.energy_kwh += row.energy_kwh or ZERO
        if row.energy_cost is None:
            self.sessions_without_cost += 1
        else:
            self.energy_cost += row.energy_cost


@dataclass
class SessionExport:
    period: Period
    rows: list[SessionRow]
    chargeback: list[ChargeBack]
    total: ChargeBack


def _station_intervals(site: Site, start: datetime, end: datetime) -> dict[int, list[tuple[datetime, Decimal]]]:
    rows = (
        IntervalEnergy.objects.filter(site=site, station__isnull=False, start__gte=start - STEP, start__lt=end)
        .annotate(epoch=Cast(Extract("start", "epoch"), BigIntegerField()))
        .order_by("station_id", "start")
        .values_list("station_id", "epoch", "energy_kwh")
    )
    out: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for station_id, epoch, kwh in rows:
        out[station_id].append((EPOCH + timedelta(seconds=epoch), kwh))
    return out


class _Pricing:
    """The site's energy prices by day (tariff versions may change within a period)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.by_day: dict[date, tuple[TariffSpec | None, str]] = {}

    def on(self, day: date) -> tuple[TariffSpec | None, str]:
        if day not in self.by_day:
            tariff = tariff_in_force(site=self.site, on=day)
            if tariff is None:
                self.by_day[day] = (None, "no tariff in force")
            else:
                try:
                    spec = tariff_spec(tariff)
                except TariffError as exc:
                    self.by_day[day] = (None, f"tariff v{tariff.version} not billable: {exc}")
                else:
                    tiered = any(len(tiers) != 1 for tiers in spec.energy_periods)
                    self.by_day[day] = (None, "tiered energy prices: see the monthly report") if tiered else (spec, "")
        return self.by_day[day]


def _session_cost(
    spec: TariffSpec, site: Site, energy: Decimal, started: datetime, stopped: datetime | None, drawn: list[Any]
) -> Decimal:
    """``energy`` kWh priced by period: spread as the station drew, else evenly over the session."""
    tz = site_timezone(site)
    prices = [tiers[0].price for tiers in spec.energy_periods]
    if len(set(prices)) == 1:
        return energy * prices[0]
    weights = [(at, kwh) for at, kwh in drawn if kwh > 0]
    if not weights:
        end = stopped if stopped is not None and stopped > started else started + STEP
        weights, at = [], started
        while at < end:
            weights.append((at, Decimal(1)))
            at += STEP
    whole = sum((kwh for _, kwh in weights), ZERO)
    return sum((energy * kwh / whole * prices[spec.energy_period(at.astimezone(tz))] for at, kwh in weights), ZERO)


def _energy(values: Mapping[str, Any]) -> Decimal | None:
    if values["energy_kwh"] is not None:
        return Decimal(values["energy_kwh"])
    if values["meter_stop_wh"] is not None:
        return max((values["meter_stop_wh"] - values["meter_start_wh"]) / 1000, ZERO)
    if values["draw__register_energy_kwh"] is not None:
        return Decimal(values["draw__register_energy_kwh"])
    return None


def sessions_export(*, site_ids: set[int] | None, period: Period) -> SessionExport:
    """Every session of the sites (None: all) that started in the period, and the charge-back."""
    sites = list(Site.objects.order_by("slug") if site_ids is None else Site.objects.filter(pk__in=site_ids))
    sites.sort(key=lambda s: s.slug)
    memberships = SiteGroup.sites.through.objects.filter(site_id__in=[s.pk for s in sites])
    groups_of: dict[int, list[SiteGroup]] = defaultdict(list)
    group_by_id = {g.pk: g for g in SiteGroup.objects.filter(pk__in=memberships.values("sitegroup_id"))}
    for site_id, group_id in memberships.values_list("site_id", "sitegroup_id"):
        groups_of[site_id].append(group_by_id[group_id])
    lines = {g.pk: ChargeBack(g.slug, g.name) for g in sorted(group_by_id.values(), key=lambda g: (g.name, g.slug))}
    ungrouped = ChargeBack(UNGROUPED, "Sites in no group")
    total = ChargeBack("TOTAL", "All sites in this export")
    rows: list[SessionRow] = []
    for site in sites:
        groups = sorted(groups_of[site.pk], key=lambda g: (g.name, g.slug))
        for group in groups:
            lines[group.pk].sites.append(site.slug)
        if not groups:
            ungrouped.sites.append(site.slug)
        total.sites.append(site.slug)
        start, end = period.bounds(site)
        intervals = _station_intervals(site, start, end + timedelta(days=2))
        pricing = _Pricing(site)
        tz = site_timezone(site)
        sessions = (
            ChargingSession.objects.filter(station__site=site, started_at__gte=start, started_at__lt=end)
            .order_by("started_at", "pk")
            .values(
                "station_id",
                "station__charge_point_id",
                "connector__connector_id",
                "transaction_id",
                "started_at",
                "stopped_at",
                "energy_kwh",
                "meter_start_wh",
                "meter_stop_wh",
                "draw__register_energy_kwh",
            )
        )
        for values in sessions:
            started, stopped = values["started_at"], values["stopped_at"]
            window_start = started - STEP
            drawn = [
                (at, kwh)
                for at, kwh in intervals.get(values["station_id"], [])
                if window_start < at and (stopped is None or at < stopped)
            ]
            peak = max((kwh for _, kwh in drawn), default=None)
            energy = _energy(values)
            spec, note = pricing.on(started.astimezone(tz).date())
            cost = None
            if energy is None:
                note = "no energy reading"
            elif spec is not None:
                cost = _session_cost(spec, site, energy, started, stopped, drawn)
            row = SessionRow(
                site=site.slug,
                site_name=site.name,
                groups=[g.slug for g in groups],
                charger=values["station__charge_point_id"],
                connector=values["connector__connector_id"],
                transaction_id=values["transaction_id"],
                started_at=started.astimezone(tz),
                stopped_at=None if stopped is None else stopped.astimezone(tz),
                energy_kwh=None if energy is None else energy.quantize(KWH),
                peak_kw=None if peak is None else (peak * 60 / DEFAULT_INTERVAL_MINUTES).quantize(KWH),
                energy_cost=cost,
                cost_note=note,
            )
            rows.append(row)
            total.add(row)
            for group in groups:
                lines[group.pk].add(row)
            if not groups:
                ungrouped.add(row)
    chargeback = [line for line in lines.values() if line.sites]
    if ungrouped.sites:
        chargeback.append(ungrouped)
    return SessionExport(period=period, rows=rows, chargeback=chargeback, total=total)


def _session_cells(row: SessionRow) -> list[Any]:
    return [
        row.site,
        row.site_name,
        "; ".join(row.groups),
        row.charger,
        row.connector,
        row.transaction_id,
        row.started_at.isoformat(),
        "" if row.stopped_at is None else row.stopped_at.isoformat(),
        row.energy_kwh,
        row.peak_kw,
        None if row.energy_cost is None else money(row.energy_cost),
        row.cost_note,
    ]


def _chargeback_cells(line: ChargeBack) -> list[Any]:
    return [
        line.group,
        line.group_name,
        "; ".join(line.sites),
        line.sessions,
        line.energy_kwh.quantize(KWH),
        money(line.energy_cost),
        line.sessions_without_cost,
    ]


def _csv(header: Iterable[str], rows: Iterable[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(csv_row(header))
    for row in rows:
        writer.writerow(csv_row(row))
    return buffer.getvalue().encode("utf-8")


def render_sessions_csv(export: SessionExport) -> bytes:
    return _csv(SESSION_COLUMNS, (_session_cells(row) for row in export.rows))


def render_chargeback_csv(export: SessionExport) -> bytes:
    lines = [*export.chargeback, export.total]
    return _csv(CHARGEBACK_COLUMNS, (_chargeback_cells(line) for line in lines))


def _xlsx_value(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def render_sessions_xlsx(export: SessionExport) -> bytes:
    """Sheets: Sessions, Charge-back (per group, ungrouped, TOTAL) and Notes."""
    wb = Workbook()
    sheet = wb.active
    sheet.title = "Sessions"
    xlsx_append(sheet, SESSION_COLUMNS)
    for row in export.rows:
        xlsx_append(sheet, [_xlsx_value(v) for v in _session_cells(row)])
    chargeback = wb.create_sheet("Charge-back")
    xlsx_append(chargeback, CHARGEBACK_COLUMNS)
    for group_line in [*export.chargeback, export.total]:
        xlsx_append(chargeback, [_xlsx_value(v) for v in _chargeback_cells(group_line)])
    for ws in (sheet, chargeback):
        for cell in ws[1]:
            cell.font = Font(bold=True)
        ws.freeze_panes = "A2"
    notes = wb.create_sheet("Notes")
    xlsx_append(notes, [f"Charging sessions, {export.period.label}"])
    for line in NOTES:
        xlsx_append(notes, [line])
    notes.column_dimensions["A"].width = 140
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


EXPORT_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def sessions_export_file(export: SessionExport, *, file_format: str, part: str) -> tuple[bytes, str]:
    """The file's bytes and name: XLSX holds both parts; a CSV holds the sessions or the charge-back."""
    if file_format == "xlsx":
        return render_sessions_xlsx(export), f"sessions-{export.period.label}.xlsx"
    if part == "chargeback":
        return render_chargeback_csv(export), f"chargeback-{export.period.label}.csv"
    return render_sessions_csv(export), f"sessions-{export.period.label}.csv"
