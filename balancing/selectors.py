"""Reads of sites and circuits. Schema: tenant."""

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.core.exceptions import ObjectDoesNotExist
from django.db import connection
from django.db.models import Count, DateTimeField, F, FloatField, Func, Max, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Greatest

from balancing.engine import Result
from balancing.models import (
    BalancingRun,
    ChargerModelCompliance,
    Circuit,
    ConnectorLimit,
    ProfilePush,
    Site,
    SiteAlert,
    SiteLimitSchedule,
    SiteMeterReading,
)
from balancing.problem import evse_id
from chargepoint.models import ChargingStation, Connector


class SiteNotFoundError(ObjectDoesNotExist):
    field = "site"

    def __init__(self, slug: str) -> None:
        super().__init__(f"no site with slug {slug!r} in this organisation")
        self.slug = slug


class CircuitNotFoundError(ObjectDoesNotExist):
    field = "circuit"

    def __init__(self, site: Site, name: str) -> None:
        super().__init__(f"no circuit named {name!r} in site {site.slug!r}")
        self.name = name


def site_get(*, slug: str) -> Site:
    site = Site.objects.filter(slug=slug).first()
    if site is None:
        raise SiteNotFoundError(slug)
    return site


def circuit_get(*, site: Site, name: str) -> Circuit:
    circuit = Circuit.objects.filter(site=site, name=name).first()
    if circuit is None:
        raise CircuitNotFoundError(site, name)
    return circuit


def site_ids() -> list[int]:
    return list(Site.objects.order_by("pk").values_list("pk", flat=True))


# --- Portal and API reads -------------------------------------------------------------------

ALERT_WINDOW = timedelta(hours=1)
CLEARED_ALERTS_SHOWN = timedelta(hours=24)
AT_CAP_FOR = timedelta(minutes=30)
AT_CAP_SHARE = 0.98


@dataclass
class SiteRow:
    """One line of the sites overview."""

    site: Site
    load_kw: float | None
    limit_kw: float | None
    load_share: float | None
    online: int
    charging: int
    faulted: int
    stations: int
    peak_today_kw: float | None
    alerts: list[str] = field(default_factory=list)
    last_run_at: datetime | None = None
    open_alerts: list[SiteAlert] = field(default_factory=list)


