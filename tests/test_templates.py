from __future__ import annotations

from pathlib import Path

import pytest

from mailer.errors import TemplateError, ValidationError
from mailer.message.templates import (
    CompiledContent,
    Content,
    compile_content,
    derive_text_template,
    html_to_text,
    render,
)

RECIPIENT = {"email": "anna+survey@example.de", "name": "Anna", "token": "t0k"}


def _compiled(
    subject: str = "Umfrage",
    html: str | None = "<p>Hallo {{ name }}</p>",
    text: str | None = None,
    unsubscribe_url: str | None = None,
) -> CompiledContent:
    return compile_content(Content(subject, html, text, unsubscribe_url))


@pytest.mark.parametrize("field", ["subject", "html", "text", "unsubscribe_url"])
def test_syntax_error_names_the_field(field: str) -> None:
    sources = {
        "subject": "s",
        "html": "<p>h</p>",
        "text": "t",
        "unsubscribe_url": "https://u.example/",
    }
    sources[field] = "{% if x %}never closed"
    with pytest.raises(TemplateError) as info:
        compile_content(Content(**sources))
    assert info.value.field == field
    assert "syntax error" in info.value.reason


def test_html_or_text_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        compile_content(Content("Umfrage", None, "  "))
    assert info.value.field == "html"


@pytest.mark.parametrize(
    "source", ["{% include 'other.html' %}", "{% extends 'base.html' %}", "{% import 'm' as m %}"]
)
def test_templates_cannot_load_other_templates(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        _compiled(html=source)
    assert info.value.field == "html"


def test_html_is_autoescaped_and_plain_text_fields_are_not() -> None:
    compiled = _compiled(
        subject="Umfrage für {{ company }}",
        html="<p>{{ company }}</p>",
        text="Firma: {{ company }}",
    )
    rendered = render(compiled, {"company": "Müller & <Söhne>"})
    assert rendered.subject == "Umfrage für Müller & <Söhne>"
    assert rendered.html == "<p>Müller &amp; &lt;Söhne&gt;</p>"
    assert rendered.text == "Firma: Müller & <Söhne>"


@pytest.mark.parametrize("field", ["subject", "html", "text", "unsubscribe_url"])
def test_undefined_variable_names_field_and_variable(field: str) -> None:
    sources = {
        "subject": "s",
        "html": "<p>h</p>",
        "text": "t",
        "unsubscribe_url": "https://u.example/",
    }
    sources[field] += "{{ first_name }}"
    compiled = compile_content(Content(**sources))
    with pytest.raises(TemplateError) as info:
        render(compiled, RECIPIENT)
    assert info.value.field == field
    assert info.value.reason == "undefined variable 'first_name'"


def test_undefined_variable_in_a_condition_is_refused_too() -> None:
    with pytest.raises(TemplateError) as info:
        render(_compiled(html="{% if vip %}VIP{% endif %}"), RECIPIENT)
    assert info.value.reason == "undefined variable 'vip'"


def test_optional_variables_can_be_tested_or_defaulted() -> None:
    compiled = _compiled(
        html="{{ title | default('Hallo') }} {% if vip is defined %}VIP{% endif %}"
    )
    assert render(compiled, {}).html == "Hallo "
    assert render(compiled, {"title": "Hi", "vip": "1"}).html == "Hi VIP"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ name.__class__.__base__.__subclasses__() }}",
        "{{ name | attr('__class__') }}",
        "{{ '{0.__class__}'.format(name) }}",
        "{% set l = [] %}{{ l.append(1) }}",
    ],
)
def test_sandbox_escape_attempts_are_refused(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(_compiled(html=source), RECIPIENT)
    assert info.value.field == "html"
    assert "unsafe" in info.value.reason


def test_sandbox_escape_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    source = "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
    with pytest.raises(TemplateError):
        render(_compiled(html=source), RECIPIENT)
    assert not marker.exists()


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ 9 ** 99999999 }}",
        "{{ range(10**8) | list }}",
    ],
)
def test_resource_bombs_are_refused_at_render_and_not_folded_at_compile(source: str) -> None:
    compiled = _compiled(html=source)
    with pytest.raises(TemplateError) as info:
        render(compiled, RECIPIENT)
    assert info.value.field == "html"


def test_errors_inside_expressions_become_template_errors() -> None:
    with pytest.raises(TemplateError) as info:
        render(_compiled(text="{{ 1 / 0 }}"), RECIPIENT)
    assert info.value.field == "text"
    assert "ZeroDivisionError" in info.value.reason


def test_cr_lf_in_rendered_subject_is_rejected() -> None:
    compiled = _compiled(subject="Hallo {{ name }}")
    with pytest.raises(ValidationError) as info:
        render(compiled, {"name": "Anna\r\nBcc: victim@example.de"})
    assert info.value.field == "subject"
    assert "header injection" in info.value.reason


