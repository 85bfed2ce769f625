"""Meter samples (one row per value) become meter readings (one row per instant, partitioned).

The new table is a PostgreSQL partitioned table made by SQL (Django has no operation for
one); Django's state gets the matching model. The readings still within the retention period
are folded into it, one row per station, instant and connector, then the old table goes.
"""

from datetime import timedelta

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

from chargepoint.gateway.normalise import DEFAULT_UNITS
from chargepoint.partitions import month_start, next_month, partitions_ensure, table_sql

_TYPED = {
    "energy_wh": "measurand = 'Energy.Active.Import.Register' AND phase = '' AND location IN ('', 'Outlet') AND unit = 'Wh'",
    "power_w": "measurand = 'Power.Active.Import' AND phase = '' AND location IN ('', 'Outlet') AND unit = 'W'",
    "current_a": "measurand = 'Current.Import' AND phase = '' AND location IN ('', 'Outlet') AND unit = 'A'",
    "current_l1_a": "measurand = 'Current.Import' AND phase = 'L1' AND location IN ('', 'Outlet') AND unit = 'A'",
    "current_l2_a": "measurand = 'Current.Import' AND phase = 'L2' AND location IN ('', 'Outlet') AND unit = 'A'",
    "current_l3_a": "measurand = 'Current.Import' AND phase = 'L3' AND location IN ('', 'Outlet') AND unit = 'A'",
    "offered_a": "measurand = 'Current.Offered' AND phase = '' AND location IN ('', 'Outlet') AND unit = 'A'",
    "voltage_v": "measurand = 'Voltage' AND phase = '' AND location IN ('', 'Outlet') AND unit = 'V'",
    "soc_pct": "measurand = 'SoC' AND phase = '' AND unit = 'Percent'",
}
_CONTEXTS = {
    "Sample.Periodic": 1,
    "Sample.Clock": 2,
    "Transaction.Begin": 3,
    "Transaction.End": 4,
    "Trigger": 5,
    "Interruption.Begin": 6,
    "Interruption.End": 7,
}


def create_partitions_and_copy(apps, schema_editor):
    now = timezone.now()
    since = now - timedelta(days=settings.TELEMETRY_RETENTION_DAYS)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT min(sampled_at) FROM chargepoint_metersample WHERE sampled_at >= %s", [since])
        oldest = cursor.fetchone()[0]
        ahead = next_month(month_start(now))
        partitions_ensure(min(oldest or now, now), ahead)
        context = "CASE s.context " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in _CONTEXTS.items())
        context += " WHEN '' THEN 0 ELSE 8 END"
        typed = ", ".join(f"max(s.value::float8) FILTER (WHERE {cond})" for cond in _TYPED.values())
        any_typed = " OR ".join(f"({cond})" for cond in _TYPED.values())
        # As ``chargepoint.readings.extra_key``: the unit only where it is not the measurand's base unit.
        base_unit = "CASE " + " ".join(f"WHEN starts_with(s.measurand, '{p}') THEN '{u}'" for p, u in DEFAULT_UNITS)
        base_unit += " ELSE '' END"
        key = (
            "s.measurand || CASE WHEN s.phase <> '' THEN '|' || s.phase ELSE '' END"
            " || CASE WHEN s.location <> '' THEN '@' || s.location ELSE '' END"
            f" || CASE WHEN s.unit <> '' AND s.unit <> ({base_unit}) THEN '#' || s.unit ELSE '' END"
        )
        cursor.execute(
            f"""
            INSERT INTO chargepoint_meterreading
                (station_id, sampled_at, connector_no, session_id, context, {", ".join(_TYPED)}, extra)
            SELECT s.station_id, s.sampled_at, COALESCE(c.connector_id, 0), max(s.session_id),
                   max({context}), {typed},
                   jsonb_object_agg({key}, s.value::float8) FILTER (WHERE NOT ({any_typed}))
            FROM chargepoint_metersample s LEFT JOIN chargepoint_connector c ON c.id = s.connector_id
            WHERE s.sampled_at >= %s
            GROUP BY s.station_id, s.sampled_at, COALESCE(c.connector_id, 0)
            ON CONFLICT DO NOTHING
            """,
            [since],
        )


class Migration(migrations.Migration):
    dependencies = [
        ("chargepoint", "0005_closed_loop"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="MeterReading",
                    fields=[
                        ("pk", models.CompositePrimaryKey("station", "sampled_at", "connector_no", blank=True, editable=False, primary_key=True, serialize=False)),
                        ("sampled_at", models.DateTimeField()),
                        ("connector_no", models.PositiveSmallIntegerField(help_text="OCPP connectorId / EVSE id; 0: the main meter.")),
                        ("context", models.PositiveSmallIntegerField(choices=[(0, ""), (1, "Sample.Periodic"), (2, "Sample.Clock"), (3, "Transaction.Begin"), (4, "Transaction.End"), (5, "Trigger"), (6, "Interruption.Begin"), (7, "Interruption.End"), (8, "Other")], default=0)),
                        ("energy_wh", models.FloatField(help_text="Energy.Active.Import.Register at the outlet (Wh).", null=True)),
                        ("power_w", models.FloatField(help_text="Power.Active.Import, all phases (W).", null=True)),
                        ("current_a", models.FloatField(help_text="Current.Import without a phase (A).", null=True)),
                        ("current_l1_a", models.FloatField(help_text="Current.Import on the station's L1 (A).", null=True)),
                        ("current_l2_a", models.FloatField(help_text="Current.Import on L2 (A).", null=True)),
                        ("current_l3_a", models.FloatField(help_text="Current.Import on L3 (A).", null=True)),
                        ("offered_a", models.FloatField(help_text="Current.Offered (A).", null=True)),
                        ("voltage_v", models.FloatField(help_text="Voltage without a phase (V).", null=True)),
                        ("soc_pct", models.FloatField(help_text="State of charge of the car (%).", null=True)),
                        ("extra", models.JSONField(help_text="Other values: 'measurand[|phase][@location]' -> value in base units.", null=True)),
                        ("session", models.ForeignKey(db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name="+", to="chargepoint.chargingsession")),
                        ("station", models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name="+", to="chargepoint.chargingstation")),
                    ],
                    options={
                        "ordering": ["station", "sampled_at", "connector_no"],
                        "indexes": [models.Index(fields=["sampled_at"], name="reading_sampled_at")],
                    },
                ),
            ],
            database_operations=[migrations.RunSQL(sql, reverse_sql=migrations.RunSQL.noop) for sql in table_sql()],
        ),
        migrations.RunPython(create_partitions_and_copy, migrations.RunPython.noop),
        migrations.CreateModel(
            name="RollupPending",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("interval_start", models.DateTimeField()),
                ("session", models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="chargepoint.chargingsession")),
                ("station", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="chargepoint.chargingstation")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("station", "interval_start", "session"), name="rollup_pending_unique", nulls_distinct=False)],
            },
        ),
        migrations.DeleteModel(name="MeterSample"),
    ]
