"""Simulated chargers for demos, tests and benchmarks (``simulate_chargers``)."""