def _site_day_start(site: Site, now: datetime) -> datetime:
    local = now.astimezone(zoneinfo.ZoneInfo(site.timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def site_overview(
    *, now: datetime, search: str = "", sort: str = "name", sites: QuerySet[Site] | None = None
) -> list[SiteRow]:
    """Every site (of ``sites``: those in someone's reach) with its live load against its limit,
    charger counts, today's peak and alerts.

    A constant number of queries whatever the number of sites.
    """
    chosen = Site.objects.all() if sites is None else sites
    shown = list(chosen.filter(Q(name__icontains=search) | Q(slug__icontains=search)) if search else chosen)
    ids = [s.pk for s in shown]
    # Each site's latest run by one probe of its (site, -started_at) index, not a walk over all its runs.
    latest_ids = Site.objects.filter(pk__in=ids).annotate(
        latest=Subquery(BalancingRun.objects.filter(site=OuterRef("pk")).order_by("-started_at").values("pk")[:1])
    )
    latest_runs = {
        run.site_id: run for run in BalancingRun.objects.filter(pk__in=latest_ids.exclude(latest=None).values("latest"))
    }
    station_counts = {
        row["site_id"]: row
        for row in ChargingStation.objects.filter(site_id__in=ids, is_site_meter=False)
        .values("site_id")
        .annotate(total=Count("id"), online=Count("id", filter=Q(is_online=True)))
    }
    connector_counts = {
        row["station__site_id"]: row
        for row in Connector.objects.filter(station__site_id__in=ids)
        .values("station__site_id")
        .annotate(
            charging=Count("id", filter=Q(status=Connector.Status.CHARGING)),
            faulted=Count("id", filter=Q(status=Connector.Status.FAULTED)),
        )
    }
    # Today's peak per site, its day starting at midnight in the site's own zone: two queries.
    today = runs_seen_since({site.pk: _site_day_start(site, now) for site in shown})
    peaks: dict[int, float] = dict(
        BalancingRun.objects.filter(today, measured_kw__isnull=False)
        .values("site_id")
        .annotate(peak=Max("measured_kw"))
        .values_list("site_id", "peak")
    )
    rejected = set(
        ProfilePush.objects.filter(run__site_id__in=ids, sent_at__gte=now - ALERT_WINDOW)
        .exclude(status="Accepted")
        .values_list("run__site_id", flat=True)
    )
    open_alerts: dict[int, list[SiteAlert]] = {}
    for alert in SiteAlert.objects.filter(site_id__in=ids, cleared_at__isnull=True).select_related(
        "station", "connector__station"
    ):
        open_alerts.setdefault(alert.site_id, []).append(alert)
    recent_runs: dict[int, list[tuple[float | None, float | None]]] = {}
    for site_id, allocated, limit, repeats in BalancingRun.objects.filter(
        runs_seen_since(dict.fromkeys(ids, now - AT_CAP_FOR))
    ).values_list("site_id", "allocated_kw", "limit_kw", "repeats"):
        recent_runs.setdefault(site_id, []).extend([(allocated, limit)] * (1 + repeats))  # a repeat is a run too

    rows = []
    for site in shown:
        run = latest_runs.get(site.pk)
        counts = station_counts.get(site.pk, {"total": 0, "online": 0})
        conn = connector_counts.get(site.pk, {"charging": 0, "faulted": 0})
        limit_kw = (
            run.limit_kw
            if run and run.limit_kw is not None
            else (float(site.demand_cap_kw) if site.demand_cap_kw is not None else None)
        )
        load_kw = run.measured_kw if run else None
        alerts = []
        offline = counts["total"] - counts["online"]
        if offline:
            alerts.append(f"{offline} charger{'s' if offline > 1 else ''} offline")
        if site.pk in rejected:
            alerts.append("a charger refused a profile in the last hour")
        history = recent_runs.get(site.pk, [])
        if len(history) >= 3 and all(a is not None and lim and a >= AT_CAP_SHARE * lim for a, lim in history):
            alerts.append("at its limit for 30 minutes")
        site_alerts = open_alerts.get(site.pk, [])
        alerts.extend(alert_summary(alert) for alert in site_alerts)
        rows.append(
            SiteRow(
                site=site,
                load_kw=load_kw,
                limit_kw=limit_kw,
                load_share=(load_kw / limit_kw) if load_kw is not None and limit_kw else None,
                online=counts["online"],
                charging=conn["charging"],
                faulted=conn["faulted"],
                stations=counts["total"],
                peak_today_kw=peaks.get(site.pk),
                alerts=alerts,
                last_run_at=run.last_seen_at if run else None,
                open_alerts=site_alerts,
            )
        )
    keys = {
        "name": lambda r: r.site.name.lower(),
        "load": lambda r: -(r.load_kw or 0.0),
        "share": lambda r: -(r.load_share or 0.0),
        "alerts": lambda r: -len(r.alerts),
        "peak": lambda r: -(r.peak_today_kw or 0.0),
        "chargers": lambda r: -r.stations,
    }
    return sorted(rows, key=keys.get(sort, keys["name"]))


def _runs_spanning(since_by_site: Mapping[int, datetime]) -> list[int]:
    """Runs that started before their site's time and were repeated at or after it.

    At most one a site: a run is repeated only while it is its site's latest, so the only
    candidate is the site's last run started before the time. One index probe per site (a lateral
    join on ``run_site_latest``), however many runs the site has.
    """
    if not since_by_site:
        return []
    table = BalancingRun._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT r.id
            FROM unnest(%s::bigint[], %s::timestamptz[]) AS s(site_id, since)
            CROSS JOIN LATERAL (
                SELECT id, last_repeated_at FROM {table}
                WHERE site_id = s.site_id AND started_at < s.since
                ORDER BY started_at DESC LIMIT 1
            ) r
            WHERE r.last_repeated_at >= s.since
            """,  # noqa: S608 - the table name is the model's own
            [list(since_by_site), list(since_by_site.values())],
        )
        return [row[0] for row in cursor.fetchall()]


def runs_seen_since(since_by_site: Mapping[int, datetime]) -> Q:
    """Runs of these sites that ran at or after each site's time: started since, or repeated since.

    A run counted in another's ``repeats`` ran at that run's ``last_repeated_at`` at the latest;
    ``last_repeated_at`` has no index (so that counting a repeat is a HOT update), hence the
    lateral probe for the one run a site may have that began before its time.
    """
    seen = Q(pk__in=_runs_spanning(since_by_site))
    for site_id, since in since_by_site.items():
        seen |= Q(site_id=site_id, started_at__gte=since)
    return seen


def site_runs(*, site: Site, limit: int = 20) -> list[BalancingRun]:
    """The latest runs, each with ``push_count`` (profiles sent) annotated; a repeated run once, with its count."""
    return list(
        BalancingRun.objects.filter(site=site).annotate(push_count=Count("pushes")).order_by("-started_at")[:limit]
    )


def run_result(run: BalancingRun | None) -> Result:
    """The engine's result as the run stored it, for reading with ``.get``: none (``{}``) without a
    run or when the run failed before solving, and runs stored before a key existed lack it."""
    return cast(Result, (run.result or {}) if run is not None else {})


def site_chargers(*, site: Site, run: BalancingRun | None) -> list[dict[str, Any]]:
    """Every connector of the site's chargers (site meters aside), by charger: what ``run`` (the
    latest) allocated it, the draw it measured and why it got what it got."""
    result = run_result(run)
    allocations = result.get("allocations_a", {})
    reasons = result.get("reasons", {})
    measured = {e["id"]: e.get("measured_a") for e in (run.problem or {}).get("evses", [])} if run else {}
    stations = (
        ChargingStation.objects.filter(site=site, is_site_meter=False)
        .prefetch_related("connectors")
        .order_by("charge_point_id")
    )
    return [
        {
            "station": s,
            "connector": c,
            "allocation_a": allocations.get(evse_id(c)),
            "measured_a": measured.get(evse_id(c)),
            "reason": reasons.get(evse_id(c), ""),
        }
        for s in stations
        for c in s.connectors.all()
    ]


def site_circuit_tree(*, site: Site, node_load_a: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    """The site's circuits as a tree (roots first, children by name), each with its load (A per
    phase, from a run's ``node_load_a``) when it has one."""
    children: dict[int | None, list[Circuit]] = {}
    for c in Circuit.objects.filter(site=site).order_by("name"):
        children.setdefault(c.parent_id, []).append(c)

    def build(parent: int | None) -> list[dict[str, Any]]:
        return [
            {"circuit": c, "load_a": node_load_a.get(f"circuit-{c.pk}"), "children": build(c.pk)}
            for c in children.get(parent, [])
        ]

    return build(None)


def site_circuits(*, site: Site) -> QuerySet[Circuit]:
    """The site's circuits by name, with their parent."""
    return Circuit.objects.filter(site=site).select_related("parent").order_by("name")


def site_schedules(*, site: Site) -> QuerySet[SiteLimitSchedule]:
    """The site's limit schedules by start time."""
    return SiteLimitSchedule.objects.filter(site=site).order_by("start_time")


def site_schedule_find(*, site: Site, pk: int) -> SiteLimitSchedule | None:
    return SiteLimitSchedule.objects.filter(site=site, pk=pk).first()


def site_tariffs(*, site: Site) -> QuerySet[Any]:
    """The site's tariff versions, newest first (billing's model, through its relation: balancing
    does not import billing)."""
    return site.tariffs.order_by("-version")


# Chart steps: a minute up to a day (about one run a minute: each sweep shows), 15 minutes
# beyond (a month: 2,976 points a series, whatever the number of runs).
CHART_FINE = timedelta(minutes=1)
CHART_COARSE = timedelta(minutes=15)
CHART_FINE_UP_TO = timedelta(days=1)
# Buckets start at whole minutes and quarter hours (UTC; every zone's offset is whole quarter hours).
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)


