"""The OCPP gateway: websocket server, charger connections, telemetry hand-off, command intake.

Schema: public for the identity registry only. The gateway writes nothing into a tenant schema:
telemetry goes to Celery tasks that run in the charger's tenant schema (see ``telemetry``), and
the few tenant reads it needs (idTag allow-list, transaction ids) run in its own DB threads
with the schema named on every call (see ``link``). A message that carries data is answered
only once RabbitMQ confirmed the batch holding its events (see ``telemetry``), so what a
charger was told is stored survives a hard kill of the gateway.
"""
