"""The gateway's Prometheus metrics, served as text at ``GET /metrics`` on the gateway's port.

Schema: none. Each ``Gateway`` has a registry of its own (several may run in one process, in
tests), so nothing here is process-global. Names start with ``evp_gateway_``:

- ``evp_gateway_connected_chargers{protocol}``: open charger connections (gauge).
- ``evp_gateway_messages_received_total{action}``: frames received; the charger's calls by
  action (an action the gateway does not handle is ``other``, so a charger cannot mint
  labels), the charger's answers to our commands as ``answer``. ``rate()`` of it is messages/s.
- ``evp_gateway_ack_latency_seconds``: a data-bearing message's arrival to its answer (the
  answer waits for the broker's confirm of its batch), as a histogram.
- ``evp_gateway_handshakes_total{outcome}``: ``ok``, ``wrong_password``, ``unknown``,
  ``throttled``, ``overloaded`` (see ``auth``), and ``refused`` (bad path, no shared
  subprotocol, no credentials).
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ACK_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connected = Gauge(
            "evp_gateway_connected_chargers",
            "Open charger connections",
            ["protocol"],
            registry=self.registry,
        )
        self.messages = Counter(
            "evp_gateway_messages_received",
            "OCPP frames received from chargers, by action",
            ["action"],
            registry=self.registry,
        )
        self.ack_latency = Histogram(
            "evp_gateway_ack_latency_seconds",
            "A data-bearing message's arrival to its answer (seconds)",
            buckets=ACK_BUCKETS_S,
            registry=self.registry,
        )
        self.handshakes = Counter(
            "evp_gateway_handshakes",
            "Websocket handshakes, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for protocol in ("ocpp1.6", "ocpp2.0.1"):
            self.connected.labels(protocol)
        for outcome in ("ok", "wrong_password", "unknown", "throttled", "overloaded", "refused"):
            self.handshakes.labels(outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