class DateBin(Func):
    """PostgreSQL ``date_bin(stride, source, origin)``: the start of the bucket holding ``source``."""

    function = "date_bin"
    output_field = DateTimeField()

    def __init__(self, stride: timedelta, source: Any, origin: datetime = BUCKET_ORIGIN) -> None:
        super().__init__(Value(stride), F(source) if isinstance(source, str) else source, Value(origin))


def chart_step(window: timedelta) -> timedelta:
    """The bucket a chart over ``window`` draws one point per."""
    return CHART_FINE if window <= CHART_FINE_UP_TO else CHART_COARSE


def _phase_a(field: str, index: int) -> Max:
    return Max(Cast(KT(f"{field}__{index}"), FloatField()))


def site_load_series(*, site: Site, since: datetime, step: timedelta, phases: bool = False) -> list[dict[str, Any]]:
    """The site's runs since ``since`` in ``step`` buckets, oldest first: per bucket its start
    (``at``) and the highest drawn, allowed, limit and unmanaged kW of its runs, or with
    ``phases`` the highest draw and limit per site phase (``l1_drawn`` ... ``l3_limit``, A).

    Aggregated in PostgreSQL (one scan of the site's runs in the window, by its index), so the
    answer is as long as the window has buckets, not runs: a month of minute sweeps is 44,640
    runs but about 2,976 points. The highest value keeps what a chart must not hide, a peak or a
    tight limit, when one point stands for many runs; a bucket without a value has none.
    """
    if phases:
        values: dict[str, Any] = {
            f"l{n + 1}_{name}": _phase_a(field, n)
            for name, field in (("drawn", "phase_measured_a"), ("limit", "phase_limit_a"))
            for n in range(3)
        }
    else:
        values = {
            "drawn": Max("measured_kw"),
            "allowed": Max("allocated_kw"),
            "limit": Max("limit_kw"),
            "unmanaged": Max("unmanaged_kw"),
        }

    def buckets(runs: Q) -> list[dict[str, Any]]:
        rows = (
            BalancingRun.objects.filter(runs)
            .annotate(at=DateBin(step, Greatest("started_at", Value(since))))
            .values("at")
            .annotate(**values)
            .order_by("at")
        )
        return [dict(row) for row in rows]

    # The runs started in the window, read from the covering index ``run_site_chart`` alone (an
    # index-only scan: no heap page per run), and apart from them the one run a site may have
    # that started before and was repeated into the window (an OR of the two would read the heap).
    points = buckets(Q(site=site, started_at__gte=since))
    spanning = _runs_spanning({site.pk: since})
    if spanning:
        first = buckets(Q(pk__in=spanning))[0]
        if points and points[0]["at"] == first["at"]:
            for name, value in first.items():
                if name != "at" and value is not None:
                    points[0][name] = value if points[0][name] is None else max(points[0][name], value)
        else:
            points.insert(0, first)
    # A run repeated since (nothing changed) holds its figures until its last repeat: the line
    # goes on to there, not only to the bucket it started in.
    held: datetime | None = (
        BalancingRun.objects.filter(site=site)
        .order_by("-started_at")
        .values_list("last_repeated_at", flat=True)
        .first()
    )
    if points and held is not None:
        end = held - (held - BUCKET_ORIGIN) % step
        last: datetime = points[-1]["at"]
        if end > last:
            points.append({**points[-1], "at": end})
    return points


