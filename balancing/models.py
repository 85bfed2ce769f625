"""A site's electrical tree: the grid connection and the panels and circuits beneath it.

Schema: tenant. Limits are per phase in amperes (``limit_a``) and, where set, in kilowatts
(``limit_kw``, ``demand_cap_kw``). The balancer keeps every node under both.
"""

import zoneinfo
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models


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
            models.CheckConstraint(condition=models.Q(voltage_v__gt=0), name="site_voltage_v_positive"),
            models.CheckConstraint(condition=models.Q(phases__in=[1, 3]), name="site_phases_1_or_3"),
        ]

    def __str__(self) -> str:
        return self.name


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
