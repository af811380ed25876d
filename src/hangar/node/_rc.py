"""A minimal client for rclone's remote-control API over a unix socket.

The socket lives in a 0700 directory and the server requires a random user and password (given
to rclone through its environment, never its command line), so only this user's Hangar can ask
rclone anything. Only the standard library is used: one short HTTP POST per call.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from typing import Any


class RcError(OSError):
    """rclone's remote control could not be reached or answered with an error."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RcClient:
    """Calls `rclone rc` methods on one rclone process."""

    def __init__(self, socket_path: str, user: str, password: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """POST `method` with `params`; the decoded JSON answer. Raises RcError."""
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            conn.request("POST", "/" + method, body=json.dumps(params), headers=self._headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RcError(f"rclone remote control {method}: {exc}") from exc
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise RcError(f"rclone remote control {method}: not JSON: {raw[:200]!r}") from exc
        if response.status != 200 or not isinstance(data, dict):
            detail = data.get("error") if isinstance(data, dict) else data
            raise RcError(f"rclone remote control {method}: HTTP {response.status}: {detail}")
        return data