LOAD_SERIES = ["drawn", "allowed", "limit", "unmanaged"]
PHASE_SERIES = [f"{p} {kind}" for kind in ("drawn", "limit") for p in ("L1", "L2", "L3")]


@dataclass(frozen=True)
class LoadChart:
    """The site chart's data: its series' names and one row per bucket (``time``, ISO) with each
    series that has a value there as a field, rounded to 0.01."""

    series: list[str]
    rows: list[dict[str, Any]]


def site_load_chart(*, site: Site, now: datetime, window: timedelta, phases: bool = False) -> LoadChart:
    """``site_load_series`` over the ``window`` up to ``now`` in that window's chart step, as chart rows:
    kW drawn, allowed, limit and unmanaged, or with ``phases`` the draw and limit per phase (A)."""
    names = PHASE_SERIES if phases else LOAD_SERIES
    rows: list[dict[str, Any]] = []
    for point in site_load_series(site=site, since=now - window, step=chart_step(window), phases=phases):
        row: dict[str, Any] = {"time": point["at"].isoformat()}
        for name in names:
            value = point[name.lower().replace(" ", "_")]  # "L1 drawn" is l1_drawn
            if value is not None:
                row[name] = round(value, 2)
        rows.append(row)
    return LoadChart(list(names), rows)


