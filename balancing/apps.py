from django.apps import AppConfig


class BalancingConfig(AppConfig):
    name = "balancing"
    verbose_name = "Sites and load balancing"

    def ready(self) -> None:
        from balancing.groups import SiteGroupAccountHooks
        from balancing.receivers import receivers_connect
        from tenants.accounts.hooks import account_hooks_register

        # Tenancy sits below the domain: accounts asks balancing about site groups and grants.
        account_hooks_register(SiteGroupAccountHooks())
        # The charger app may not call balancing (balancing imports it); balancing listens to its events.
        receivers_connect()
