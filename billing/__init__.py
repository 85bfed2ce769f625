"""Tariffs, interval rollups, counterfactual load and monthly savings reports.

Schema: tenant. Pure parts (no Django): ``tariffs`` (URDB v7 records and monthly bills),
``intervals`` and ``rollups`` (register readings -> interval energy), ``counterfactual``
(the unmanaged load) and ``whatif`` (replay through ``balancing.engine``). The rest is the
usual rooms: models, selectors, services, tasks, admin, reports, management commands.
"""
