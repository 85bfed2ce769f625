"""The SHA-256 digests that tariff versions and savings reports carry.

Pure. A JSON value is hashed as its canonical form (sorted keys, no spaces, anything JSON has no
type for as its string), so the same record or report data gives the same digest however its
keys were ordered.
"""

import hashlib
import json
from typing import Any


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
