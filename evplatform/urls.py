"""URL map of a tenant's domain (its own schema)."""

from django.urls import path

from evplatform.admin_sites import tenant_admin_site
from evplatform.views import healthz

urlpatterns = [
    path("admin/", tenant_admin_site.urls),
    path("healthz", healthz, name="healthz"),
]
