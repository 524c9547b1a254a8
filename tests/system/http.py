"""Talking to the servers the system tests start."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_status(request: urllib.request.Request, timeout: float = 30) -> int:
    """The status the server answered *request* with, error statuses included."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
