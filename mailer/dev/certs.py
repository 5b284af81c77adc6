"""A throw-away PKI for tests: one trustme CA, leaf certificates issued by
it, and the broken certificates a TLS policy must refuse (expired,
self-signed, issued for another name).

Every file lives in a temporary directory owned by the :class:`TestCerts`
object and removed by :meth:`TestCerts.close` (or leaving its ``with``).
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertFiles", "TestCerts"]

# (certificate chain PEM path, private key PEM path)
CertFiles = tuple[Path, Path]

OTHER_NAME = "not-the-mx.invalid"


class TestCerts:
    """A test CA that issues certificates into its own temporary directory.

    ``ca_path`` is the PEM file a client passes as ``cafile`` to trust
    every certificate from :meth:`issue` (and from :meth:`expired`, which the
    same CA signs so that expiry is the only thing wrong with it).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mailer-certs-")
        self.directory = Path(self._tmp.name)
        self._ca = trustme.CA()
        self.ca_path = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))
        self._counter = itertools.count(1)

    def issue(
        self,
        names: str | Sequence[str],
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertFiles:
        """Issue a leaf certificate for host names and/or IP addresses.

        Raises ValueError for an empty list of names.
        """
        identities = _as_list(names)
        leaf = self._ca.issue_cert(*identities, not_before=not_before, not_after=not_after)
        cert_path, key_path = self._paths(identities[0])
        cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key_path.write_bytes(leaf.private_key_pem.bytes())
        key_path.chmod(0o600)
        return cert_path, key_path

    def expired(self, names: str | Sequence[str]) -> CertFiles:
        """A certificate from the trusted CA whose validity ended yesterday."""
        now = datetime.datetime.now(datetime.UTC)
        return self.issue(
            names,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )

    def other_name(self) -> CertFiles:
        """A valid certificate from the trusted CA for a name no test connects to."""
        return self.issue([OTHER_NAME])

    def self_signed(self, names: str | Sequence[str]) -> CertFiles:
        """A certificate for the right names that no CA vouches for."""
        identities = _as_list(names)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identities[0])])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in identities]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = self._paths(identities[0])
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path

    @staticmethod
    def server_context(files: CertFiles) -> ssl.SSLContext:
        """A server-side SSLContext presenting ``files``.

        Raises ssl.SSLError / OSError if the files do not hold a usable pair.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(files[0]), str(files[1]))
        return context

    def close(self) -> None:
        """Remove the directory and every file issued into it."""
        self._tmp.cleanup()

    def __enter__(self) -> TestCerts:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _paths(self, first_name: str) -> CertFiles:
        stem = f"{next(self._counter):03d}-" + "".join(
            c if c.isalnum() or c in "-." else "_" for c in first_name
        )
        return self.directory / f"{stem}.crt", self.directory / f"{stem}.key"


def _as_list(names: str | Sequence[str]) -> list[str]:
    identities = [names] if isinstance(names, str) else list(names)
    if not identities:
        raise ValueError("at least one name is needed")
    return identities


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
