"""Runs the checks of ``mailer check-domain`` for one domain and region
and assembles the :class:`~mailer.checkdomain.report.DomainReport`."""

from __future__ import annotations

from collections.abc import Sequence

from publicsuffixlist import PublicSuffixList

from mailer.checkdomain.dkim import find_dkim, judge_dkim
from mailer.checkdomain.dmarc import find_dmarc, judge_dmarc
from mailer.checkdomain.report import Check, DomainReport, Status
from mailer.checkdomain.sender import SAMPLE_LOCAL_PART, decide_sender, judge_sender
from mailer.checkdomain.spf import find_spf, judge_spf
from mailer.checkdomain.tls import find_tls, judge_tls
from mailer.checkdomain.tls_probe import PROBE_TIMEOUT
from mailer.config import Config
from mailer.dns import Resolver, normalise_name
from mailer.errors import DNSPermanentError, ValidationError, shown
from mailer.message.keys import KeyStore, normalise_domain

__all__ = ["DomainChecker", "check_domain"]


def _domain(value: str) -> str:
    """The ASCII (A-label) form of a domain name. Raises ValidationError("domain")."""
    try:
        ascii_name = normalise_name(value.strip())
    except DNSPermanentError as exc:
        raise ValidationError("domain", f"{shown(value.strip())}: {exc.reason}") from exc
    try:
        return normalise_domain(ascii_name)
    except ValidationError:
        # named as typed, not in the escaped text form DNS gave back
        raise ValidationError("domain", f"{shown(value.strip())} is not a domain name") from None


def nonexistent(name: str) -> Check:
    """The one check of a domain that does not exist (pure)."""
    return Check(
        "domain",
        Status.ACTION_NEEDED,
        f"{name} does not exist (NXDOMAIN): check the spelling; a new domain must be "
        "registered and delegated before any record can be published",
        {"nxdomain": True},
    )


class DomainChecker:
    """Checks customer domains against one configuration.

    Holds what is worth building once (the parsed public suffix list, about
    0.1 s); each :meth:`check` asks DNS afresh through its own resolver, so a
    customer who just fixed a record sees the fix.
    """

    def __init__(self, config: Config, *, psl: PublicSuffixList | None = None) -> None:
        self.config = config
        self._psl = psl or PublicSuffixList()

    def our_ips(self, region: str) -> list[str]:
        """The node's outbound IPs (its source pool), then the region's IPs,
        without repeats."""
        ips = [*self.config.spf_addresses, *self.config.regions[region].outbound_ips]
        return list(dict.fromkeys(ips))

    async def check(
        self, domain: str, *, region: str | None = None, selectors: Sequence[str] = ()
    ) -> DomainReport:
        """Every check for ``domain`` as sent from ``region`` (default: the
        configured one); ``selectors`` limits DKIM to those selectors.

        Raises ValidationError naming "domain", "region" or "selector" for
        bad input, DNSTemporaryError when DNS does not answer (the check
        could not run), ConfigError for unusable region settings.
        """
        config = self.config
        name = _domain(domain)
        region = region or config.region
        if region not in config.regions:
            known = ", ".join(sorted(config.regions))
            raise ValidationError("region", f"{region!r} is not one of {known}")
        settings = config.regions[region]
        resolver = Resolver(config.nameservers, timeout=config.worker.dns_timeout)
        if (await resolver.txt(name)).nxdomain:
            # Nothing can be published under a name that does not exist:
            # one verdict, not five checks each asking for records.
            return DomainReport(name, region, (nonexistent(name),))

        spf = await find_spf(resolver, name, self.our_ips(region), settings.spf_include)
        identity = await decide_sender(resolver, name, config.spf_addresses, settings)
        dkim = await find_dkim(resolver, KeyStore(config.keys_dir), name, selectors)
        dmarc = await find_dmarc(resolver, self._psl, name)
        tls = await find_tls(
            resolver,
            name,
            port=config.smtp_port,
            helo=config.hostname,
            policy=config.tls.for_domain(name),
            timeout=min(config.worker.smtp_timeout, PROBE_TIMEOUT),
        )
        checks = (
            judge_spf(spf),
            judge_sender(identity, f"{SAMPLE_LOCAL_PART}@{name}"),
            judge_dkim(dkim),
            judge_dmarc(dmarc, spf_aligned=spf.aligned_ip_passes, dkim_aligned=dkim.aligned),
            judge_tls(tls),
        )
        return DomainReport(name, region, checks)


async def check_domain(
    config: Config, domain: str, *, region: str | None = None, selectors: Sequence[str] = ()
) -> DomainReport:
    """One-off :meth:`DomainChecker.check` (builds the public suffix list).

    Raises as :meth:`DomainChecker.check`.
    """
    return await DomainChecker(config).check(domain, region=region, selectors=selectors)
