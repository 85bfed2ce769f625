"""Writes of billing's session draws: the new readings of sessions folded into their ``SessionDraw``.

Schema: tenant. The interval rollup calls it, inside its transaction and under the sites' locks.
"""

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection

from balancing.models import ProfilePush
from billing.bulk_reads import MICROS, RATING_FIELDS, READINGS, instant
from billing.models import SessionDraw
from billing.selectors import rating_kw
from chargepoint.models import ChargingSession

# The pushes that tell whether a session's car was held by our limit: those answered from
# this long before the session started (the limit in force when it began; a transaction's
# limit is pushed again long before this: its profile is renewed within minutes).
SESSION_PUSH_LOOKBACK = timedelta(days=1)
# A session's readings are read this much before its start and after its stop (or now): a
# charger's clock and the order of its messages date a few of them just outside the session.
SESSION_READING_SLACK = timedelta(minutes=15)
SESSION_CHUNK = 500  # sessions whose readings and pushes are read with one query each
DRAW_QUANTUM = Decimal("0.001")  # session draws: kW and kWh to three places, rounded half up
CAPPED_MARGIN_A = Decimal("1")  # a draw within 1 A of the limit in force is held by it
# What the fold needs of a session draw.
_DRAW_FIELDS = ("observed_max_kw", "was_capped", "register_energy_kwh", "folded_until", "draw_source")
_PUSHES = ProfilePush._meta.db_table


@dataclass
class _DrawFold:
    """A session's draw as folded so far; every figure only grows, so folding is idempotent.

    ``observed_kw`` and ``energy_kwh`` are kept as stored (rounded, the draw capped at the
    rating): rounding and capping keep the order, so the highest of rounded values is the
    rounded highest value, and folding readings in any order, or twice, gives what one pass
    over all of them gives.
    """

    observed_kw: Decimal | None = None
    capped: bool = False
    energy_kwh: Decimal | None = None
    source: str = SessionDraw.Source.NONE
    until: datetime | None = None

    @classmethod
    def of(cls, draw: SessionDraw) -> "_DrawFold":
        return cls(draw.observed_max_kw, draw.was_capped, draw.register_energy_kwh, draw.draw_source, draw.folded_until)