def test_unsubscribe_url_variables_are_quoted_as_one_component() -> None:
    compiled = _compiled(unsubscribe_url="https://u.example/unsub?e={{ email }}&t={{ token }}")
    rendered = render(
        compiled, {"name": "A", "email": "a+b@example.de", "token": "x&admin=1#frag/../"}
    )
    assert rendered.unsubscribe_url == (
        "https://u.example/unsub?e=a%2Bb%40example.de&t=x%26admin%3D1%23frag%2F..%2F"
    )


def test_rendered_unsubscribe_url_is_available_to_the_other_templates() -> None:
    compiled = _compiled(
        html='<a href="{{ unsubscribe_url }}">Abmelden</a>',
        text="Abmelden: {{ unsubscribe_url }}",
        unsubscribe_url="https://u.example/u/{{ token }}",
    )
    rendered = render(compiled, RECIPIENT)
    assert rendered.html == '<a href="https://u.example/u/t0k">Abmelden</a>'
    assert rendered.text == "Abmelden: https://u.example/u/t0k"


def test_recipient_variables_cannot_override_the_unsubscribe_url() -> None:
    compiled = _compiled(unsubscribe_url="https://u.example/u/{{ token }}")
    with pytest.raises(ValidationError) as info:
        render(compiled, {**RECIPIENT, "unsubscribe_url": "https://evil.example/"})
    assert info.value.field == "variables.unsubscribe_url"


@pytest.mark.parametrize(
    "url", ["http://u.example/u", "javascript:alert(1)", "https://u.example/a b", "{{ token }}"]
)
def test_unsubscribe_url_must_be_https_or_mailto_without_blanks(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        render(_compiled(unsubscribe_url=url), RECIPIENT)
    assert info.value.field == "unsubscribe_url"


def test_mailto_unsubscribe_url_is_accepted() -> None:
    compiled = _compiled(unsubscribe_url="mailto:unsub@netigate.se?subject={{ token }}")
    assert render(compiled, RECIPIENT).unsubscribe_url == "mailto:unsub@netigate.se?subject=t0k"


def test_compiled_content_renders_each_recipient_independently() -> None:
    compiled = _compiled(subject="Hallo {{ name }}")
    first = render(compiled, {"name": "Anna"})
    second = render(compiled, {"name": "Jörg"})
    assert (first.subject, second.subject) == ("Hallo Anna", "Hallo Jörg")
    assert first.html == "<p>Hallo Anna</p>"


def test_text_part_is_derived_from_html_when_no_text_template() -> None:
    html = (
        "<html><head><title>Umfrage</title><style>p { color: red }</style></head><body>"
        "<h1>Hallo {{ name }}</h1>"
        "<p>Bitte nehmen Sie an unserer "
        '<a href="https://s.example/r/{{ token }}">Umfrage</a> teil.</p>'
        '<p><a href="{{ unsubscribe_url }}">{{ unsubscribe_url }}</a></p>'
        "</body></html>"
    )
    compiled = _compiled(html=html, unsubscribe_url="https://u.example/u/{{ token }}")
    text = render(compiled, RECIPIENT).text
    assert text == (
        "Hallo Anna\n\n"
        "Bitte nehmen Sie an unserer Umfrage (https://s.example/r/t0k) teil.\n\n"
        "https://u.example/u/t0k\n"
    )


def test_html_to_text_keeps_lists_and_drops_scripts_and_anchors_without_targets() -> None:
    html = (
        "<script>alert('x')</script><ul><li>eins</li><li>zwei</li></ul>"
        '<p><a href="#top">nach oben</a> <a href="mailto:info@example.de">info@example.de</a>'
        ' <a href="mailto:info@example.de">Kontakt</a></p>'
    )
    text = html_to_text(html)
    assert "alert" not in text
    assert "  * eins\n  * zwei" in text
    assert "nach oben info@example.de Kontakt (info@example.de)" in text


def test_text_template_is_derived_once_from_a_plain_html_template() -> None:
    html = "<p>Hallo {{ name }},</p><p><a href='https://s.test/{{ token }}'>Start</a></p>"
    derived = derive_text_template(html)
    assert derived is not None
    assert "{{ name }}" in derived
    assert "{{ token }}" in derived
    compiled = compile_content(Content(subject="s", html=html, text=None))
    variables = {"name": "Jörg <Chef> & Co", "token": "abc"}
    rendered = render(compiled, variables)
    assert rendered.text.strip() == html_to_text(rendered.html or "").strip()


def test_templates_with_statements_or_hidden_expressions_are_converted_per_recipient() -> None:
    assert derive_text_template("<p>{% if x %}{{ x }}{% endif %}</p>") is None
    assert derive_text_template("<img src='{{ logo }}'><p>Hi</p>") is None
    compiled = compile_content(
        Content(subject="s", html="<img src='{{ logo }}'><p>Hi</p>", text=None)
    )
    assert "Hi" in render(compiled, {"logo": "https://x.test/l.png"}).text


def test_undefined_variable_in_derived_text_names_the_html_field() -> None:
    compiled = compile_content(Content(subject="s", html="<p>{{ missing }}</p>", text=None))
    with pytest.raises(TemplateError) as err:
        render(compiled, {})
    assert err.value.field == "html"
