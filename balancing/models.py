"""A site's electrical tree: the grid connection and the panels and circuits beneath it.

Schema: tenant. Limits are per phase in amperes (``limit_a``) and, where set, in kilowatts
(``limit_kw``, ``demand_cap_kw``). The balancer keeps every node under both.
"""

import zoneinfo
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from tenants.accounts.models import Role


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'America/New_York')")


class Phases(models.IntegerChoices):
    """Number of AC phases of a grid connection or a charger."""

    SINGLE = 1, "single-phase"
    THREE = 3, "three-phase"


class Site(models.Model):
    """One grid connection with chargers behind it: a garage, a mall car park, a campus lot."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    voltage_v = models.DecimalField(
        max_digits=6, decimal_places=1, default=Decimal("230"), help_text="Line-to-neutral voltage (V)."
    )
    phases = models.PositiveSmallIntegerField(choices=Phases.choices, default=Phases.THREE)
    limit_a = models.DecimalField(
        max_digits=7,
        decimal_places=1,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Grid connection limit per phase (A).",
    )
    demand_cap_kw = models.DecimalField(
        max_digits=9,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Cap on the site's total charging power (kW); empty for none.",
    )
    free_vend = models.BooleanField(
        default=True,
        help_text="Accept any idTag (the usual case for shared workplace and residential chargers); "
        "off: only the organisation's allowed tags may charge.",
    )
    failsafe_a = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        default=Decimal("6"),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Per-charger current (A) a charger keeps when it cannot reach the platform.",
    )
    max_raise_a = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("1"))],
        help_text="Most a charger's current rises in one balancing run (A), so load comes on in steps "
        "(e.g. while a building meter lags); empty: at once.",
    )
    failsafe_auto = models.BooleanField(
        default=True,
        help_text="Size the fail-safe current to the site: all its chargers at their fail-safe together stay "
        "within every limit (recomputed when chargers are added, moved or removed). Off: failsafe_a as set, "
        "refused when it breaks a limit.",
    )
    idle_default_zero = models.BooleanField(
        default=False,
        help_text="Idle connectors get a 0 A default, so a car that plugs in waits for its first profile "
        "instead of starting at the fail-safe current.",
    )
    building_allowance_kw = models.DecimalField(
        max_digits=9,
        decimal_places=2,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Building load (kW) the fail-safe sizing leaves room for under the demand cap.",
    )

    class Policy(models.TextChoices):
        STATIC = "static", "Static: the demand cap as set"
        COST_AWARE = "cost_aware", "Cost-aware: use this month's peak, cheapest hours for cars with a departure"

    balancing_policy = models.CharField(
        max_length=12,
        choices=Policy.choices,
        default=Policy.STATIC,
        db_default=Policy.STATIC,  # a worker still on the code before it can create a site
        help_text="Static: the demand cap binds as set. Cost-aware (needs a tariff): up to a billing demand "
        "already set this month the cap is lifted (it adds no demand charge), and cars that gave an energy "
        "need and a departure charge in the cheapest hours before they leave.",
    )
    peak_margin_kw = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        default=Decimal("0.5"),
        db_default=Decimal("0.5"),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Cost-aware: how far (kW) below a billing demand already set this month the lifted cap stays.",
    )

    class Escalation(models.TextChoices):
        NONE = "none", "Alert only"
        STOP = "stop", "Stop the session (RemoteStop)"
        UNAVAILABLE = "unavailable", "Make the connector unavailable when the session ends"

    overdraw_escalation = models.CharField(
        max_length=12,
        choices=Escalation.choices,
        default=Escalation.NONE,
        help_text="What to do with a charger that keeps drawing more than it was offered (opt-in).",
    )
    overdraw_escalation_after_s = models.PositiveIntegerField(
        default=300, help_text="Seconds of overdraw before the escalation acts."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(limit_a__gte=0), name="site_limit_a_non_negative"),
            models.CheckConstraint(
                condition=models.Q(demand_cap_kw__isnull=True) | models.Q(demand_cap_kw__gte=0),
                name="site_demand_cap_kw_non_negative",
            ),
            models.CheckConstraint(condition=models.Q(failsafe_a__gte=0), name="site_failsafe_a_non_negative"),
            models.CheckConstraint(
                condition=models.Q(max_raise_a__isnull=True) | models.Q(max_raise_a__gte=1),
                name="site_max_raise_a_at_least_1",
            ),
            models.CheckConstraint(condition=models.Q(voltage_v__gt=0), name="site_voltage_v_positive"),
            models.CheckConstraint(condition=models.Q(phases__in=[1, 3]), name="site_phases_1_or_3"),
            models.CheckConstraint(condition=models.Q(peak_margin_kw__gte=0), name="site_peak_margin_kw_non_negative"),
            models.CheckConstraint(
                condition=models.Q(balancing_policy__in=["static", "cost_aware"]), name="site_balancing_policy_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class SiteGroup(models.Model):
    """Sites that belong together: a campus, a building, a department, a region.

    A role granted on a group (``SiteGrant``) reaches every site in it; a site may sit in several
    groups (a building and the campus around it). Finance charge-backs are totalled per group.
    """

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    sites = models.ManyToManyField(Site, related_name="groups", blank=True)
    api_tokens = models.ManyToManyField(
        "accounts.ApiToken",
        related_name="site_groups",
        blank=True,
        help_text="Tokens limited to the sites of their groups (a token in no group is not limited).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SiteGrant(models.Model):
    """A role a person holds on one site group or one site (not the whole organisation).

    A role on the whole organisation is the user's own ``role``; these rows add roles below it.
    Exactly one of ``group`` and ``site`` is set.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="site_grants")
    role = models.CharField(max_length=20, choices=Role.choices)
    group = models.ForeignKey(SiteGroup, on_delete=models.CASCADE, null=True, blank=True, related_name="grants")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="grants")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user", "role"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(group__isnull=True) & models.Q(site__isnull=False))
                | (models.Q(group__isnull=False) & models.Q(site__isnull=True)),
                name="site_grant_group_xor_site",
            ),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="site_grant_role_valid"),
            models.UniqueConstraint(
                fields=["user", "role", "group", "site"], nulls_distinct=False, name="site_grant_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} on {self.group or self.site}"


class Circuit(models.Model):
    """A panel, sub-panel or branch circuit; ``parent`` empty means fed by the grid connection."""

    class Kind(models.TextChoices):
        PANEL = "panel", "Panel"
        SUBPANEL = "subpanel", "Sub-panel"
        CIRCUIT = "circuit", "Circuit"

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="circuits")
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CIRCUIT)
    limit_a = models.DecimalField(
        max_digits=7,
        decimal_places=1,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Per-phase limit (A), usually the breaker rating.",
    )
    limit_kw = models.DecimalField(
        max_digits=9,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Optional power limit (kW).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["site", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "name"], name="circuit_name_unique_per_site"),
            models.CheckConstraint(condition=models.Q(limit_a__gte=0), name="circuit_limit_a_non_negative"),
            models.CheckConstraint(
                condition=models.Q(limit_kw__isnull=True) | models.Q(limit_kw__gte=0),
                name="circuit_limit_kw_non_negative",
            ),
            models.CheckConstraint(condition=~models.Q(parent=models.F("id")), name="circuit_not_own_parent"),
        ]

    def __str__(self) -> str:
        return f"{self.site.name} / {self.name}"


