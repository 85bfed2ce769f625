"""Two Django admin sites, because the two kinds of schema hold different tables.

``platform_admin_site`` (public schema, the platform domain): organisations, domains, the
charger identity registry, platform staff. ``tenant_admin_site`` (a tenant's domain): that
organisation's sites, circuits, chargers, sessions, meter data and users.
"""

from typing import Any, cast

from django.contrib.admin import AdminSite
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache


class PlatformAdminSite(AdminSite):
    site_header = "EV platform: operator console"
    site_title = "EV platform"
    index_title = "Organisations and charger registry"


class TenantAdminSite(AdminSite):
    site_header = "EV load balancing: organisation admin"
    site_title = "EV load balancing"
    index_title = "Sites, chargers and users"

    @method_decorator(never_cache)
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Django's admin sign-in, through the portal's view: the organisation's SSO policy and
        second factor apply here too (tenants.accounts.views.SignInView)."""
        from tenants.accounts.forms import AdminSignInForm
        from tenants.accounts.views import SignInView

        if request.method == "GET" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        context = {
            **self.each_context(request),
            "title": _("Log in"),
            "subtitle": None,
            "app_path": request.get_full_path(),
            "username": request.user.get_username(),
        }
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=self.name)
        context.update(extra_context or {})
        request.current_app = self.name
        view = SignInView.as_view(
            extra_context=context, authentication_form=AdminSignInForm, template_name="admin/login.html"
        )
        return cast(HttpResponse, view(request))


platform_admin_site = PlatformAdminSite(name="platform_admin")
tenant_admin_site = TenantAdminSite(name="tenant_admin")
