from django.apps import AppConfig


class BalancingConfig(AppConfig):
    name = "balancing"
    verbose_name = "Sites and load balancing"

    def ready(self) -> None:
        # The charger app may not call balancing (balancing imports it); balancing listens to its events.
        from balancing.receivers import receivers_connect

        receivers_connect()
