"""Billing models arrive with the billing issue. Schema: tenant."""
