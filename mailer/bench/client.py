"""The platform's side of the API benchmark, run in a process of its own
(as the survey platform is): distributions encoded to JSON before the clock
starts, POSTed over keep-alive connections, each answer checked.

    python -m mailer.bench.client < plan.json > outcome.json

Only the standard library, so that starting the process costs little and
the figure is not the cost of an HTTP client library."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

BATCH = 1000


@dataclass(frozen=True)
class Plan:
    """What the client process does: ``batches`` distributions of
    ``BATCH`` recipients to ``url``, ``in_flight`` requests at a time."""

    url: str
    key: str
    batches: int
    in_flight: int
    html: str
    subject: str


@dataclass(frozen=True)
class Outcome:
    """Recipients the server accepted, and the seconds from the first
    request to the last answer; ``error`` when an answer was not a 202
    accepting the whole batch."""

    accepted: int
    seconds: float
    error: str | None = None


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


def _post_all(plan: Plan, bodies: list[bytes], accepted: list[int], errors: list[str]) -> None:
    parts = urlsplit(plan.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    headers = {"Authorization": f"Bearer {plan.key}", "Content-Type": "application/json"}
    try:
        for body in bodies:
            conn.request("POST", "/v1/distributions", body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 202:
                errors.append(f"answered {reply.status}: {data[:500]!r}")
                return
            count = json.loads(data)["accepted"]
            if count != BATCH:
                errors.append(f"accepted {count} of {BATCH}")
            accepted.append(count)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def run(plan: Plan) -> Outcome:
    encoded = [
        json.dumps(distribution_body(b, BATCH, plan.html, plan.subject)).encode("utf-8")
        for b in range(plan.batches)
    ]
    # each connection posts every in_flight-th batch, one after the other:
    # in_flight requests at a time, a new one as soon as one is answered
    shares = [encoded[i :: plan.in_flight] for i in range(plan.in_flight)]
    accepted: list[int] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_post_all, args=(plan, share, accepted, errors))
        for share in shares
        if share
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return Outcome(sum(accepted), seconds, errors[0] if errors else None)


def main() -> None:
    plan = Plan(**json.load(sys.stdin))
    json.dump(asdict(run(plan)), sys.stdout)


if __name__ == "__main__":
    main()
