"""API enqueue throughput for ``mailer bench``: distributions of 1,000
recipients POSTed to a real server on loopback by a client in another
process (:mod:`mailer.bench.client`), each answered only once stored
durably."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from dataclasses import asdict
from pathlib import Path

from mailer import loop
from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.bench import client as bench_client
from mailer.config import load_config
from mailer.errors import MailerError

BATCH = bench_client.BATCH
KEY = "bench-key-0123456789abcdef"
IN_FLIGHT = 2


async def _client(plan: bench_client.Plan) -> bench_client.Outcome:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer.bench.client",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(json.dumps(asdict(plan)).encode("utf-8"))
    if process.returncode != 0:
        raise MailerError(f"bench: the API client process exited with {process.returncode}")
    return bench_client.Outcome(**json.loads(out))


async def api_enqueue_rate(
    root: Path, recipients: int, *, html: str, subject: str, database: str | None = None
) -> float:
    """Recipients per second accepted by ``POST /v1/distributions`` in
    batches of 1,000 (two requests in flight, as a platform with a couple of
    senders would have). Raises MailerError when an answer is not a 202
    accepting the whole batch."""
    config = load_config(
        environ={},
        overrides={
            "hostname": "bench.test",
            "database": database or str(root / "api-bench.sqlite3"),
            "dkim": {"required": False},
            "api": {
                "keys": [KEY],
                "secret": "bench-secret-bench-secret-bench-secret",
                "public_url": "https://mailer.bench.runner.test",
            },
        },
    )
    batches = max(1, recipients // BATCH)
    thresholds = gc.get_threshold()
    async with App(config) as app, ApiServer(create_api(app)) as server:
        loop.settle_heap()  # as `mailer serve` does
        try:
            plan = bench_client.Plan(server.url, KEY, batches, IN_FLIGHT, html, subject)
            outcome = await _client(plan)
        finally:
            # the rest of `mailer bench` measures with the collector as it was
            gc.unfreeze()
            gc.set_threshold(*thresholds)
    if outcome.error is not None:
        raise MailerError(f"bench: enqueue {outcome.error}")
    return outcome.accepted / outcome.seconds
