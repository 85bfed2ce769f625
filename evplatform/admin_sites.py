"""Two Django admin sites, because the two kinds of schema hold different tables.

``platform_admin_site`` (public schema, the platform domain): organisations, domains, the
charger identity registry, platform staff. ``tenant_admin_site`` (a tenant's domain): that
organisation's sites, circuits, chargers, sessions, meter data and users.
"""

from django.contrib.admin import AdminSite


class PlatformAdminSite(AdminSite):
    site_header = "EV platform: operator console"
    site_title = "EV platform"
    index_title = "Organisations and charger registry"


class TenantAdminSite(AdminSite):
    site_header = "EV load balancing: organisation admin"
    site_title = "EV load balancing"
    index_title = "Sites, chargers and users"


platform_admin_site = PlatformAdminSite(name="platform_admin")
tenant_admin_site = TenantAdminSite(name="tenant_admin")