def _higher(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class _DrawWindow:
    """The readings of one session to fold: [since, until] of its station's key."""

    session: ChargingSession
    since: datetime
    until: datetime
    fold: _DrawFold


SampleRow = tuple[datetime, float | None, float | None, float | None]  # time, Wh, W, highest current A


def sessions_draw_update(since: dict[int, datetime], now: datetime) -> int:
    """Fold the new readings of sessions into their draws (``SessionDraw``).

    ``since`` maps each session to the start of the earliest interval it has a pending mark
    for: its new readings (late ones included) are all at or after it. A draw read before
    (``folded_until`` set) gets the session's readings from there on, at most a quarter of an
    hour of them folded again (which changes nothing: see ``_DrawFold``); a new draw, one
    folded by an earlier version, or one whose readings must now be taken from power instead
    of currents is recomputed from the session's start. A session's readings are those of its
    station from its start to its stop (or now), ``SESSION_READING_SLACK`` wider; the pushes
    read are those of its connector answered since ``SESSION_PUSH_LOOKBACK`` before it began:
    the last one before the readings read, and those among them. The caller holds the sites'
    locks: two rollups never fold into one draw at once.

    A change of a station's rating or of its site's voltage applies to the readings folded
    after it.
    """
    ordered = sorted(since)
    return sum(
        _sessions_draw_chunk({pk: since[pk] for pk in ordered[at : at + SESSION_CHUNK]}, now)
        for at in range(0, len(ordered), SESSION_CHUNK)
    )


def _sessions_draw_chunk(since: dict[int, datetime], now: datetime) -> int:
    sessions = (
        ChargingSession.objects.filter(pk__in=list(since))
        .select_related("station__site")
        .only(
            "station_id",
            "connector_id",
            "started_at",
            "stopped_at",
            "meter_start_wh",
            *RATING_FIELDS,
        )
    )
    drawn = {
        draw.session_id: draw
        for draw in SessionDraw.objects.filter(session_id__in=list(since)).only(*_DRAW_FIELDS, "session_id")
    }
    windows = []
    for session in sessions:
        first = session.started_at - SESSION_READING_SLACK
        until = (session.stopped_at or now) + SESSION_READING_SLACK
        draw = drawn.get(session.pk)
        if draw is not None and draw.folded_until is not None:
            windows.append(_DrawWindow(session, max(first, since[session.pk]), until, _DrawFold.of(draw)))
        else:
            windows.append(_DrawWindow(session, first, until, _DrawFold()))
    if not windows:
        return 0
    folded: list[_DrawWindow] = []
    while windows:
        again = []
        samples, pushes = _windows_samples(windows), _windows_pushes(windows)
        for window, rows, limits in zip(windows, samples, pushes, strict=True):
            if _draw_fold(window, rows, limits):
                folded.append(window)
            else:  # currents folded, power readings now: recomputed from the start, from power
                first = window.session.started_at - SESSION_READING_SLACK
                again.append(_DrawWindow(window.session, first, window.until, _DrawFold()))
        windows = again
    SessionDraw.objects.bulk_create(
        [
            SessionDraw(
                session_id=window.session.pk,
                observed_max_kw=window.fold.observed_kw,
                was_capped=window.fold.capped,
                register_energy_kwh=window.fold.energy_kwh,
                folded_until=window.fold.until,
                draw_source=window.fold.source,
            )
            for window in folded
        ],
        update_conflicts=True,
        unique_fields=["session"],
        update_fields=[
            "observed_max_kw",
            "was_capped",
            "register_energy_kwh",
            "folded_until",
            "draw_source",
            "updated_at",
        ],
    )
    return len(folded)


def _windows_open(windows: list[_DrawWindow]) -> list[tuple[int, _DrawWindow]]:
    """The windows with a range to read (``since <= until``), each with its place in ``windows``."""
    return [(n, w) for n, w in enumerate(windows) if w.since <= w.until]


def _windows_samples(windows: list[_DrawWindow]) -> list[list[SampleRow]]:
    """Each window's readings of its session; one statement, each a range of the readings' key."""
    out: list[list[SampleRow]] = [[] for _ in windows]
    numbered = _windows_open(windows)
    if not numbered:
        return out
    reading = [w for _, w in numbered]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.n, {MICROS}, r.energy_wh, r.power_w,
                   GREATEST(r.current_a, r.current_l1_a, r.current_l2_a, r.current_l3_a)
            FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::int[])
                AS p(station, session, lo, hi, n)
            CROSS JOIN LATERAL (
                SELECT r."sampled_at", r.energy_wh, r.power_w, r.current_a, r.current_l1_a, r.current_l2_a,
                       r.current_l3_a
                FROM "{READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" <= p.hi
                  AND r.session_id = p.session
                OFFSET 0
            ) r
            """,  # noqa: S608 - the table name is the model's own
            [
                [w.session.station_id for w in reading],
                [w.session.pk for w in reading],
                [w.since for w in reading],
                [w.until for w in reading],
                [n for n, _ in numbered],
            ],
        )
        for n, micros, wh, w, a in cursor.fetchall():
            out[n].append((instant(micros), wh, w, a))
    return out


def _windows_pushes(windows: list[_DrawWindow]) -> list[tuple[list[datetime], list[Decimal]]]:
    """Each window's accepted limits of its connector: the last answered before the window
    (from ``SESSION_PUSH_LOOKBACK`` before the session began) and those answered within it,
    as (sorted answer times, limits in A). One statement, served by the index on (connector,
    answered_at) of accepted pushes."""
    out: list[tuple[list[datetime], list[Decimal]]] = [([], []) for _ in windows]
    numbered = _windows_open(windows)
    if not numbered:
        return out
    reading = [w for _, w in numbered]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.n, x.answered_at, x.new_limit_a
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::int[])
                AS p(connector, lookback, lo, hi, n)
            CROSS JOIN LATERAL (
                (SELECT q."answered_at", q.new_limit_a FROM "{_PUSHES}" q
                 WHERE q.connector_id = p.connector AND q.status = 'Accepted'
                   AND q."answered_at" >= p.lookback AND q."answered_at" < p.lo
                 ORDER BY q."answered_at" DESC LIMIT 1)
                UNION ALL
                (SELECT q."answered_at", q.new_limit_a FROM "{_PUSHES}" q
                 WHERE q.connector_id = p.connector AND q.status = 'Accepted'
                   AND q."answered_at" >= p.lo AND q."answered_at" <= p.hi)
            ) x
            ORDER BY p.n, x.answered_at
            """,  # noqa: S608 - the table name is the model's own
            [
                [w.session.connector_id for w in reading],
                [w.session.started_at - SESSION_PUSH_LOOKBACK for w in reading],
                [w.since for w in reading],
                [w.until for w in reading],
                [n for n, _ in numbered],
            ],
        )
        for n, answered_at, limit_a in cursor.fetchall():
            out[n][0].append(answered_at)
            out[n][1].append(limit_a)
    return out


