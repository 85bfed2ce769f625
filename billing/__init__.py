"""Tariffs, interval rollups, counterfactual load and monthly savings reports.

Schema: tenant. Filled in by the billing issue; installed now so that every tenant schema
created from here on carries its migrations.
"""
