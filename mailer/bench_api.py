"""API enqueue throughput for ``mailer bench``: distributions of 1,000
recipients POSTed to a real server on loopback, each answered only once
stored durably."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.config import load_config
from mailer.errors import MailerError

BATCH = 1000
KEY = "bench-key-0123456789abcdef"


def distribution_body(batch: int, size: int, html: str, subject: str) -> dict[str, Any]:
    return {
        "account": "bench",
        "sender": {"address": "umfragen@customer.bench.test", "name": "Kundenservice"},
        "subject": subject,
        "html": html,
        "recipients": [
            {
                "email": f"r{batch}-{i}@d{i % 4}.bench.test",
                "name": f"Befragte Person {i}",
                "variables": {"token": f"{batch:04d}{i:06d}"},
            }
            for i in range(size)
        ],
    }


async def api_enqueue_rate(
    root: Path, recipients: int, *, html: str, subject: str, database: str | None = None
) -> float:
    """Recipients per second accepted by ``POST /v1/distributions`` in
    batches of 1,000 (two requests in flight, as a platform with a couple of
    senders would have)."""
    config = load_config(
        environ={},
        overrides={
            "hostname": "bench.test",
            "database": database or str(root / "api-bench.sqlite3"),
            "dkim": {"required": False},
            "api": {
                "keys": [KEY],
                "secret": "bench-secret-bench-secret-bench-secret",
                "public_url": "https://mailer.bench.test",
            },
        },
    )
    batches = max(1, recipients // BATCH)
    bodies = [distribution_body(b, BATCH, html, subject) for b in range(batches)]
    async with App(config) as app:
        api = create_api(app)
        async with (
            ApiServer(api) as server,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
            ) as client,
        ):

            async def post(body: dict[str, Any]) -> None:
                reply = await client.post("/v1/distributions", json=body)
                if reply.status_code != 202:
                    raise MailerError(f"bench: enqueue answered {reply.status_code}: {reply.text}")

            start = time.perf_counter()
            for index in range(0, len(bodies), 2):
                pair = bodies[index : index + 2]
                await asyncio.gather(*(post(body) for body in pair))
            elapsed = time.perf_counter() - start
    return batches * BATCH / elapsed
