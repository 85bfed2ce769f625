"""OCPP 1.6J: the gateway's handlers for a 1.6 charger (core and smart charging).

Schema: none directly; each handler calls a service of the connection's ``ChargerLink`` and
returns the library's ``call_result``. Validation errors raise the CALLERROR the spec names.
The handlers of messages that carry data (status, transactions, meter values) answer only
once their events are on the broker (``link.stored``); Boot and Heartbeat answer at once.
"""

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, RegistrationStatus

from chargepoint.gateway.link import ocpp_time
from chargepoint.gateway.protocol import GatewayChargePoint

logger = logging.getLogger("chargepoint.gateway")
# The frequent messages: checked by the gateway's compiled schemas (gateway.schemas).
PREVALIDATED = ("MeterValues", "Heartbeat", "StatusNotification")


class ChargePoint16(GatewayChargePoint, ChargePoint):
    ocpp_version = "1.6"
    call_module = call
    prevalidated_actions = frozenset(PREVALIDATED)
    platform_actions = frozenset(
        {
            "SetChargingProfile",
            "ClearChargingProfile",
            "GetCompositeSchedule",
            "RemoteStartTransaction",
            "RemoteStopTransaction",
            "ChangeAvailability",
            "ChangeConfiguration",
            "GetConfiguration",
            "Reset",
            "TriggerMessage",
        }
    )

    @on(Action.boot_notification)
    def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str, **kw: Any) -> Any:
        self.link.boot(
            vendor=charge_point_vendor,
            model=charge_point_model,
            serial_number=kw.get("charge_point_serial_number") or kw.get("charge_box_serial_number") or "",
            firmware_version=kw.get("firmware_version") or "",
        )
        return call_result.BootNotification(
            current_time=ocpp_time(), interval=self.link.heartbeat_interval_s, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat, skip_schema_validation=True)
    def on_heartbeat(self) -> Any:
        self.link.heartbeat()
        return call_result.Heartbeat(current_time=ocpp_time())

    @on(Action.status_notification, skip_schema_validation=True)
    async def on_status_notification(
        self, connector_id: int, error_code: str, status: str, timestamp: str | None = None, **kw: Any
    ) -> Any:
        self.link.status(
            connector_id=connector_id,
            status=status,
            error_code=error_code,
            at=timestamp,
            vendor_error_code=str(kw.get("vendor_error_code") or ""),
        )
        await self.link.stored()
        return call_result.StatusNotification()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str) -> Any:
        return call_result.Authorize(id_tag_info={"status": await self.link.authorize(id_tag)})

    @on(Action.start_transaction)
    async def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kw: Any
    ) -> Any:
        transaction_id, status = await self.link.start_transaction(
            connector_id=connector_id, id_tag=id_tag, meter_start=meter_start, timestamp=timestamp
        )
        await self.link.stored()
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info={"status": status})

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, meter_stop: int, timestamp: str, transaction_id: int, **kw: Any) -> Any:
        self.link.stop_transaction(
            transaction_id=transaction_id,
            meter_stop=meter_stop,
            timestamp=timestamp,
            reason=kw.get("reason"),
            transaction_data=kw.get("transaction_data"),
        )
        await self.link.stored()
        return call_result.StopTransaction(id_tag_info={"status": "Accepted"} if kw.get("id_tag") else None)

    @on(Action.meter_values, skip_schema_validation=True)
    async def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **kw: Any) -> Any:
        self.link.meter_values_16(
            connector_id=connector_id, meter_value=meter_value, transaction_id=kw.get("transaction_id")
        )
        await self.link.stored()
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **kw: Any) -> Any:
        logger.info("%s: DataTransfer from vendor %.50r", self.id, vendor_id)
        return call_result.DataTransfer(status=self.link.data_transfer_status(vendor_id))

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(self, status: str) -> Any:
        self.link.heartbeat()
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, status: str) -> Any:
        logger.info("%s: firmware %s", self.id, status)
        self.link.heartbeat()
        return call_result.FirmwareStatusNotification()
