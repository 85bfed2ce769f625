"""The summary table every format shares: one row per site and a TOTAL row, money to the cent."""

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")
KW = Decimal("0.001")

# The balancing policies compared besides unmanaged: the section key of each, and its label.
POLICY_COLUMNS = ("static_cap", "cost_aware")
POLICY_LABELS = {"unmanaged": "unmanaged", "static_cap": "static cap", "cost_aware": "cost-aware"}
RAN = {"static": "static_cap", "cost_aware": "cost_aware"}  # a site's policy -> the column it meters
SIMULATED = "simulated from the month's sessions"
# What a policy column's figures rest on.
BASIS_TEXT = {
    "metered": "metered",
    "simulated": SIMULATED,
    "no_cap": "unmanaged (no demand cap)",
    "unavailable": "not simulated",
}

# (CSV column, path into a site section or the total, kind)
COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("site", ("slug",), "text"),
    ("site_name", ("name",), "text"),
    ("tariff", ("tariff", "name"), "text"),
    ("tariff_version", ("tariff", "version"), "text"),
    ("sessions", ("sessions",), "int"),
    ("chargers", ("chargers",), "int"),
    ("energy_delivered_kwh", ("energy_delivered_kwh",), "kwh"),
    ("energy_not_delivered_kwh", ("energy_not_delivered_kwh",), "kwh"),
    ("actual_peak_kw", ("actual", "peak_kw"), "kw"),
    ("unmanaged_peak_kw", ("unmanaged", "peak_kw"), "kw"),
    ("actual_flat_billing_demand_kw", ("actual", "flat_billing_kw"), "kw"),
    ("unmanaged_flat_billing_demand_kw", ("unmanaged", "flat_billing_kw"), "kw"),
    ("actual_tou_demand_kw", ("actual", "tou_demand_kw"), "periods_kw"),
    ("unmanaged_tou_demand_kw", ("unmanaged", "tou_demand_kw"), "periods_kw"),
    ("actual_demand_charge", ("actual", "demand_charge"), "money"),
    ("unmanaged_demand_charge", ("unmanaged", "demand_charge"), "money"),
    ("actual_energy_cost", ("actual", "energy_cost"), "money"),
    ("unmanaged_energy_cost", ("unmanaged", "energy_cost"), "money"),
    ("fixed_charge", ("actual", "fixed_charge"), "money"),
    ("actual_bill", ("actual", "bill_total"), "money"),
    ("unmanaged_bill", ("unmanaged", "bill_total"), "money"),
    ("savings_demand_charge", ("savings", "demand_charge"), "money"),
    ("savings_energy_cost", ("savings", "energy_cost"), "money"),
    ("savings_total", ("savings", "total"), "money"),
    ("avoided_capital_cost", ("avoided_capital_cost",), "money"),
    ("rate_sources", ("rate_sources",), "sources"),
    ("policy", ("policy",), "counts"),
    ("unmanaged_energy_kwh", ("unmanaged", "energy_kwh"), "kwh"),
    *(
        (f"{column}_{name}", (column, *path), kind)
        for column in POLICY_COLUMNS
        for name, path, kind in (
            ("basis", ("basis",), "basis"),
            ("peak_kw", ("peak_kw",), "kw"),
            ("flat_billing_demand_kw", ("flat_billing_kw",), "kw"),
            ("tou_demand_kw", ("tou_demand_kw",), "periods_kw"),
            ("demand_charge", ("demand_charge",), "money"),
            ("energy_cost", ("energy_cost",), "money"),
            ("energy_kwh", ("energy_kwh",), "kwh"),
            ("energy_short_kwh", ("energy_short_kwh",), "kwh"),
            ("bill", ("bill_total",), "money"),
            ("savings_total", ("savings", "total"), "money"),
        )
    ),
)


def money(value: Decimal | str) -> Decimal:
    """Rounded to the cent, half up (the one place money is rounded)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def value_at(section: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a report section, None where the section has none."""
    node: Any = section
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def cell(section: dict[str, Any], path: tuple[str, ...], kind: str) -> Any:
    """One shown value: Decimal for numbers (rounded for display), str otherwise, None if absent."""
    value = value_at(section, path)
    if value is None:
        return None
    if kind == "money":
        return money(value)
    if kind in ("kw", "kwh"):
        return Decimal(value).quantize(KW, rounding=ROUND_HALF_UP)
    if kind == "int":
        return int(value)
    if kind == "periods_kw":
        return "; ".join(f"p{p}={Decimal(kw).quantize(KW, rounding=ROUND_HALF_UP)}" for p, kw in sorted(value.items()))
    if kind == "sources":
        return "; ".join(f"{k}={n}" for k, n in sorted(value.items()))
    if kind == "counts":  # a site's value, or the TOTAL's count of sites by value
        return "; ".join(f"{k}={n}" for k, n in sorted(value.items())) if isinstance(value, dict) else str(value)
    if kind == "basis":
        if isinstance(value, dict):
            return "; ".join(f"{BASIS_TEXT.get(k, k)}={n}" for k, n in sorted(value.items()))
        return BASIS_TEXT.get(value, str(value))
    return str(value)


def table(data: dict[str, Any]) -> list[list[Any]]:
    """Rows of the summary: each site, then TOTAL (columns as in ``COLUMNS``)."""
    rows = [[cell(site, path, kind) for _, path, kind in COLUMNS] for site in data["sites"]]
    total = [cell(data["total"], path, kind) for _, path, kind in COLUMNS]
    total[0] = "TOTAL"
    rows.append(total)
    return rows
