"""The Home Assistant Supervisor API, as seen from inside an add-on (SUPERVISOR_TOKEN)."""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp

SUPERVISOR_URL = "http://supervisor"


class SupervisorError(Exception):
    pass


def token() -> str | None:
    return os.environ.get("SUPERVISOR_TOKEN") or None


async def mqtt_service(base_url: str = SUPERVISOR_URL, timeout: float = 10.0) -> dict[str, Any]:
    """GET /services/mqtt: host, port, ssl, username, password of the broker add-on (e.g. Mosquitto)."""
    supervisor_token = token()
    if supervisor_token is None:
        raise SupervisorError("not running under the Supervisor (no SUPERVISOR_TOKEN)")
    headers = {"Authorization": f"Bearer {supervisor_token}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(f"{base_url}/services/mqtt", headers=headers) as response,
        ):
            text = await response.text(errors="replace")
    except TimeoutError:  # its text is empty
        raise SupervisorError(
            f"Supervisor MQTT service unreachable: no answer within {timeout:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise SupervisorError(f"Supervisor MQTT service unreachable: {exc}") from None
    try:
        body = json.loads(text)
    except ValueError:  # a proxy's error page (502 while the Supervisor restarts), not the API's JSON
        body = None
    if response.status != 200 or not isinstance(body, dict) or body.get("result") != "ok":
        message = body.get("message") if isinstance(body, dict) else None
        answer = " ".join(text.split())[:100]
        raise SupervisorError(
            f"no MQTT service from the Supervisor: {message or f'HTTP {response.status} {answer}'.strip()} "
            "(install the Mosquitto broker add-on, or set the mqtt options)"
        )
    data = body.get("data")
    if not isinstance(data, dict) or not data.get("host"):
        raise SupervisorError("the Supervisor's MQTT service reply has no host")
    return data
