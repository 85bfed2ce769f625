"""Chargers, their connectors, charging sessions and meter data.

Schema: tenant (the models). The OCPP gateway, added with the gateway issue, is the one place
that looks a charger up in the public identity registry and crosses into its tenant schema.
"""
