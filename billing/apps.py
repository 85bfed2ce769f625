from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and savings"

    def ready(self) -> None:
        # Balancing may not import billing; billing hands it the cost-aware policy instead.
        from balancing.models import Site
        from balancing.policy import policy_register
        from billing.policy import cost_aware_decide

        policy_register(name=Site.Policy.COST_AWARE, hook=cost_aware_decide)
