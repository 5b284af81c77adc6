"""check-domain's include-tree walker and check_host agree on the DNS
lookups and void lookups of an evaluation in which no mechanism matches,
over generated SPF records served by the loopback DNS server (they share
the rules: the terms tested, and A or AAAA by the client's IP version)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.checkdomain.spf_tree import walk_domain
from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.identity.check_host import MAX_LOOKUPS, MAX_VOID_LOOKUPS, SPFResult, check_host

DOMAINS = 4
CLIENTS = {4: "203.0.113.7", 6: "2001:db8:ffff::7"}
_runs = itertools.count()


def terms_of(index: int) -> st.SearchStrategy[list[str]]:
    """The terms of domain ``index``: lookups that find something or
    nothing, includes of later domains only (no loops), never a match."""
    later = [f"d{j}" for j in range(index + 1, DOMAINS)]
    plain = [
        "a",
        "a:h4and6",
        "a:h4only",
        "a:void",
        "mx:mx4and6",
        "mx:mx4only",
        "mx:mxvoid",
        "exists:void",
        "ptr",
        "ip4:192.0.2.1",
        "ip6:2001:db8:2::/48",
        "?all",
        "-all",
        "~all",
    ]
    term = st.sampled_from(plain + [f"include:{d}" for d in later])
    return st.lists(term, max_size=7)


@st.composite
def policies(draw: st.DrawFn) -> tuple[int, dict[int, str]]:
    version = draw(st.sampled_from([4, 6]))
    records: dict[int, str] = {}
    for index in range(DOMAINS):
        terms = draw(terms_of(index))
        later = [f"d{j}" for j in range(index + 1, DOMAINS)]
        if later and draw(st.booleans()):
            terms.append(f"redirect={draw(st.sampled_from(later))}")
        records[index] = " ".join(["v=spf1", *terms])
    return version, records


def zone(run: str, records: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Every name of one example below its own label, so examples never see
    each other's records."""

    def name(label: str) -> str:
        return f"{label}.{run}.parity.test"

    def qualify(record: str) -> str:
        words = []
        for word in record.split():
            for sep in (":", "="):
                head, found, tail = word.partition(sep)
                if found and head in {"a", "mx", "exists", "include", "redirect"}:
                    word = f"{head}{sep}{name(tail)}"
                    break
            words.append(word)
        return " ".join(words)

    data: dict[str, dict[str, Any]] = {
        name("h4and6"): {"A": ["198.51.100.1"], "AAAA": ["2001:db8:1::1"]},
        name("h4only"): {"A": ["198.51.100.2"]},
        name("mx4and6"): {"MX": [(10, name("h4and6"))]},
        name("mx4only"): {"MX": [(10, name("h4only"))]},
    }
    for index, record in records.items():
        data[name(f"d{index}")] = {"TXT": [qualify(record)]}
    return data


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(policies())
def test_walker_counts_what_check_host_counts(policy: tuple[int, dict[int, str]]) -> None:
    version, records = policy
    run = f"r{next(_runs)}"
    with DNSServer(zone(run, records)) as server:
        asyncio.run(_compare(server, version, f"d0.{run}.parity.test", records))


async def _compare(server: DNSServer, version: int, top: str, records: dict[int, str]) -> None:
    resolver = Resolver([server.address], timeout=2.0)
    outcome = await check_host(resolver, CLIENTS[version], top, f"someone@{top}")
    node = await walk_domain(resolver, top, CLIENTS[version])
    over = node.lookups > MAX_LOOKUPS or node.void_lookups > MAX_VOID_LOOKUPS
    context = f"IPv{version} {records}: {outcome}"
    assert outcome.result is not SPFResult.PASS, context
    if outcome.result is SPFResult.PERMERROR:
        assert over, context
    else:
        assert not over, context
        assert (node.lookups, node.void_lookups) == (outcome.lookups, outcome.void_lookups), context
