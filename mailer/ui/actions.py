"""The console's actions: replay by filter (dry-run count first), holds
of a domain, a distribution or an account, cancelling a distribution, the
suppression lists, and the domain check. Each calls the
:class:`~mailer.client.Client` method its CLI twin calls, so both write
the same events; a bad field is named and nothing is changed."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile

from mailer.checkdomain import DomainChecker
from mailer.client import SUPPRESSION_REASONS, parse_suppression_csv
from mailer.errors import DNSTemporaryError, MailerError, NotFound, ValidationError
from mailer.message.addresses import parse_address
from mailer.reasons import Reason
from mailer.store.models import HOLD_KINDS, HoldKind, Suppression
from mailer.store.rules import REPLAYABLE_REASONS, REPLAYABLE_STATES, hold_value
from mailer.ui.forms import filter_args, filter_query, one_line, optional

if TYPE_CHECKING:
    from mailer.ui.app import Console

__all__ = ["install_actions"]

SAMPLE = 10
MAX_CSV = 5 * 1024 * 1024
REGIONS = ("azure", "de")


def _single(form: Any) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def install_actions(ui: FastAPI, console: Console) -> None:
    """Adds the action pages and their forms to the console ``ui``."""
    client = console.client
    store = console.app.store

    def replay_context(
        fields: dict[str, str], states: list[str], reasons: list[str]
    ) -> dict[str, Any]:
        return {
            "fields": fields,
            "states": states,
            "reasons": reasons,
            "replay_states": [s.value for s in REPLAYABLE_STATES],
            "replay_reasons": [r.value for r in REPLAYABLE_REASONS],
            "report": None,
            "sample": [],
            "query": [],
            "done": None,
            "accounts": [],
        }

    async def read_replay(fields: dict[str, str], states: list[str], reasons: list[str]) -> Any:
        args = filter_args(fields, states, reasons)
        if args.empty:
            raise ValidationError(
                "filter", "give at least one filter: replaying everything is refused here"
            )
        return args

    @ui.get("/replay", include_in_schema=False)
    async def replay_page(request: Request) -> HTMLResponse:
        _, csrf = await console.operator(request)
        query = request.query_params
        context = replay_context(_single(query), query.getlist("state"), query.getlist("reason"))
        context["accounts"] = [a.id for a in await store.accounts()]
        try:
            args = await read_replay(context["fields"], context["states"], context["reasons"])
            include = context["fields"].get("include_suppressed") == "yes"
            report, sample = await client.replay_preview(
                args.build(time.time()), include_suppressed=include, sample=SAMPLE
            )
        except ValidationError as exc:
            return console.page(
                request, "replay.html", csrf, status=422, errors={exc.field: exc.reason}, **context
            )
        context.update(report=report, sample=sample, query=filter_query(args))
        return console.page(request, "replay.html", csrf, **context)

    @ui.post("/replay", include_in_schema=False)
    async def replay(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        context = replay_context(_single(form), form.getlist("state"), form.getlist("reason"))  # type: ignore[arg-type]
        context["accounts"] = [a.id for a in await store.accounts()]
        fields = context["fields"]
        try:
            args = await read_replay(fields, context["states"], context["reasons"])
            note = optional(fields, "note")
            include = fields.get("include_suppressed") == "yes"
            flt = args.build(time.time())
            done = await client.replay(flt, note=note, include_suppressed=include)
        except ValidationError as exc:
            return console.page(
                request, "replay.html", csrf, status=422, errors={exc.field: exc.reason}, **context
            )
        context.update(done=done, query=filter_query(args))
        return console.page(request, "replay.html", csrf, **context)

    # holds -------------------------------------------------------------------

    async def holds_page(
        request: Request, csrf: str, *, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        context: dict[str, Any] = {
            "holds": await store.holds(),
            "pauses": [p for p in await store.account_pauses() if p.paused_at is not None],
            "accounts": [a.id for a in await store.accounts()],
            "fields": {},
        }
        context.update(extra)
        return console.page(request, "holds.html", csrf, status=status, **context)

    @ui.get("/holds", include_in_schema=False)
    async def holds(request: Request) -> HTMLResponse:
        _, csrf = await console.operator(request)
        return await holds_page(request, csrf)

    def kind_of(value: str) -> HoldKind:
        for kind in HOLD_KINDS:
            if kind == value:
                return kind
        raise ValidationError("kind", f"a hold is on a domain or a distribution, not {value!r}")

    async def acted(
        request: Request,
        csrf: str,
        action: Callable[[], Awaitable[str]],
        *,
        missing: str,
        fields: dict[str, str] | None = None,
    ) -> HTMLResponse:
        """The holds page after ``action``, which returns what it did: a
        refused value is a 422 naming its field, a missing target a 404
        under ``missing``; either shows ``fields`` again."""
        shown = fields or {}
        try:
            notice = await action()
        except ValidationError as exc:
            return await holds_page(
                request, csrf, status=422, errors={exc.field: exc.reason}, fields=shown
            )
        except NotFound as exc:
            return await holds_page(
                request, csrf, status=404, errors={missing: str(exc)}, fields=shown
            )
        return await holds_page(request, csrf, notice=notice)

    @ui.post("/holds", include_in_schema=False)
    async def hold(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)

        async def action() -> str:
            kind = kind_of(fields.get("kind", ""))
            value = one_line(kind, fields.get("value", ""))
            hold_value(kind, value)  # names the field (domain / distribution)
            held, moved = await client.hold(kind, value, note=optional(fields, "note"))
            return f"held {kind} {held}: {moved} waiting send(s) now held"

        return await acted(request, csrf, action, missing="distribution", fields=fields)

    @ui.post("/holds/release", include_in_schema=False)
    async def release(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)

        async def action() -> str:
            kind = kind_of(fields.get("kind", ""))
            value = one_line(kind, fields.get("value", ""))
            queued = await client.release(kind, value)
            return f"released {kind} {value}: {queued} send(s) queued"

        return await acted(request, csrf, action, missing="release")

    @ui.post("/accounts/hold", include_in_schema=False)
    async def hold_account(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)

        async def action() -> str:
            account = one_line("account", fields.get("account", ""))
            if not account:
                raise ValidationError("account", "name the account to hold")
            moved = await client.hold_account(account, note=optional(fields, "account_note"))
            return f"held account {account}: {moved} waiting send(s) now held"

        return await acted(request, csrf, action, missing="account", fields=fields)

    @ui.post("/accounts/release", include_in_schema=False)
    async def release_account(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)

        async def action() -> str:
            account = one_line("account", fields.get("account", ""))
            queued = await client.release_account(account)
            return f"released account {account}: {queued} send(s) queued"

        return await acted(request, csrf, action, missing="release")

    @ui.post("/distributions/cancel", include_in_schema=False)
    async def cancel(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)

        async def action() -> str:
            distribution = one_line("cancel_distribution", fields.get("cancel_distribution", ""))
            if not distribution:
                raise ValidationError("cancel_distribution", "name the distribution to cancel")
            done = await client.cancel(distribution)
            return f"cancelled {done.cancelled} send(s) of distribution {distribution}"

        return await acted(request, csrf, action, missing="cancel_distribution", fields=fields)

    # suppressions ------------------------------------------------------------

    async def suppressions_page(
        request: Request, csrf: str, fields: dict[str, str], *, status: int = 200, **extra: Any
    ) -> HTMLResponse:
        scope = fields.get("list", "")
        q = fields.get("q", "").strip().lower()
        entries = await store.suppressions(
            None if scope == "*" or not scope else ("" if scope == "global" else scope)
        )
        if q:
            entries = [e for e in entries if q in e.address]
        context: dict[str, Any] = {
            "entries": entries[:500],
            "total": len(entries),
            "fields": fields,
            "accounts": [a.id for a in await store.accounts()],
            "reasons": [r.value for r in SUPPRESSION_REASONS],
        }
        context.update(extra)
        return console.page(request, "suppressions.html", csrf, status=status, **context)

    @ui.get("/suppressions", include_in_schema=False)
    async def suppressions(request: Request) -> HTMLResponse:
        _, csrf = await console.operator(request)
        fields = _single(request.query_params)
        try:
            one_line("q", fields.get("q", ""))
            one_line("list", fields.get("list", ""))
        except ValidationError as exc:
            return await suppressions_page(
                request, csrf, {}, status=422, errors={exc.field: exc.reason}
            )
        return await suppressions_page(request, csrf, fields)

    def owner_of(fields: dict[str, str], field: str = "owner") -> str:
        owner = one_line(field, fields.get(field, ""))
        if not owner:
            raise ValidationError(field, "choose an account's list or the global list")
        return "" if owner == "global" else owner

    def reason_of(fields: dict[str, str]) -> Reason:
        value = fields.get("reason", Reason.SUPPRESSED_BOUNCE.value)
        for reason in SUPPRESSION_REASONS:
            if reason.value == value:
                return reason
        raise ValidationError(
            "reason", f"must be {' or '.join(r.value for r in SUPPRESSION_REASONS)}"
        )

    @ui.post("/suppressions/add", include_in_schema=False)
    async def suppress_add(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)
        try:
            owner = owner_of(fields)
            address = parse_address(
                "address", one_line("address", fields.get("address", ""))
            ).address
            note = optional(fields, "note")
            entry = Suppression(owner, address, reason_of(fields), time.time(), note)
            written = await client.suppress([entry], replace=fields.get("replace") == "yes")
        except ValidationError as exc:
            return await suppressions_page(
                request, csrf, {}, status=422, errors={exc.field: exc.reason}, form=fields
            )
        said = (
            "suppressed"
            if written
            else "already on the list with an equal or stronger reason, kept"
        )
        return await suppressions_page(request, csrf, {}, notice=f"{address}: {said}")

    @ui.post("/suppressions/remove", include_in_schema=False)
    async def suppress_remove(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)
        try:
            owner = one_line("account", fields.get("account", ""))
            address = one_line("address", fields.get("address", ""))
            removed = await client.unsuppress(owner, [address])
        except ValidationError as exc:
            return await suppressions_page(
                request, csrf, {}, status=422, errors={exc.field: exc.reason}
            )
        where = "the global list" if owner == "" else f"account {owner}'s list"
        said = "removed from" if removed else "was not on"
        return await suppressions_page(request, csrf, {}, notice=f"{address} {said} {where}")

    @ui.post("/suppressions/import", include_in_schema=False)
    async def suppress_import(request: Request) -> HTMLResponse:
        form, csrf = await console.form(request)
        fields = _single(form)
        upload = form.get("csv")
        try:
            owner = owner_of(fields, "import_owner")
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise ValidationError("csv", "choose a CSV file")
            data = await upload.read(MAX_CSV + 1)
            if len(data) > MAX_CSV:
                raise ValidationError("csv", f"larger than {MAX_CSV // (1024 * 1024)} MiB")
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ValidationError("csv", "not UTF-8 text") from exc
            note = optional(fields, "import_note")
            entries = parse_suppression_csv(
                text, account=owner, reason=reason_of(fields), now=time.time(), detail=note
            )
            written = await client.suppress(entries, replace=fields.get("replace") == "yes")
        except ValidationError as exc:
            field = "csv" if exc.field.startswith("line ") else exc.field
            reason = f"{exc.field}: {exc.reason}" if field != exc.field else exc.reason
            return await suppressions_page(
                request, csrf, {}, status=422, errors={field: f"{reason}; nothing was imported"}
            )
        return await suppressions_page(
            request, csrf, {}, notice=f"imported {written} of {len(entries)} address(es)"
        )

    # the domain check --------------------------------------------------------

    @ui.get("/check-domain", include_in_schema=False)
    async def check_domain(request: Request) -> HTMLResponse:
        _, csrf = await console.operator(request)
        fields = _single(request.query_params)
        context: dict[str, Any] = {
            "fields": fields,
            "report": None,
            "regions": REGIONS,
            "failure": None,
        }
        domain_text = fields.get("domain", "")
        if not domain_text:
            return console.page(request, "check_domain.html", csrf, **context)
        try:
            domain = hold_value("domain", one_line("domain", domain_text))
            region = fields.get("region") or None
            if region is not None and region not in REGIONS:
                raise ValidationError("region", f"must be one of {', '.join(REGIONS)}")
        except ValidationError as exc:
            return console.page(
                request,
                "check_domain.html",
                csrf,
                status=422,
                errors={exc.field: exc.reason},
                **context,
            )
        try:
            report = await DomainChecker(console.app.config).check(domain, region=region)
        except ValidationError as exc:
            return console.page(
                request,
                "check_domain.html",
                csrf,
                status=422,
                errors={"domain": exc.reason},
                **context,
            )
        except DNSTemporaryError as exc:
            context["failure"] = f"could not check {domain}: DNS did not answer ({exc}); try again"
            return console.page(request, "check_domain.html", csrf, status=503, **context)
        except MailerError as exc:
            context["failure"] = f"could not check {domain}: {exc}"
            return console.page(request, "check_domain.html", csrf, status=503, **context)
        context["report"] = report.to_json()
        return console.page(request, "check_domain.html", csrf, **context)
