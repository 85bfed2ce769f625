"""Chargers (OCPP charging stations), their connectors, sessions and meter samples.

Schema: tenant. Nothing here is trusted because a charger said it: the gateway validates what
it stores (the gateway issue), and the database refuses what cannot be true.
"""

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from balancing.models import Circuit, Phases, Site
from tenants.validators import validate_charge_point_id


class ChargingStation(models.Model):
    """One OCPP charging station, wired to a site (and optionally a circuit of its tree)."""

    class Wiring(models.TextChoices):
        """Which site phases the station's own L1 (L2, L3) are connected to (phase rotation)."""

        L1 = "L1", "L1"
        L2 = "L2", "L2"
        L3 = "L3", "L3"
        L1L2L3 = "L1L2L3", "L1-L2-L3"
        L2L3L1 = "L2L3L1", "L2-L3-L1"
        L3L1L2 = "L3L1L2", "L3-L1-L2"

    charge_point_id = models.CharField(max_length=48, unique=True, validators=[validate_charge_point_id])
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="stations")
    circuit = models.ForeignKey(Circuit, on_delete=models.PROTECT, null=True, blank=True, related_name="stations")
    vendor = models.CharField(max_length=50, blank=True)
    model = models.CharField(max_length=50, blank=True)
    serial_number = models.CharField(max_length=50, blank=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    ocpp_version = models.CharField(max_length=10, blank=True)
    max_current_a = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Per-phase rating of the station (A).",
    )
    phases = models.PositiveSmallIntegerField(choices=Phases.choices, default=Phases.THREE)
    wiring = models.CharField(max_length=6, choices=Wiring.choices, default=Wiring.L1L2L3)
    is_online = models.BooleanField(default=False)
    # Start of the connection that made it online: a "disconnected" event of an older
    # connection (a charger that reconnected, maybe through another gateway) changes nothing.
    connected_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_boot_at = models.DateTimeField(null=True, blank=True)
    # The gateway instance holding its connection: when that instance's heartbeat stops, its
    # chargers are taken offline without waiting for their own silence.
    gateway_id = models.CharField(max_length=64, blank=True)
    is_site_meter = models.BooleanField(
        default=False,
        help_text="Its connector-0 readings (Current.Import, Power.Active.Import) are the site's meter.",
    )
    registered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["charge_point_id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(max_current_a__gt=0), name="station_max_current_a_positive"),
            models.CheckConstraint(
                condition=(models.Q(phases=1) & models.Q(wiring__in=["L1", "L2", "L3"]))
                | (models.Q(phases=3) & models.Q(wiring__in=["L1L2L3", "L2L3L1", "L3L1L2"])),
                name="station_wiring_matches_phases",
            ),
        ]

    def __str__(self) -> str:
        return self.charge_point_id

    @property
    def site_phases(self) -> list[str]:
        """The site phases this station draws from, in the order of its own L1, L2, L3."""
        return [self.wiring[i : i + 2] for i in range(0, len(self.wiring), 2)]


