"""URL map of the platform domain (public schema)."""

from django.urls import path

from evplatform.admin_sites import platform_admin_site

urlpatterns = [
    path("admin/", platform_admin_site.urls),
]
