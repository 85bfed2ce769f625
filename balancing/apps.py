from django.apps import AppConfig


class BalancingConfig(AppConfig):
    name = "balancing"
    verbose_name = "Sites and load balancing"
