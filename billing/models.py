"""Tariffs, interval energy, session draw estimates and the immutable monthly savings reports.

Schema: tenant. Money is ``Decimal`` at full precision; it is rounded to the cent only where it
is shown (the report files). Interval starts are UTC instants on the clock grid of the
interval length; the site's time zone decides which month and tariff period an interval is in.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from balancing.models import Site


class Tariff(models.Model):
    """One version of a site's utility tariff, valid from a date (site local) until the next.

    ``record`` is the OpenEI URDB v7 rate record exactly as imported; ``billing.tariffs``
    parses it. A new version never changes an old one: reports name the version they used.
    """

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="tariffs")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    utility = models.CharField(max_length=200, blank=True)
    urdb_label = models.CharField(max_length=64, blank=True, help_text="URDB rate label, if known.")
    valid_from = models.DateField(help_text="First day (site local) the tariff applies.")
    valid_until = models.DateField(null=True, blank=True, help_text="First day it no longer applies; empty: open.")
    record = models.JSONField(help_text="The URDB v7 rate record as imported.")
    record_sha256 = models.CharField(max_length=64)
    imported_at = models.DateTimeField(auto_now_add=True)
    imported_by = models.CharField(max_length=254, blank=True)

    class Meta:
        ordering = ["site", "-valid_from", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["site", "version"], name="tariff_version_unique_per_site"),
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True) | models.Q(valid_until__gt=models.F("valid_from")),
                name="tariff_valid_until_after_from",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site.slug} v{self.version}: {self.name} (from {self.valid_from})"


def _money(default: str) -> models.DecimalField:
    return models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal(default), validators=[MinValueValidator(Decimal(0))]
    )


class InstallationCostModel(models.Model):
    """What the electrical installation costs with and without load balancing, per site.

    Defaults are the brochure's quote for four chargers (with: $2,290, without: $12,192); the
    avoided capital cost of a site scales the difference by its number of chargers.
    """

    site = models.OneToOneField(Site, on_delete=models.CASCADE, related_name="installation_cost")
    reference_chargers = models.PositiveIntegerField(default=4, help_text="Chargers the figures below are for.")
    breaker_with_lb = _money("50")
    breaker_without_lb = _money("200")
    conduit_with_lb = _money("20")
    conduit_without_lb = _money("1160")
    wire_with_lb = _money("1400")
    wire_without_lb = _money("8320")
    junction_box_with_lb = _money("20")
    junction_box_without_lb = _money("12")
    labour_with_lb = _money("800")
    labour_without_lb = _money("2500")
    updated_at = models.DateTimeField(auto_now=True)

    COMPONENTS = ("breaker", "conduit", "wire", "junction_box", "labour")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(reference_chargers__gte=1), name="cost_reference_chargers_min_1")
        ]

    def __str__(self) -> str:
        return f"installation cost model of {self.site.slug}"


class IntervalEnergy(models.Model):
    """Energy drawn in one interval by one station, or by the whole site (``station`` empty).

    Rebuilt from meter register readings by the rollup; idempotent (an upsert per interval).
    """

    id = models.BigAutoField(primary_key=True)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="interval_energy")
    station = models.ForeignKey(
        "chargepoint.ChargingStation", on_delete=models.CASCADE, null=True, blank=True, related_name="interval_energy"
    )
    start = models.DateTimeField(help_text="Interval start (UTC instant on the interval grid).")
    minutes = models.PositiveSmallIntegerField(default=15)
    energy_kwh = models.DecimalField(max_digits=14, decimal_places=6)
    resets = models.PositiveIntegerField(default=0, help_text="Register resets or meter swaps seen in it.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "station", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "station", "start"], name="interval_energy_unique", nulls_distinct=False
            ),
            models.CheckConstraint(condition=models.Q(energy_kwh__gte=0), name="interval_energy_non_negative"),
        ]
        indexes = [models.Index(fields=["site", "start"], name="interval_site_start")]

    def __str__(self) -> str:
        return f"{self.site_id}/{self.station_id or 'site'} {self.start:%Y-%m-%d %H:%M} {self.energy_kwh} kWh"


class SessionDraw(models.Model):
    """What the rollup learned of one session's car from its samples, for the counterfactual.

    Folded incrementally: each figure is a highest value or an "ever", so the rollup adds the
    readings of the marked intervals to what is here instead of re-reading the session from its
    start. ``folded_until`` and ``draw_source`` say what has been folded in; a draw without them
    (or one whose source must change) is recomputed from all the session's readings.
    """

    class Source(models.TextChoices):
        NONE = "", "No draw sample yet"
        POWER = "power", "Power.Active.Import"
        CURRENT = "current", "Current.Import (no power reading)"

    session = models.OneToOneField("chargepoint.ChargingSession", on_delete=models.CASCADE, related_name="draw")
    observed_max_kw = models.DecimalField(
        max_digits=9,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Highest draw seen while the limit in force was above the draw (kW).",
    )
    was_capped = models.BooleanField(default=False, help_text="The car was seen drawing at a limit of ours.")
    register_energy_kwh = models.DecimalField(
        max_digits=12, decimal_places=3, null=True, blank=True, help_text="Energy by the register so far (kWh)."
    )
    folded_until = models.DateTimeField(
        null=True, blank=True, help_text="Latest reading folded in; empty: the next rollup reads the whole session."
    )
    draw_source = models.CharField(
        max_length=7,
        choices=Source.choices,
        blank=True,
        default=Source.NONE,
        db_default=Source.NONE,  # a worker still on the code before it can insert a draw
        help_text="What the highest draw was taken from: power readings, or currents while there were none.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"draw of session {self.session_id}"


class SiteMonthDemand(models.Model):
    """Highest window demand of a site in one month, actual and unmanaged: the ratchet's memory."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="month_demands")
    month = models.DateField(help_text="First day of the month (site local).")
    actual_kw = models.DecimalField(max_digits=12, decimal_places=4)
    unmanaged_kw = models.DecimalField(max_digits=12, decimal_places=4)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "month"]
        constraints = [models.UniqueConstraint(fields=["site", "month"], name="site_month_demand_unique")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.month:%Y-%m}: {self.actual_kw} kW"


