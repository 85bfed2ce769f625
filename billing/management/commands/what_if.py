"""Replay sessions from a CSV unmanaged and through the balancing engine; write the comparison."""

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.tariffs import TariffError, tariff_from_urdb, tariff_json_load
from billing.whatif import (
    DEFAULT_MAX_KW,
    DEFAULT_PHASES,
    DEFAULT_STEP_MINUTES,
    DEFAULT_VOLTAGE_V,
    WhatIfInputError,
    sessions_from_csv,
    what_if,
)


class Command(BaseCommand):
    help = (
        "What-if for planning and sales: unmanaged vs load-balanced (static cap) vs cost-aware peak, demand "
        "charge, energy cost and savings of historical sessions under a kW limit and a URDB tariff; and the "
        "NEC 625.42 capacity answer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sessions", required=True, help="CSV: station_id,arrival,departure,energy_kwh[,max_kw]")
        parser.add_argument("--limit-kw", required=True, type=float, help="load-balancing limit (EMS setting), kW")
        parser.add_argument("--tariff", required=True, help="URDB v7 rate record (JSON)")
        parser.add_argument("--timezone", required=True, help="IANA zone the demand windows follow")
        parser.add_argument("--output", required=True, help="JSON file to write")
        parser.add_argument(
            "--voltage",
            type=float,
            default=DEFAULT_VOLTAGE_V,
            help=f"line-to-neutral V of the chargers ({DEFAULT_VOLTAGE_V:g}; 230 with --phases 3 in Europe)",
        )
        parser.add_argument("--phases", type=int, choices=[1, 3], default=DEFAULT_PHASES)
        parser.add_argument(
            "--default-max-kw", type=float, default=DEFAULT_MAX_KW, help="max_kw where the CSV has none"
        )
        parser.add_argument("--step-minutes", type=int, default=DEFAULT_STEP_MINUTES, help="replay time step")
        parser.add_argument("--panel-kw", type=float, default=None, help="panel capacity for EV (limit x 1.25)")
        parser.add_argument("--charger-kw", type=float, default=None, help="charger rating for the capacity answer")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            tz = ZoneInfo(options["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"--timezone: {options['timezone']!r} is not an IANA time zone") from None
        if options["voltage"] <= 0:
            raise CommandError("--voltage: must be > 0")
        try:
            raw = Path(options["tariff"]).read_bytes()
        except OSError as exc:
            raise CommandError(f"--tariff: cannot read {options['tariff']}: {exc.strerror}") from None
        try:
            spec = tariff_from_urdb(tariff_json_load(raw))
        except TariffError as exc:
            raise CommandError(f"--tariff: {exc}") from None
        try:
            text = Path(options["sessions"]).read_text()
        except OSError as exc:
            raise CommandError(f"--sessions: cannot read {options['sessions']}: {exc.strerror}") from None
        try:
            sessions = sessions_from_csv(text, default_max_kw=options["default_max_kw"])
            result = what_if(
                sessions,
                limit_kw=options["limit_kw"],
                spec=spec,
                tz=tz,
                voltage_v=options["voltage"],
                phases=options["phases"],
                step_minutes=options["step_minutes"],
                panel_kw=options["panel_kw"],
                charger_kw=options["charger_kw"],
            )
        except WhatIfInputError as exc:
            prefix = "" if str(exc).startswith("--") else "--sessions: "
            raise CommandError(f"{prefix}{exc}") from None
        Path(options["output"]).write_text(json.dumps(result, indent=2) + "\n")
        self.stderr.write(comparison_table(result) + f"\n-> {options['output']}")


def comparison_table(result: dict[str, Any]) -> str:
    """The three policies side by side: unmanaged, static cap (the limit) and cost-aware."""
    names = {"unmanaged": "unmanaged", "static_cap": "static cap", "cost_aware": "cost-aware"}
    rows = [
        ("peak kW", "peak_kw", "{:,.1f}"),
        ("energy kWh", "energy_kwh", "{:,.1f}"),
        ("energy cost $", "energy_cost", "{:,.2f}"),
        ("demand charge $", "demand_charge", "{:,.2f}"),
        ("bill $", "bill", "{:,.2f}"),
        ("savings $", "savings", "{:,.2f}"),
    ]
    policies = result["policies"]
    lines = [f"{'':<16}" + "".join(f"{names[p['policy']]:>14}" for p in policies)]
    for label, key, fmt in rows:
        lines.append(f"{label:<16}" + "".join(f"{fmt.format(p[key]):>14}" for p in policies))
    lines.append(f"over {len(result['months'])} month(s); the bill includes fixed charges")
    return "\n".join(lines)