def _draw_fold(window: _DrawWindow, rows: list[SampleRow], pushes: tuple[list[datetime], list[Decimal]]) -> bool:
    """Fold the window's readings into its draw; False when the draw must be recomputed from
    the session's start instead (currents were folded, and these readings carry power).

    The draw is the highest power (or, with no power reading in the session, current x volts
    x phases) while the limit in force was above it, and whether the car was held at a limit
    of ours (within ``CAPPED_MARGIN_A``, where the limit was below the charger's rating).
    """
    fold = window.fold
    power = [(at, Decimal(repr(w)) / 1000) for at, _, w, _ in rows if w is not None]
    if power and fold.source == SessionDraw.Source.CURRENT:
        return False
    station = window.session.station
    volts_phases = Decimal(station.site.voltage_v) * station.phases / 1000
    if power or fold.source == SessionDraw.Source.POWER:
        draws = power
        source = SessionDraw.Source.POWER if power else fold.source
    else:
        draws = [(at, Decimal(repr(a)) * volts_phases) for at, _, _, a in rows if a is not None]
        source = SessionDraw.Source.CURRENT if draws else fold.source
    rating = rating_kw(station, station.site.voltage_v)
    margin_kw = CAPPED_MARGIN_A * volts_phases
    times, limits = pushes
    observed: Decimal | None = None
    for at, draw_kw in draws:
        found = bisect_right(times, at)
        limit_kw = limits[found - 1] * volts_phases if found else None
        if limit_kw is None or draw_kw < limit_kw - margin_kw:
            observed = draw_kw if observed is None else max(observed, draw_kw)
        elif limit_kw < rating - margin_kw:
            fold.capped = True
    if observed is not None:
        fold.observed_kw = _higher(fold.observed_kw, _draw_round(min(observed, rating)))
    registers = [Decimal(repr(wh)) for _, wh, _, _ in rows if wh is not None]
    if registers:
        energy = max((max(registers) - window.session.meter_start_wh) / 1000, Decimal(0))
        fold.energy_kwh = _higher(fold.energy_kwh, _draw_round(energy))
    fold.source = source
    if rows:
        latest = max(at for at, *_ in rows)
        fold.until = latest if fold.until is None else max(fold.until, latest)
    return True


def _draw_round(value: Decimal) -> Decimal:
    """A session draw's kW or kWh to three places, half up (as the reports round)."""
    return value.quantize(DRAW_QUANTUM, rounding=ROUND_HALF_UP)
