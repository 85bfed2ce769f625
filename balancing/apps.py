from django.apps import AppConfig


class BalancingConfig(AppConfig):
    name = "balancing"
    verbose_name = "Sites and load balancing"

    def ready(self) -> None:
        from balancing.groups import SiteGroupAccountHooks
        from tenants.accounts.hooks import account_hooks_register

        account_hooks_register(SiteGroupAccountHooks())  # accounts' questions on site groups and grants
