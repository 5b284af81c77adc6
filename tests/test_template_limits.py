"""Template resource limits: rendered size per part, render time, loop
turns, range() and the calls that build huge strings. Refused at enqueue
with the field named; a worker fails such a send with reason ``template``
instead of growing. Real SQLite, real DNS server and sink for the worker."""

from __future__ import annotations

import resource

import pytest

from mailer.app import App
from mailer.enqueue import RecipientInput
from mailer.errors import TemplateError
from mailer.message.templates import Content, compile_content, render
from mailer.reasons import Reason, State
from mailer.store.models import NewDistribution
from tests.conftest import SURVEY, run_until_settled

ATTACKS = {
    # the 55-byte template that rendered to 200 MB
    "output in a loop": "{% for i in range(9999) %}{{ 'x' * 99999 }}{% endfor %}",
    "silent nested loops": (
        "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}"
    ),
    "nested loops over a string": (
        "{% set s = 'x' * 9999 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"
    ),
    "a long range": "{% for i in range(10**6) %}{% endfor %}",
    "a range past 10,000": "{% for i in range(50000) %}{% endfor %}",
    "doubling with ~": (
        "{% set ns = namespace(s='xx') %}"
        "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "doubling with +": (
        "{% set ns = namespace(s='xx') %}"
        "{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"
    ),
    "a wide center filter": "{{ 'x'|center(10**9) }}",
    "a wide ljust method": "{{ 'x'.ljust(10**9) }}",
    "a wide str.format": "{{ '{:999999999}'.format(1) }}",
    "a wide % format": "{{ '%999999999d' % 1 }}",
    "a wide format filter": "{{ '%999999999d'|format(1) }}",
    "a replace that multiplies": "{{ ('x' * 99999).replace('', 'yyyyyyyyyyyy') }}",
}


@pytest.mark.parametrize("html", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_template_past_its_limits_is_refused_naming_the_field(html: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = compile_content(Content(subject="s", html=html, text=None, unsubscribe_url=None))
    with pytest.raises(TemplateError) as err:
        render(compiled, {"name": "A", "email": "a@dest.test"})
    assert err.value.field == "html"
    # refused before it grew: a few MB at most (ru_maxrss is in KiB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_the_subject_has_the_same_limits() -> None:
    compiled = compile_content(
        Content(subject="{{ 'x'|center(10**9) }}", html="<p>x</p>", text=None, unsubscribe_url=None)
    )
    with pytest.raises(TemplateError) as err:
        render(compiled, {})
    assert err.value.field == "subject"


def test_ordinary_loops_filters_and_formats_still_render() -> None:
    html = (
        "{% for i in range(50) %}{{ loop.index }}{% if not loop.last %},{% endif %}{% endfor %}"
        "|{{ name|upper|center(12) }}|{{ '%05d' % 42 }}|{{ '{:>6}'.format('ab') }}"
        "|{{ ['a', 'b'] + ['c'] }}|{{ 'x' ~ 'y' }}|{{ note|upper }}"
    )
    compiled = compile_content(Content(subject="s", html=html, text=None, unsubscribe_url=None))
    # a recipient's value that looks like a wide format is only text
    out = render(compiled, {"name": "Jürgen", "note": "50% off {code 1234567}"}).html
    assert out is not None
    assert out.startswith("1,2,3,")
    assert "|   JÜRGEN   |00042|    ab|" in out
    assert out.endswith("|[&#39;a&#39;, &#39;b&#39;, &#39;c&#39;]|xy|50% OFF {CODE 1234567}")


async def test_enqueue_refuses_such_a_template_and_stores_nothing(app: App) -> None:
    dist = NewDistribution(**{**SURVEY.__dict__, "html": ATTACKS["output in a loop"]})
    with pytest.raises(TemplateError) as err:
        await app.enqueue(dist, [RecipientInput("a@dest.test", "A", {"token": "t"})])
    assert err.value.field == "html"
    assert await app.store.counts() == {}


async def test_a_worker_fails_a_send_whose_variables_blow_the_limits_with_reason_template(
    app: App, make_sink
) -> None:
    # the enqueue check renders once per set of variable names: the first
    # recipient's short value passes; the second's makes 300 x 300 x 300
    # characters (27 MB) at the worker
    sink = make_sink("127.0.0.2")
    make_sink("127.0.0.3")
    dist = NewDistribution(
        **{
            **SURVEY.__dict__,
            "html": "{% for a in v %}{% for b in v %}{{ v }}{% endfor %}{% endfor %}",
            "unsubscribe_url": None,
        }
    )
    result = await app.enqueue(
        dist,
        [
            RecipientInput("a@dest.test", "A", {"v": "x"}),
            RecipientInput("b@dest.test", "B", {"v": "y" * 300}),
        ],
    )
    await run_until_settled(app)
    small, big = [await app.store.send(i) for i in result.send_ids]
    assert small.state is State.DELIVERED
    assert (big.state, big.reason) == (State.FAILED, Reason.TEMPLATE)
    [event] = [e for e in await app.store.events(send_id=big.id) if e.state is State.FAILED]
    assert "longer than 1,000,000" in (event.detail or "")
    assert len(sink.messages) == 1