class SiteMonthPeak(models.Model):
    """This month's highest demand windows so far, per demand charge: what cost-aware balancing reads.

    Kept by ``billing.policy`` as months go by, so a balancing run reads one row instead of the
    month's intervals: each run after a demand window ends folds the windows since the last fold
    (and those of the hour before, for intervals the rollup wrote late) into ``peaks``. Another
    tariff version or demand window (``basis``) folds the month again from its first day.
    ``peaks``: ``"peak"`` (every window: the facility demand) and ``"tou:<period>"``, each
    ``{"kw": float, "at": ISO time of the window start}``.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="month_peaks")
    month = models.DateField(help_text="First day of the month (site local).")
    basis = models.CharField(max_length=100, help_text="Tariff version and demand window the peaks were folded for.")
    folded_until = models.DateTimeField(help_text="Windows starting before this instant are folded in.")
    peaks = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "month"]
        constraints = [models.UniqueConstraint(fields=["site", "month"], name="site_month_peak_unique")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.month:%Y-%m} peaks until {self.folded_until:%Y-%m-%d %H:%M}"


class SavingsReport(models.Model):
    """One version of a tenant's monthly savings report. Immutable: the database refuses updates.

    ``data`` holds every figure (Decimals as strings) the files were rendered from, ``tariffs``
    which tariff version each site was billed with, ``data_sha256`` the checksum of ``data``.
    """

    class Reason(models.TextChoices):
        SCHEDULE = "schedule", "Month closed (beat)"
        REQUEST = "request", "Requested"

    month = models.DateField(help_text="First day of the reported month.")
    version = models.PositiveIntegerField()
    reason = models.CharField(max_length=10, choices=Reason.choices)
    requested_by = models.CharField(max_length=254, blank=True)
    generated_at = models.DateTimeField()
    tariffs = models.JSONField(help_text="Site slug -> tariff id, version, name, record checksum.")
    data = models.JSONField()
    data_sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["-month", "-version"]
        constraints = [models.UniqueConstraint(fields=["month", "version"], name="savings_report_version_unique")]

    def __str__(self) -> str:
        return f"savings {self.month:%Y-%m} v{self.version}"


class SavingsReportFile(models.Model):
    """One rendering (CSV, XLSX or PDF) of a report version, with its SHA-256. Immutable."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        XLSX = "xlsx", "Excel (XLSX)"
        PDF = "pdf", "PDF"

    report = models.ForeignKey(SavingsReport, on_delete=models.CASCADE, related_name="files")
    format = models.CharField(max_length=4, choices=Format.choices)
    content = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveIntegerField()

    class Meta:
        ordering = ["report", "format"]
        constraints = [models.UniqueConstraint(fields=["report", "format"], name="report_file_format_unique")]

    def __str__(self) -> str:
        return f"{self.report} {self.format}"


class ReportDelivery(models.Model):
    """One finance recipient's mail of one report version: sent, still being retried, or failed.

    The mail holds the report narrowed to the sites the recipient reaches (``site_ids``; empty
    for the whole organisation), so each row says what that person was sent and whether it went.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (being sent or retried)"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (retries exhausted)"

    report = models.ForeignKey(SavingsReport, on_delete=models.CASCADE, related_name="deliveries")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="report_deliveries"
    )
    email = models.EmailField(max_length=254)
    site_ids = models.JSONField(
        null=True, blank=True, help_text="Sites the mail covered; empty: the whole organisation."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "email"]
        constraints = [models.UniqueConstraint(fields=["report", "email"], name="report_delivery_once_per_address")]

    def __str__(self) -> str:
        return f"{self.report} to {self.email}: {self.status}"


class SimulationCheckpoint(models.Model):
    """A site's month replayed under a simulated policy up to ``cut``: the replay's state there.

    The monthly report simulates the policy a site did not run from the month's sessions (a
    replay of every step with cars); a task stores how far that replay has got as the month goes
    by, so the report resumes it and replays only the last hours. ``inputs_key`` is a digest of
    everything the replay before ``cut`` read (those sessions, the site's limits and tariff): a
    state whose inputs have changed since (a late session, another cap) is not resumed.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="simulation_checkpoints")
    month = models.DateField(help_text="First day of the month (site local).")
    policy = models.CharField(max_length=20, help_text="The simulated policy, e.g. cost_aware.")
    cut = models.DateTimeField(help_text="The replay stopped before the step starting here.")
    inputs_key = models.CharField(max_length=64)
    state = models.JSONField(help_text="billing.whatif.ReplayState")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "month", "policy"]
        constraints = [models.UniqueConstraint(fields=["site", "month", "policy"], name="simulation_checkpoint_unique")]

    def __str__(self) -> str:
        return f"{self.site_id} {self.month:%Y-%m} {self.policy} until {self.cut:%Y-%m-%d %H:%M}"