class SiteLimitSchedule(models.Model):
    """A recurring lower limit, e.g. a tighter cap in the utility's peak window (site local time)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="limit_schedules")
    name = models.CharField(max_length=100)
    weekdays = models.CharField(
        max_length=7, default="0123456", help_text="Days it applies, Monday=0 … Sunday=6, e.g. '01234'."
    )
    start_time = models.TimeField(help_text="Local time the window opens.")
    end_time = models.TimeField(help_text="Local time it closes; before start_time means it runs past midnight.")
    limit_kw = models.DecimalField(
        max_digits=9, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal(0))]
    )
    limit_a = models.DecimalField(
        max_digits=7, decimal_places=1, null=True, blank=True, validators=[MinValueValidator(Decimal(0))]
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["site", "start_time"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(limit_kw__isnull=False) | models.Q(limit_a__isnull=False),
                name="schedule_sets_a_limit",
            ),
            models.CheckConstraint(
                condition=(models.Q(limit_kw__isnull=True) | models.Q(limit_kw__gte=0))
                & (models.Q(limit_a__isnull=True) | models.Q(limit_a__gte=0)),
                name="schedule_limits_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site.name}: {self.name}"


class LimitOverride(models.Model):
    """A temporary limit set by a person (e.g. during maintenance), until it expires."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="overrides")
    limit_kw = models.DecimalField(
        max_digits=9, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal(0))]
    )
    limit_a = models.DecimalField(
        max_digits=7, decimal_places=1, null=True, blank=True, validators=[MinValueValidator(Decimal(0))]
    )
    reason = models.CharField(max_length=200)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_by = models.CharField(max_length=254, help_text="Email of the person who set it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="override_ends_after_start"
            ),
            models.CheckConstraint(
                condition=models.Q(limit_kw__isnull=False) | models.Q(limit_a__isnull=False),
                name="override_sets_a_limit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site.name}: {self.reason}"


class BuildingLoadReading(models.Model):
    """Non-EV load of the building behind the same grid connection, from a site meter."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="building_load")
    measured_at = models.DateTimeField()
    current_a = models.JSONField(help_text="Per-phase current [L1, L2, L3] (A).")
    power_kw = models.DecimalField(max_digits=9, decimal_places=2)

    class Meta:
        ordering = ["site", "-measured_at"]
        constraints = [models.UniqueConstraint(fields=["site", "measured_at"], name="building_load_unique_time")]
        indexes = [models.Index(fields=["site", "-measured_at"], name="building_load_latest")]

    def __str__(self) -> str:
        return f"{self.site.name} building load {self.power_kw} kW @ {self.measured_at}"


class SiteMeterReading(models.Model):
    """The site's meter at the grid connection: the closed loop's eye on what the site really draws.

    ``includes_chargers`` true (the usual grid-connection meter): the chargers' draw is part of
    the figures; false: a building-only meter (non-EV load). Readings arrive through the REST API,
    from an OCPP meter identity (connector 0) and over MQTT; ``source`` says which.
    """

    class Source(models.TextChoices):
        API = "api", "REST API"
        OCPP = "ocpp", "OCPP meter"
        MQTT = "mqtt", "MQTT"

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="meter_readings")
    measured_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=8, choices=Source.choices)
    current_a = models.JSONField(default=list, help_text="Per-phase current [L1, L2, L3] (A); [] if unknown.")
    power_kw = models.DecimalField(max_digits=9, decimal_places=2, null=True, blank=True)
    includes_chargers = models.BooleanField(default=True)

    class Meta:
        ordering = ["site", "-measured_at"]
        constraints = [
            models.UniqueConstraint(fields=["site", "source", "measured_at"], name="site_meter_unique_time"),
            models.CheckConstraint(
                condition=models.Q(power_kw__isnull=True) | models.Q(power_kw__gte=0),
                name="site_meter_power_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["site", "-measured_at"], name="site_meter_latest")]

    def __str__(self) -> str:
        return f"{self.site.name} meter {self.power_kw} kW @ {self.measured_at}"


class SiteAlert(models.Model):
    """A condition an operator must see: open until it clears, one row per condition (no flood)."""

    class Kind(models.TextChoices):
        OVERDRAW = "overdraw", "Draws more than offered"
        REFUSES = "refuses", "Refuses charging profiles"
        NEVER_ACCEPTED = "never_accepted", "Never accepted a limit"
        SLEEPING_CAR = "sleeping_car", "Car does not resume after a pause"
        SITE_OVER_LIMIT = "site_over_limit", "Site meter over the limit"
        OFFLINE = "offline", "Charger offline"
        FAILSAFE = "failsafe", "Fail-safe does not fit the site"
        ESCALATED = "escalated", "Escalation applied"
        FAULTED = "faulted", "Charger faulted"

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="alerts")
    station = models.ForeignKey(
        "chargepoint.ChargingStation", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    connector = models.ForeignKey(
        "chargepoint.Connector", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    detail = models.TextField(help_text="What happened, naming the charger and what it did.")
    vendor = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=50, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["site", "station", "connector", "kind"],
                condition=models.Q(cleared_at__isnull=True),
                nulls_distinct=False,
                name="site_alert_one_open_per_condition",
            ),
        ]
        indexes = [models.Index(fields=["site", "cleared_at", "-opened_at"], name="site_alert_open")]

    def __str__(self) -> str:
        return f"{self.site.name}: {self.get_kind_display()} ({self.detail[:60]})"


class ChargerModelCompliance(models.Model):
    """How one charger model (vendor, model, firmware) treats our profiles, learnt from every site.

    ``accepted_ignored`` counts profiles answered Accepted whose limit the draw never followed;
    the reaction time is from the accept to the draw coming within the limit. A model that
    ignores TxProfiles gets its limit as a station-wide maximum profile (``use_station_max``).
    """

    vendor = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=50, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    profiles_accepted = models.PositiveIntegerField(default=0)
    profiles_rejected = models.PositiveIntegerField(default=0)
    accepted_ignored = models.PositiveIntegerField(default=0)
    reactions = models.PositiveIntegerField(default=0, help_text="Accepted lowerings the draw followed.")
    reaction_s_total = models.FloatField(default=0.0, help_text="Sum of their reaction times (s).")
    use_station_max = models.BooleanField(
        default=False, help_text="Send limits as ChargePointMaxProfile / ChargingStationMaxProfile."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["vendor", "model", "firmware_version"]
        constraints = [
            models.UniqueConstraint(fields=["vendor", "model", "firmware_version"], name="compliance_unique_model")
        ]

    def __str__(self) -> str:
        return f"{self.vendor} {self.model} {self.firmware_version}".strip()

    @property
    def mean_reaction_s(self) -> float | None:
        return self.reaction_s_total / self.reactions if self.reactions else None


class ConnectorLimit(models.Model):
    """What the books say is in force on one connector, and what we last asked for.

    ``limit_a`` is what the platform plans with: it changes only when the charger accepted a
    profile. A rejected or unanswered lowering keeps the old value, so the next run plans with
    it (``balancing.runs``: lowerings first, raises after). ``None`` means no profile of ours is known to be in
    force (the charger's own default, i.e. its fail-safe or rating, applies).
    """

    connector = models.OneToOneField("chargepoint.Connector", on_delete=models.CASCADE, related_name="limit")
    limit_a = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True, help_text="When the TxProfile in force expires.")
    transaction_id = models.CharField(max_length=64, blank=True, help_text="Transaction the profile is bound to.")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    requested_a = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=20, blank=True)
    paused_since = models.DateTimeField(null=True, blank=True)
    charging_since = models.DateTimeField(null=True, blank=True)
    resumed_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was last offered current after a pause."
    )
    no_resume_count = models.PositiveSmallIntegerField(
        default=0, help_text="Times the car did not draw again after a pause (pausing avoids such cars)."
    )
    # Closed loop: readings in a row above what the books allow, and since when.
    overdraw_count = models.PositiveSmallIntegerField(default=0)
    overdraw_since = models.DateTimeField(null=True, blank=True)
    overdraw_a = models.DecimalField(
        max_digits=6, decimal_places=1, null=True, blank=True, help_text="Latest draw above the limit (A)."
    )
    last_reading_at = models.DateTimeField(
        null=True, blank=True, help_text="The reading the overdraw count last looked at."
    )
    accepted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the limit in force was accepted, for the reaction time."
    )
    # Verification: what the charger itself said it applies (GetCompositeSchedule), and when.
    applied_a = models.DecimalField(
        max_digits=6,
        decimal_places=1,
        null=True,
        blank=True,
        help_text="Limit the charger's composite schedule said it applied at the last check (A).",
    )
    applied_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(limit_a__isnull=True) | models.Q(limit_a__gte=0), name="connector_limit_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.connector}: {self.limit_a} A"


class StationFailsafe(models.Model):
    """The fail-safe default profile (TxDefaultProfile) a station stores and when it accepted it."""

    station = models.OneToOneField("chargepoint.ChargingStation", on_delete=models.CASCADE, related_name="failsafe")
    limit_a = models.DecimalField(max_digits=5, decimal_places=1)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=20, blank=True)
    booted_at = models.DateTimeField(null=True, blank=True, help_text="Boot the confirmation belongs to.")

    def __str__(self) -> str:
        return f"{self.station}: fail-safe {self.limit_a} A"


class BalancingRun(models.Model):
    """One balancing of one site: what went in, what came out, what was pushed, what bound."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        PARTIAL = "partial", "Some pushes failed"
        FAILED = "failed", "Failed"

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="runs")
    reason = models.CharField(max_length=100)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OK)
    inputs_digest = models.CharField(
        max_length=64,
        help_text="SHA-256 of the engine input without its time (canonical JSON, 'now' left out): "
        "equal for runs of an unchanged site.",
    )
    problem = models.JSONField()
    result = models.JSONField(null=True, blank=True)
    limits = models.JSONField(default=dict, help_text="Each limit considered and which one bound.")
    solve_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Site-level figures of this run, for charts and the overview without unpacking JSON.
    measured_kw = models.FloatField(null=True, blank=True, help_text="What the chargers drew (kW).")
    allocated_kw = models.FloatField(null=True, blank=True, help_text="What the run allowed them (kW).")
    limit_kw = models.FloatField(null=True, blank=True, help_text="The binding power limit at the root (kW).")
    unmanaged_kw = models.FloatField(
        null=True, blank=True, help_text="What the plugged-in cars would take without balancing (kW)."
    )
    phase_measured_a = models.JSONField(default=list, help_text="Draw per site phase (A).")
    phase_allocated_a = models.JSONField(default=list, help_text="Allocation per site phase (A).")
    phase_limit_a = models.JSONField(default=list, help_text="Root current limit per phase (A).")
    # A run that finds the site as the last run left it (same inputs, same outcome, nothing
    # pushed or changed) is not stored again: the last run counts it (``balancing.runs``).
    repeats = models.PositiveIntegerField(
        default=0, help_text="Later runs with the same inputs and outcome, folded into this one."
    )
    last_repeated_at = models.DateTimeField(null=True, blank=True, help_text="When the last of them ran.")

    class Meta:
        ordering = ["-started_at"]
        # No index on repeats / last_repeated_at: counting a repeat is then a HOT update (no new
        # index entries), the cheapest write PostgreSQL has (``balancing.selectors.runs_seen_since``).
        # run_site_chart: a site's load chart (``balancing.selectors.site_load_series``) reads a
        # month of runs from the index alone, not a heap page per run (runs of many sites
        # interleave in the table). Its columns are never changed once a run is stored.
        indexes = [
            models.Index(fields=["site", "-started_at"], name="run_site_latest"),
            models.Index(
                fields=["site", "started_at"],
                include=["measured_kw", "allocated_kw", "limit_kw", "unmanaged_kw"],
                name="run_site_chart",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site.name} {self.started_at:%Y-%m-%d %H:%M:%S} ({self.reason})"

    @property
    def last_seen_at(self) -> datetime:
        """When the run, or the last of its repeats, ran."""
        return self.last_repeated_at or self.started_at


class ProfilePush(models.Model):
    """One charging profile sent to one connector in a run, and the charger's answer."""

    class Kind(models.TextChoices):
        LOWER = "lower", "Lower"
        RAISE = "raise", "Raise"
        RENEW = "renew", "Renew validity"
        FAILSAFE = "failsafe", "Fail-safe default"

    run = models.ForeignKey(BalancingRun, on_delete=models.CASCADE, related_name="pushes")
    station = models.ForeignKey("chargepoint.ChargingStation", on_delete=models.CASCADE, related_name="pushes")
    connector = models.ForeignKey(
        "chargepoint.Connector", on_delete=models.CASCADE, null=True, blank=True, related_name="pushes"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    old_limit_a = models.DecimalField(max_digits=5, decimal_places=1, null=True, blank=True)
    new_limit_a = models.DecimalField(max_digits=5, decimal_places=1)
    payload = models.JSONField()
    status = models.CharField(max_length=20, blank=True, help_text="Accepted, Rejected, CallError, Timeout, Offline.")
    error = models.TextField(blank=True)
    sent_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "sent_at"]
        indexes = [
            # The billing rollup reads a session's accepted limits: a range of its connector's answers.
            models.Index(
                fields=["connector", "answered_at"],
                name="push_connector_accepted",
                condition=models.Q(status="Accepted"),
            ),
            # A connector's latest pushes (refusal streaks; retention keeps the one in force).
            models.Index(fields=["connector", "-sent_at"], name="push_connector_latest"),
            # A station's latest station-wide profiles (fail-safe default, station max).
            models.Index(
                fields=["station", "-sent_at"], name="push_station_latest", condition=models.Q(connector__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.new_limit_a} A: {self.status or 'pending'}"


# Alerts and reports told by email and webhook (README, "Alerts and notifications"): the
# balancing app's models too, kept in their own module.
from balancing.notifications.models import (  # noqa: E402, F401
    EmailDelivery,
    NotificationEvent,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
