"""Organisations (tenants), their domains, the charger identity registry and onboarding.

Schema: public. The ``tenants.accounts`` sub-app holds users and lives in every schema.
"""
