"""The FastAPI application: webhooks in, JSON API out, health for orchestrators.

``create_app(settings)`` builds everything from values passed in; nothing is
created at import time. A webhook request verifies, parses, stores and
answers 202 — no git, no forge call, no pipeline work — so it stays within
milliseconds of the forge's 10 s deadline whatever the worker is doing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from trainops import __version__
from trainops.config import Secret, Settings
from trainops.errors import StoreError
from trainops.forges.registry import ForgeRegistry
from trainops.models import Event
from trainops.reports.reporter import Reporter
from trainops.service import api
from trainops.service.worker import ExecutorFactory, Worker, _local_runner
from trainops.store import Store
from trainops.webhooks import MalformedDelivery, WebhookRejected, parse

log = logging.getLogger(__name__)

FORGES = ("github", "gitlab", "githook")
# The route says /webhooks/git; settings name the source "githook".
ROUTE_FORGE = {"github": "github", "gitlab": "gitlab", "git": "githook"}


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    executor_factory: ExecutorFactory = _local_runner,
    registry: ForgeRegistry | None = None,
    start_worker: bool = True,
) -> FastAPI:
    """The service. ``store``, ``executor_factory`` and ``registry`` are for tests and embedding."""
    forges = settings.forges()  # ConfigError here: refuse to start half-configured

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            the_store = store
        else:
            the_store = await run_in_threadpool(Store.open, settings.store_uri())
        forges = registry or ForgeRegistry(settings)
        reporter = Reporter(settings, the_store, forges)
        worker = Worker(
            settings,
            the_store,
            executor_factory=executor_factory,
            reporter=reporter,
            forges=forges,
        )
        app.state.store = the_store
        app.state.worker = worker
        if start_worker and settings.service.worker:
            worker.start()
        try:
            yield
        finally:
            worker.stop()
            if store is None:
                the_store.close()

    app = FastAPI(
        title="trainops",
        version=__version__,
        summary="GitOps CI/CD for machine learning on GPUs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.forges = forges

    @app.post("/webhooks/{source}", status_code=202, tags=["webhooks"])
    async def receive(source: str, request: Request) -> JSONResponse:
        """A delivery from GitHub, GitLab or a git server's post-receive hook."""
        forge = ROUTE_FORGE.get(source)
        if forge is None:
            raise HTTPException(404, f"unknown webhook source {source!r}")
        secret = forges.get(forge)
        if secret is None:
            raise HTTPException(
                404,
                f"{forge} webhooks are not enabled: set TRAINOPS_{forge.upper()}__WEBHOOK_SECRET",
            )
        body = await _read_body(request, settings.service.max_body_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        events = _parse(forge, headers, body, secret)
        store_: Store = request.app.state.store
        try:
            if not events:
                await run_in_threadpool(_record_ignored, store_, forge, headers, body)
                return JSONResponse({"status": "ignored"}, status_code=202)
            stored = [await run_in_threadpool(store_.add_event, e) for e in events]
        except StoreError as exc:
            log.error("storing a %s delivery: %s", forge, exc)
            raise HTTPException(503, "the event store is unavailable; redeliver later") from exc
        request.app.state.worker.wake.set()
        duplicate = all(not created for _, created in stored)
        return JSONResponse(
            {
                "status": "duplicate" if duplicate else "accepted",
                "events": [record.id for record, _ in stored],
            },
            status_code=202,
        )

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(request: Request) -> dict[str, Any]:
        """The store answers: deliveries can be accepted."""
        try:
            request.app.state.store.ping()
        except StoreError as exc:
            raise HTTPException(503, f"store unavailable: {exc}") from exc
        return {"status": "ready", "forges": sorted(forges)}

    app.include_router(api.router)
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 past ``limit`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"payload over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"payload over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(forge: str, headers: dict[str, str], body: bytes, secret: Secret) -> list[Event]:
    try:
        return parse(forge, headers, body, secret.reveal())
    except WebhookRejected as exc:
        log.warning("rejected a %s delivery: %s", forge, exc)
        raise HTTPException(401, str(exc)) from exc
    except MalformedDelivery as exc:
        raise HTTPException(400, str(exc)) from exc


_DELIVERY_HEADERS = (
    "x-github-delivery",
    "idempotency-key",
    "x-gitlab-event-uuid",
    "x-gitlab-webhook-uuid",
)
_KIND_HEADERS = ("x-github-event", "x-gitlab-event")


def _record_ignored(store: Store, forge: str, headers: dict[str, str], body: bytes) -> None:
    """Keep a verified delivery we do not act on, so the event log is complete."""
    delivery = next((headers[h] for h in _DELIVERY_HEADERS if headers.get(h)), None)
    delivery = delivery or "sha256:" + hashlib.sha256(body).hexdigest()
    kind = next((headers[h] for h in _KIND_HEADERS if headers.get(h)), "unknown")
    event = Event(forge=forge, delivery_id=delivery, kind=kind, repo=None)
    store.add_event(
        event, status="ignored", note=f"this {kind!r} delivery asks nothing of trainops"
    )
