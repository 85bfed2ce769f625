from django.apps import AppConfig


class ChargepointConfig(AppConfig):
    name = "chargepoint"
    verbose_name = "Chargers and sessions"