class Connector(models.Model):
    """An outlet a car plugs into (OCPP 1.6 connector; OCPP 2.0.1 EVSE and connector)."""

    class Status(models.TextChoices):
        UNKNOWN = "Unknown", "Unknown"
        AVAILABLE = "Available", "Available"
        PREPARING = "Preparing", "Preparing"
        CHARGING = "Charging", "Charging"
        SUSPENDED_EVSE = "SuspendedEVSE", "Suspended by charger"
        SUSPENDED_EV = "SuspendedEV", "Suspended by car"
        FINISHING = "Finishing", "Finishing"
        RESERVED = "Reserved", "Reserved"
        UNAVAILABLE = "Unavailable", "Unavailable"
        FAULTED = "Faulted", "Faulted"
        OCCUPIED = "Occupied", "Occupied"

    station = models.ForeignKey(ChargingStation, on_delete=models.CASCADE, related_name="connectors")
    connector_id = models.PositiveSmallIntegerField(help_text="OCPP connectorId (1.6) or EVSE id (2.0.1), from 1.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UNKNOWN)
    error_code = models.CharField(max_length=50, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    max_current_a = models.DecimalField(
        max_digits=5,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Lower rating than the station's, if this outlet has one (A).",
    )
    # A limit the charger reports that someone else set (OCPP 2.0.1 NotifyChargingLimit: a local
    # EMS, the grid operator, the site owner); the balancer never offers more than it.
    external_limit_a = models.DecimalField(
        max_digits=5, decimal_places=1, null=True, blank=True, validators=[MinValueValidator(Decimal(0))]
    )
    external_limit_source = models.CharField(max_length=20, blank=True)
    external_limit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["station", "connector_id"]
        constraints = [
            models.UniqueConstraint(fields=["station", "connector_id"], name="connector_unique_per_station"),
            models.CheckConstraint(condition=models.Q(connector_id__gte=1), name="connector_id_from_1"),
            models.CheckConstraint(
                condition=models.Q(max_current_a__isnull=True) | models.Q(max_current_a__gt=0),
                name="connector_max_current_a_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.station.charge_point_id}/{self.connector_id}"


class ChargingSession(models.Model):
    """One OCPP transaction: a car charging on one connector from start to stop."""

    station = models.ForeignKey(ChargingStation, on_delete=models.PROTECT, related_name="sessions")
    connector = models.ForeignKey(Connector, on_delete=models.PROTECT, related_name="sessions")
    transaction_id = models.CharField(max_length=64)
    id_tag = models.CharField(max_length=36, blank=True)
    started_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)
    meter_start_wh = models.DecimalField(max_digits=15, decimal_places=3)
    meter_stop_wh = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True)
    energy_kwh = models.DecimalField(
        max_digits=12, decimal_places=3, null=True, blank=True, help_text="Energy delivered (kWh)."
    )
    stop_reason = models.CharField(max_length=40, blank=True)
    # What the car told us (OCPP 2.0.1 NotifyEVChargingNeeds) or the driver entered; the
    # balancer's deadline-aware policy uses them where present.
    departure_at = models.DateTimeField(null=True, blank=True)
    energy_needed_kwh = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    ev_max_current_a = models.DecimalField(
        max_digits=5, decimal_places=1, null=True, blank=True, help_text="Highest current the car accepts (A)."
    )

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["station", "transaction_id"], name="session_transaction_unique"),
            models.UniqueConstraint(
                fields=["connector"], condition=models.Q(stopped_at__isnull=True), name="one_open_session_per_connector"
            ),
            models.CheckConstraint(
                condition=models.Q(stopped_at__isnull=True) | models.Q(stopped_at__gte=models.F("started_at")),
                name="session_stops_after_start",
            ),
            models.CheckConstraint(
                condition=models.Q(energy_kwh__isnull=True) | models.Q(energy_kwh__gte=0),
                name="session_energy_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["station", "started_at"], name="session_station_started")]

    def __str__(self) -> str:
        return f"{self.station.charge_point_id} tx {self.transaction_id}"


class ReadingContext(models.IntegerChoices):
    """Why a charger took a reading (OCPP ReadingContext), stored as a small number."""

    UNSPECIFIED = 0, ""
    SAMPLE_PERIODIC = 1, "Sample.Periodic"
    SAMPLE_CLOCK = 2, "Sample.Clock"
    TRANSACTION_BEGIN = 3, "Transaction.Begin"
    TRANSACTION_END = 4, "Transaction.End"
    TRIGGER = 5, "Trigger"
    INTERRUPTION_BEGIN = 6, "Interruption.Begin"
    INTERRUPTION_END = 7, "Interruption.End"
    OTHER = 8, "Other"


class MeterReading(models.Model):
    """Everything one connector (0: the station's main meter) reported for one instant.

    One row per sampled instant, not per value: the measurands the platform uses have typed
    columns in base units (Wh, W, A, V, %); any other goes to ``extra`` keyed
    ``measurand[|phase][@location]``. The table is partitioned by month of ``sampled_at``
    (``chargepoint.partitions``) so raw history is dropped a partition at a time after
    ``TELEMETRY_RETENTION_DAYS``; the rollups, sessions and reports made from it are kept.

    Keyed (station, sampled_at, connector): a message sent twice, or re-processed after a
    worker died, is stored once, and every read of a station's recent readings is a short range
    of that key. The station reference is enforced by the database (ON DELETE CASCADE, see the
    migration) rather than by Django's collector, which would load a station's whole history to
    delete it; ``session`` is a plain column (the session the charger named or that was open),
    never joined on without the station and a time range.
    """

    pk = models.CompositePrimaryKey("station", "sampled_at", "connector_no")
    station = models.ForeignKey(
        ChargingStation, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    sampled_at = models.DateTimeField()
    connector_no = models.PositiveSmallIntegerField(help_text="OCPP connectorId / EVSE id; 0: the main meter.")
    session = models.ForeignKey(
        ChargingSession, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, null=True, related_name="+"
    )
    context = models.PositiveSmallIntegerField(choices=ReadingContext.choices, default=ReadingContext.UNSPECIFIED)
    energy_wh = models.FloatField(null=True, help_text="Energy.Active.Import.Register at the outlet (Wh).")
    power_w = models.FloatField(null=True, help_text="Power.Active.Import, all phases (W).")
    current_a = models.FloatField(null=True, help_text="Current.Import without a phase (A).")
    current_l1_a = models.FloatField(null=True, help_text="Current.Import on the station's L1 (A).")
    current_l2_a = models.FloatField(null=True, help_text="Current.Import on L2 (A).")
    current_l3_a = models.FloatField(null=True, help_text="Current.Import on L3 (A).")
    offered_a = models.FloatField(null=True, help_text="Current.Offered (A).")
    voltage_v = models.FloatField(null=True, help_text="Voltage without a phase (V).")
    soc_pct = models.FloatField(null=True, help_text="State of charge of the car (%).")
    extra = models.JSONField(
        null=True, help_text="Other values: 'measurand[|phase][@location]' -> value in base units."
    )

    class Meta:
        ordering = ["station", "sampled_at", "connector_no"]
        indexes = [models.Index(fields=["sampled_at"], name="reading_sampled_at")]

    def __str__(self) -> str:
        return f"{self.station_id}/{self.connector_no} @ {self.sampled_at:%Y-%m-%d %H:%M:%S}"

    @property
    def current_max_a(self) -> float | None:
        """The highest current over the phases (or the phase-less one): the connector's draw."""
        values = [v for v in (self.current_l1_a, self.current_l2_a, self.current_l3_a, self.current_a) if v is not None]
        return max(values) if values else None


class RollupPending(models.Model):
    """A station interval (and session) whose readings changed since the billing rollup looked.

    Written by the ingest with every batch of readings (one row per station, 15-minute grain
    and session, deduplicated); taken and deleted by the rollup, so it reads only what is new,
    however much history there is.
    """

    id = models.BigAutoField(primary_key=True)
    station = models.ForeignKey(ChargingStation, on_delete=models.CASCADE, related_name="+")
    interval_start = models.DateTimeField()
    session = models.ForeignKey(ChargingSession, on_delete=models.CASCADE, null=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["station", "interval_start", "session"], name="rollup_pending_unique", nulls_distinct=False
            )
        ]

    def __str__(self) -> str:
        return f"{self.station_id} {self.interval_start:%Y-%m-%d %H:%M} session {self.session_id}"


class IdTag(models.Model):
    """An idTag (RFID card, app token) allowed to charge where a site does not free-vend.

    ``site`` empty: allowed at every site of the organisation.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True, related_name="id_tags")
    id_tag = models.CharField(max_length=36, help_text="As the charger sends it (OCPP idTag / idToken).")
    label = models.CharField(max_length=100, blank=True, help_text="Whose card this is.")
    is_active = models.BooleanField(default=True, help_text="Off: the tag is blocked.")
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "allowed idTag"
        ordering = ["id_tag"]
        constraints = [
            models.UniqueConstraint(fields=["site", "id_tag"], name="id_tag_unique_per_site", nulls_distinct=False),
        ]

    def __str__(self) -> str:
        return self.id_tag


class ChargerCommand(models.Model):
    """One OCPP call the platform sent to a charger (a charging profile, a remote stop, ...).

    Written by the sender (a worker) before the call leaves and again with the charger's answer,
    so a command is on record even if Redis or the gateway lose it.
    """

    class Status(models.TextChoices):
        PENDING = "Pending", "Pending"
        ACCEPTED = "Accepted", "Accepted"
        REJECTED = "Rejected", "Rejected"
        CALL_ERROR = "CallError", "CALLERROR"
        TIMEOUT = "Timeout", "No answer in time"
        OFFLINE = "Offline", "Charger offline"
        OTHER = "Other", "Other answer"

    request_id = models.UUIDField(unique=True)
    station = models.ForeignKey(
        ChargingStation, on_delete=models.SET_NULL, null=True, blank=True, related_name="commands"
    )
    charge_point_id = models.CharField(max_length=48)
    action = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    charger_status = models.CharField(max_length=40, blank=True, help_text="The status the charger answered.")
    response = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    gateway = models.CharField(max_length=64, blank=True, help_text="Gateway instance that held the connection.")
    requested_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["station", "requested_at"], name="command_station_requested")]

    def __str__(self) -> str:
        return f"{self.charge_point_id} {self.action} {self.status}"
