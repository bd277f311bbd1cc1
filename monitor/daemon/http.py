"""A small HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

It runs on the event loop (not in a thread), so the scrape-time collectors
read the book between batches, never while one is half applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from monitor.daemon.health import Verdict
from monitor.errors import MonitorError

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_HEADER = 16 * 1024
_READ_TIMEOUT_S = 5.0


class HttpServer:
    """Serve the registry and two verdict callbacks on ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        liveness: Callable[[], tuple[Verdict, dict[str, object]]],
        readiness: Callable[[], tuple[Verdict, dict[str, object]]],
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._liveness = liveness
        self._readiness = readiness
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise MonitorError(
                f"http: cannot listen on {where} ([http] host/port): {exc.strerror or exc}"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        try:
            line = head[: min(len(head), _MAX_HEADER)].split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            path = target.split("?", 1)[0]
            status, ctype, body = self._route(method, path)
            body_out = b"" if method == "HEAD" else body
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + body_out
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path in ("/healthz", "/readyz"):
            verdict, extra = (self._liveness if path == "/healthz" else self._readiness)()
            body = orjson.dumps(verdict.body(**extra)) + b"\n"
            return (200 if verdict.ok else 503), "application/json", body
        return 404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n"