def alert_where(alert: SiteAlert) -> str:
    """The charger (and connector) an alert is about, e.g. ``CP-7/1``; empty for the whole site."""
    if alert.connector is not None:
        return str(alert.connector)
    return alert.station.charge_point_id if alert.station is not None else ""


def alert_summary(alert: SiteAlert) -> str:
    """One line for lists: where and what, e.g. ``CP-7/1: Draws more than offered``."""
    where = alert_where(alert)
    return f"{where}: {alert.get_kind_display()}" if where else alert.get_kind_display()


def site_alerts_open(*, site: Site) -> list[SiteAlert]:
    """The site's open alerts, newest first, with their charger and connector."""
    return list(
        SiteAlert.objects.filter(site=site, cleared_at__isnull=True)
        .select_related("station", "connector__station")
        .order_by("-opened_at")
    )


def site_alerts_cleared(*, site: Site, now: datetime, limit: int = 20) -> list[SiteAlert]:
    """Alerts of the site cleared in the last day, most recently cleared first."""
    return list(
        SiteAlert.objects.filter(site=site, cleared_at__gte=now - CLEARED_ALERTS_SHOWN)
        .select_related("station", "connector__station")
        .order_by("-cleared_at")[:limit]
    )


def station_alerts(*, station: ChargingStation, limit: int = 20) -> list[SiteAlert]:
    """A charger's alerts, open ones first, then the most recent."""
    return list(
        SiteAlert.objects.filter(station=station)
        .select_related("station", "connector__station")
        .order_by(F("cleared_at").desc(nulls_first=True), "-opened_at")[:limit]
    )


def station_pushes(*, station: ChargingStation, limit: int = 20) -> QuerySet[ProfilePush]:
    """The profiles last pushed to a charger, newest first, with their run."""
    return ProfilePush.objects.filter(station=station).select_related("run").order_by("-sent_at")[:limit]


def station_limit_checks(*, station: ChargingStation) -> QuerySet[ConnectorLimit]:
    """The charger's connectors whose applied profile has been read back (``GetCompositeSchedule``)."""
    return ConnectorLimit.objects.filter(connector__station=station, applied_checked_at__isnull=False).select_related(
        "connector"
    )


def compliance_find(*, station: ChargingStation) -> ChargerModelCompliance | None:
    """What the station's model (vendor, model, firmware) is known to do with profiles, if anything."""
    return ChargerModelCompliance.objects.filter(
        vendor=station.vendor[:50], model=station.model[:50], firmware_version=station.firmware_version[:50]
    ).first()


def site_meter_latest(*, site: Site) -> SiteMeterReading | None:
    """The site meter's most recent reading, from any source."""
    return SiteMeterReading.objects.filter(site=site).order_by("-measured_at").first()


def _fmt_kw(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


@dataclass(frozen=True)
class CapInForce:
    """The whole-site power cap (kW, building included) the site balances under now, and why.

    ``kw`` None: no kW cap (only the grid connection's current limit). ``at``: the run it comes
    from (None when it is the site's setting, no run having said otherwise).
    """

    policy: str
    kw: float | None
    reason: str
    lifted: bool = False
    at: datetime | None = None


def site_cap_in_force(*, site: Site) -> CapInForce:
    """The cap in force: the site's demand cap under the static policy; under cost-aware, what the
    latest stored run's policy record says (one row of the ``run_site_latest`` index, two JSON keys)."""
    cap = None if site.demand_cap_kw is None else float(site.demand_cap_kw)
    static_reason = "no demand cap set" if cap is None else f"the site's demand cap {_fmt_kw(cap)} kW"
    if site.balancing_policy == Site.Policy.STATIC:
        return CapInForce(site.balancing_policy, cap, static_reason)
    latest = (
        BalancingRun.objects.filter(site=site)
        .order_by("-started_at")
        .values_list("started_at", "limits__policy")
        .first()
    )
    record = latest[1] if latest is not None else None
    if not isinstance(record, dict) or "effective_cap_kw" not in record:
        return CapInForce(site.balancing_policy, cap, f"{static_reason} (no cost-aware run yet)")
    kw = record.get("effective_cap_kw")
    return CapInForce(
        site.balancing_policy,
        None if kw is None else float(kw),
        str(record.get("reason") or ""),
        bool(record.get("lifted")),
        latest[0] if latest is not None else None,
    )
