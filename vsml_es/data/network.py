"""A bounded reachability check, run before anything is handed to a download manager.

TFDS's download manager retries a dead network for minutes, and name resolution alone can
block for a long time, so the probe runs in a daemon thread and is abandoned after ``timeout``.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request

PROBE_TIMEOUT_S = 4.0


class NetworkUnavailable(OSError):
    """The host of a download URL cannot be reached right now."""


def _endpoint(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if not parsed.hostname:
        raise NetworkUnavailable(f"URL without a host: {url}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.hostname, port


def check_reachable(url: str, timeout: float | None = None) -> None:
    """Return if a TCP connection to ``url``'s host (or its proxy) opens within ``timeout``."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    host, port = _endpoint(url)
    outcome: dict[str, BaseException | bool] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["ok"] = True
        except OSError as err:
            outcome["error"] = err

    thread = threading.Thread(target=attempt, name=f"probe-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("ok"):
        return
    reason = outcome.get("error") or f"no answer within {timeout:g} s"
    raise NetworkUnavailable(f"cannot reach {host}:{port} ({reason})")
