"""factory_boy factories for tenant-schema rows; create them with the right tenant active."""

from datetime import UTC, datetime
from decimal import Decimal

import factory

from balancing.models import Circuit, Site
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.partitions import partitions_ensure
from tenants.accounts.models import Role, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    role = Role.SITE_VIEWER
    password = factory.django.Password("correct-horse-battery")


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    slug = factory.Sequence(lambda n: f"site-{n}")
    name = factory.Sequence(lambda n: f"Site {n}")
    limit_a = Decimal("63")
    demand_cap_kw = Decimal("20")


class CircuitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Circuit

    site = factory.SubFactory(SiteFactory)
    name = factory.Sequence(lambda n: f"Circuit {n}")
    limit_a = Decimal("32")


class ChargingStationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChargingStation

    charge_point_id = factory.Sequence(lambda n: f"CP-{n:04d}")
    site = factory.SubFactory(SiteFactory)
    max_current_a = Decimal("32")


class ConnectorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connector

    station = factory.SubFactory(ChargingStationFactory)
    connector_id = 1


class ChargingSessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ChargingSession

    connector = factory.SubFactory(ConnectorFactory)
    station = factory.SelfAttribute("connector.station")
    transaction_id = factory.Sequence(str)
    started_at = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    meter_start_wh = Decimal("1000")


class MeterReadingFactory(factory.django.DjangoModelFactory):
    """A meter reading row; its month's partition is made first (tests use fixed past dates)."""

    class Meta:
        model = MeterReading

    station = factory.SubFactory(ChargingStationFactory)
    sampled_at = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    connector_no = 1
    energy_wh = 1234.5

    @classmethod
    def _create(cls, model_class: type, *args: object, **kwargs: object) -> MeterReading:
        at = kwargs["sampled_at"]
        assert isinstance(at, datetime)
        partitions_ensure(at, at)
        return super()._create(model_class, *args, **kwargs)
