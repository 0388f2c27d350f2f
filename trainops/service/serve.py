"""Running the service: uvicorn in the foreground, or in a thread for the demo and tests."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from trainops.config import Settings
from trainops.errors import ConfigError
from trainops.service.app import create_app


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: connections of a previous (killed) server lingering in
        # TIME_WAIT must not block a restart; a live listener still fails the bind.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"serving on {host}:{port}: {exc.strerror}; is another trainops serve running? "
                "choose another with --port or TRAINOPS_SERVICE__PORT"
            ) from exc


def serve_forever(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _check_port(settings.service.host, settings.service.port)
    app = create_app(settings)
    uvicorn.run(app, host=settings.service.host, port=settings.service.port, log_level="info")


class BackgroundServer:
    """The service in a thread of this process; ``url`` once started."""

    def __init__(self, settings: Settings, **app_options: object) -> None:
        self.settings = settings
        app = create_app(settings, **app_options)  # type: ignore[arg-type]
        self.app = app
        config = uvicorn.Config(
            app,
            host=settings.service.host,
            port=settings.service.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="trainops-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.service.host}:{self.port}"

    @property
    def port(self) -> int:
        servers = getattr(self.server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.settings.service.port

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        if self.settings.service.port:
            _check_port(self.settings.service.host, self.settings.service.port)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"starting the service on {self.url}: it did not come up")
            time.sleep(0.02)
        if not self.settings.service.public_url and not self.settings.service.port:
            self.settings.service.public_url = self.url  # links in reports need the real port
        return self

    def drain_reports(self, timeout: float = 15.0) -> bool:
        """Wait until every queued report reached its forge (or ``timeout``)."""
        store = getattr(self.app.state, "store", None)
        deadline = time.monotonic() + timeout
        while store is not None and time.monotonic() < deadline:
            if store.pending_reports() == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
