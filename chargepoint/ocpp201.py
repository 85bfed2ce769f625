"""OCPP 2.0.1: the gateway's handlers for a 2.0.1 charging station.

Schema: none directly; each handler calls a service of the connection's ``ChargerLink`` and
returns the library's ``call_result``. EVSE ids are stored as connector ids (one outlet per
EVSE, as the balancer sees it). The handlers of messages that carry data (status, transaction
events, meter values, charging needs and limits) answer only once their events are on the
broker (``link.stored``); Boot and Heartbeat answer at once.
"""

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action, RegistrationStatusEnumType

from chargepoint.gateway.link import ocpp_time
from chargepoint.gateway.protocol import GatewayChargePoint

logger = logging.getLogger("chargepoint.gateway")
# The frequent messages: checked by the gateway's compiled schemas (gateway.schemas).
PREVALIDATED = ("MeterValues", "Heartbeat", "StatusNotification", "TransactionEvent")


class ChargePoint201(GatewayChargePoint, ChargePoint):
    ocpp_version = "2.0.1"
    call_module = call
    prevalidated_actions = frozenset(PREVALIDATED)
    platform_actions = frozenset(
        {
            "SetChargingProfile",
            "ClearChargingProfile",
            "GetCompositeSchedule",
            "GetChargingProfiles",
            "RequestStartTransaction",
            "RequestStopTransaction",
            "ChangeAvailability",
            "GetVariables",
            "SetVariables",
            "Reset",
            "TriggerMessage",
        }
    )

    @on(Action.boot_notification)
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **kw: Any) -> Any:
        self.link.boot_201(charging_station=charging_station)
        return call_result.BootNotification(
            current_time=ocpp_time(),
            interval=self.link.heartbeat_interval_s,
            status=RegistrationStatusEnumType.accepted,
        )

    @on(Action.heartbeat, skip_schema_validation=True)
    def on_heartbeat(self, **kw: Any) -> Any:
        self.link.heartbeat()
        return call_result.Heartbeat(current_time=ocpp_time())

    @on(Action.status_notification, skip_schema_validation=True)
    async def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **kw: Any
    ) -> Any:
        self.link.status(connector_id=evse_id, status=connector_status, at=timestamp)
        await self.link.stored()
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **kw: Any) -> Any:
        return call_result.Authorize(id_token_info={"status": await self.link.authorize_token(id_token)})

    @on(Action.transaction_event, skip_schema_validation=True)
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        **kw: Any,
    ) -> Any:
        status = await self.link.transaction_event(
            event_type=event_type,
            timestamp=timestamp,
            transaction_info=transaction_info,
            meter_value=kw.get("meter_value"),
            evse=kw.get("evse"),
            id_token=kw.get("id_token"),
        )
        await self.link.stored()
        return call_result.TransactionEvent(id_token_info={"status": status} if status else None)

    @on(Action.meter_values, skip_schema_validation=True)
    async def on_meter_values(self, evse_id: int, meter_value: list[dict[str, Any]], **kw: Any) -> Any:
        self.link.meter_values_201(evse_id=evse_id, meter_value=meter_value)
        await self.link.stored()
        return call_result.MeterValues()

    @on(Action.notify_ev_charging_needs)
    async def on_notify_ev_charging_needs(self, charging_needs: dict[str, Any], evse_id: int, **kw: Any) -> Any:
        self.link.charging_needs_201(evse_id=evse_id, charging_needs=charging_needs)
        await self.link.stored()
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @on(Action.notify_charging_limit)
    async def on_notify_charging_limit(
        self,
        charging_limit: dict[str, Any],
        evse_id: int | None = None,
        charging_schedule: list[dict[str, Any]] | None = None,
        **kw: Any,
    ) -> Any:
        self.link.charging_limit_201(
            evse_id=evse_id, source=charging_limit.get("charging_limit_source", ""), schedules=charging_schedule
        )
        await self.link.stored()
        return call_result.NotifyChargingLimit()

    @on(Action.cleared_charging_limit)
    async def on_cleared_charging_limit(self, charging_limit_source: str, evse_id: int | None = None, **kw: Any) -> Any:
        self.link.charging_limit_201(evse_id=evse_id, source=charging_limit_source, schedules=None)
        await self.link.stored()
        return call_result.ClearedChargingLimit()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> Any:
        logger.info("%s: DataTransfer from vendor %.50r", self.id, vendor_id)
        return call_result.DataTransfer(status=self.link.data_transfer_status(vendor_id))

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, status: str, **kw: Any) -> Any:
        logger.info("%s: firmware %s", self.id, status)
        self.link.heartbeat()
        return call_result.FirmwareStatusNotification()
