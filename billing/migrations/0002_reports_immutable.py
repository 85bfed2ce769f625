"""The database itself refuses to change a stored report or its files (they are evidence)."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION billing_report_refuse_update() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'savings reports are immutable: regenerate to create a new version'
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
"""

TRIGGERS = """
CREATE TRIGGER billing_savingsreport_immutable BEFORE UPDATE ON billing_savingsreport
    FOR EACH ROW EXECUTE FUNCTION billing_report_refuse_update();
CREATE TRIGGER billing_savingsreportfile_immutable BEFORE UPDATE ON billing_savingsreportfile
    FOR EACH ROW EXECUTE FUNCTION billing_report_refuse_update();
"""

REVERSE = """
DROP TRIGGER IF EXISTS billing_savingsreportfile_immutable ON billing_savingsreportfile;
DROP TRIGGER IF EXISTS billing_savingsreport_immutable ON billing_savingsreport;
DROP FUNCTION IF EXISTS billing_report_refuse_update();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [migrations.RunSQL(FUNCTION + TRIGGERS, REVERSE)]
