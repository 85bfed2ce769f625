"""What the interval rollup and the session draws share of their bulk reads of raw meter readings.

Schema: tenant (the readings' table is a tenant's).
"""

from datetime import datetime, timedelta

from billing.intervals import EPOCH
from chargepoint.models import MeterReading

# What the rollup needs of a station and its site (the rating and volts).
RATING_FIELDS = ("station__site_id", "station__max_current_a", "station__phases", "station__site__voltage_v")
READINGS = MeterReading._meta.db_table
# Bulk reads of readings take their time as microseconds since the epoch (an integer, which the
# driver reads in C) rather than a timestamptz (which Django's loader parses in Python, ~10 us a
# row). Their LATERAL subqueries end in OFFSET 0 so that the planner keeps them as a loop of
# short key ranges instead of joining the whole table by hash.
MICROS = '(extract(epoch FROM r."sampled_at") * 1000000)::bigint'


def instant(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)
