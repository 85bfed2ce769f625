"""A covering index for the site load chart (``balancing.selectors.site_load_series``).

Built CONCURRENTLY where the migration runs on its own (``migrate_schemas`` of a deployment):
``balancingrun`` is written every minute for every site and may hold months of runs, and a plain
CREATE INDEX would hold off every balancing run's insert while it builds. A new organisation's
schema is migrated inside its creation's transaction, where CONCURRENTLY is refused; its table
is empty there, so a plain CREATE INDEX is as quick.
"""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyWherePossible(AddIndexConcurrently):
    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            concurrently = not schema_editor.connection.in_atomic_block
            schema_editor.add_index(model, self.index, concurrently=concurrently)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            concurrently = not schema_editor.connection.in_atomic_block
            schema_editor.remove_index(model, self.index, concurrently=concurrently)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("balancing", "0014_site_balancing_policy"),
    ]

    operations = [
        AddIndexConcurrentlyWherePossible(
            model_name="balancingrun",
            index=models.Index(
                fields=["site", "started_at"],
                include=("measured_kw", "allocated_kw", "limit_kw", "unmanaged_kw"),
                name="run_site_chart",
            ),
        ),
    ]
