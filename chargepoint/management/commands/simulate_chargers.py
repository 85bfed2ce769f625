"""Run a fleet of simulated chargers against a gateway and print the site total over time.

``--fault CP-ID=MODE`` (repeatable) makes one charger misbehave: ``ignore_profiles``,
``ignore_tx_profiles``, ``reject_profiles``, ``drop_reconnect[:EVERY_S[:AFTER_S]]`` or
``sleeping_car[:AFTER_S]`` (see ``chargepoint.simulator.model``).
"""

import asyncio
import logging
import os
import signal
from dataclasses import replace
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chargepoint.simulator.charger import ChargerSpec
from chargepoint.simulator.fleet import SEED_CAP_KW, random_specs, run_fleet, seed_specs
from chargepoint.simulator.model import FAULT_MODES, Fault, parse_fault

DEFAULT_SEED_IDS = "DEMO-CP-1,DEMO-CP-2,DEMO-CP-3,DEMO-CP-4"


class Command(BaseCommand):
    help = "Simulate OCPP chargers with cars that obey charging profiles; print the site total over time."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="ws://127.0.0.1:9000/ocpp", help="gateway URL without the charger id")
        parser.add_argument("--site", default="garage", help="site slug (for the printout)")
        parser.add_argument("--scenario", choices=["seed", "random"], default="seed")
        parser.add_argument("--count", type=int, default=4, help="chargers (random: ids PREFIX-1..N)")
        parser.add_argument("--ids", help=f"comma-separated charger ids (seed default: {DEFAULT_SEED_IDS})")
        parser.add_argument("--id-prefix", default="SIM-CP", help="random scenario: ids PREFIX-1..COUNT")
        parser.add_argument(
            "--password",
            default=os.environ.get("DEMO_CHARGER_PASSWORD", "demo-charger-secret-2026"),
            help="charger password (default: $DEMO_CHARGER_PASSWORD or the demo's)",
        )
        parser.add_argument("--ocpp", choices=["1.6", "2.0.1"], default="1.6")
        parser.add_argument("--cap-kw", type=float, help=f"site cap to check (seed default {SEED_CAP_KW:g})")
        parser.add_argument("--duration", type=float, default=60.0, help="seconds; 0 runs until Ctrl-C")
        parser.add_argument("--meter-interval", type=float, default=10.0, help="seconds between MeterValues")
        parser.add_argument("--report-every", type=float, default=5.0)
        parser.add_argument("--random-seed", type=int, default=1)
        parser.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="CP-ID=MODE",
            help=f"make one charger misbehave; MODE is one of {', '.join(FAULT_MODES)} "
            "(drop_reconnect:EVERY_S:AFTER_S, sleeping_car:AFTER_S take seconds)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("ocpp").setLevel(logging.WARNING)
        if options["count"] < 1:
            raise CommandError("--count: at least 1")
        if options["ids"]:
            ids = [i.strip() for i in options["ids"].split(",") if i.strip()]
        elif options["scenario"] == "seed":
            ids = DEFAULT_SEED_IDS.split(",")[: options["count"]]
        else:
            ids = [f"{options['id_prefix']}-{n}" for n in range(1, options["count"] + 1)]
        if options["scenario"] == "seed":
            specs = seed_specs(ids, options["password"], ocpp_version=options["ocpp"])
            cap = options["cap_kw"] if options["cap_kw"] is not None else SEED_CAP_KW
        else:
            specs = random_specs(ids, options["password"], seed=options["random_seed"], ocpp_version=options["ocpp"])
            cap = options["cap_kw"]
        specs = with_faults(specs, options["fault"])
        duration = options["duration"] or float("inf")
        self.stdout.write(
            f"{len(specs)} simulated chargers ({options['ocpp']}) on site {options['site']} via {options['url']}; "
            f"cap {cap if cap is not None else 'none'} kW"
        )
        report = asyncio.run(self._run(specs, options, cap, duration))
        for spec in specs:
            if spec.fault.mode:
                self.stdout.write(f"{spec.charge_point_id}: fault {spec.fault.mode}")
        for cp, why in report.refused.items():
            self.stderr.write(f"{cp}: refused by the gateway ({why})")
        self.stdout.write(report.summary())

    async def _run(self, specs: list[Any], options: dict[str, Any], cap: float | None, duration: float) -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def show(t: float, total_kw: float, charging: int) -> None:
            flag = "" if cap is None else (" OVER CAP" if total_kw > cap + 0.05 else " ok")
            self.stdout.write(f"t={t:6.1f}s  site total {total_kw:6.2f} kW  charging {charging}{flag}")
            self.stdout.flush()

        return await run_fleet(
            specs,
            url=options["url"],
            duration_s=duration,
            cap_kw=cap,
            meter_interval_s=options["meter_interval"],
            report_every_s=options["report_every"],
            on_report=show,
            stop=stop,
        )


def with_faults(specs: list[ChargerSpec], texts: list[str]) -> list[ChargerSpec]:
    """``specs`` with the ``--fault CP-ID=MODE`` options applied; a bad one is a CommandError."""
    faults: dict[str, Fault] = {}
    known = {spec.charge_point_id for spec in specs}
    for text in texts:
        cp, sep, mode = text.partition("=")
        cp = cp.strip()
        if not sep or not cp:
            raise CommandError(f"--fault: {text!r} is not CP-ID=MODE")
        if cp not in known:
            raise CommandError(f"--fault: {cp!r} is not one of the simulated chargers ({', '.join(sorted(known))})")
        try:
            faults[cp] = parse_fault(mode)
        except ValueError as exc:
            raise CommandError(f"--fault {cp}: {exc}") from None
    return [
        replace(spec, fault=faults[spec.charge_point_id]) if spec.charge_point_id in faults else spec for spec in specs
    ]
