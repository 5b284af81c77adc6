"""The sender verdict: under which address surveys from the domain go out,
decided by the same :class:`~mailer.identity.sender.IdentityDecider` the message
path uses, so the report can never disagree with what is sent."""

from __future__ import annotations

from collections.abc import Sequence

from mailer.checkdomain.report import Check, Status
from mailer.config import RegionConfig
from mailer.dns import Resolver
from mailer.identity.sender import Identity, IdentityDecider

__all__ = ["SAMPLE_LOCAL_PART", "decide_sender", "judge_sender"]

# The local part shown in the verdict; SPF policies almost never depend on it.
SAMPLE_LOCAL_PART = "name"


async def decide_sender(
    resolver: Resolver, domain: str, outbound_ip: str | Sequence[str], region: RegionConfig
) -> Identity:
    """The identity of a survey from ``name@domain`` sent from ``outbound_ip``
    (every public address of the source pool).

    Raises ConfigError for an unusable outbound IP or region address.
    """
    decider = IdentityDecider(
        resolver,
        outbound_ip=outbound_ip,
        neutral_sender=region.neutral_sender,
        bounce_address=region.envelope_sender,
    )
    return await decider.decide(f"{SAMPLE_LOCAL_PART}@{domain}", "")


def judge_sender(identity: Identity, customer_address: str) -> Check:
    """OK when the customer's own address is the sender, a warning when
    surveys go out from the neutral sender (they are still delivered)."""
    details = {
        "address": customer_address,
        "customer_sender": identity.customer_sender,
        "from": identity.from_address,
        "reply_to": identity.reply_to,
        "envelope_from": identity.envelope_from,
        "spf": identity.spf.value,
        "reason": identity.reason,
    }
    if identity.customer_sender:
        summary = f"surveys from {customer_address} will be sent as {customer_address}"
        return Check("sender", Status.OK, summary, details)
    summary = (
        f"surveys from {customer_address} will be sent as the neutral sender"
        f" {identity.from_address} with Reply-To {customer_address}, because spf={identity.spf}"
    )
    return Check("sender", Status.WARNING, summary, details)
