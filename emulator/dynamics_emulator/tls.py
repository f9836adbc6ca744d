"""TLS for the emulator: a private certificate authority and a server certificate for loopback.

Clients trust the emulator the standard way, through a CA bundle file (``REQUESTS_CA_BUNDLE``), so
TLS verification stays on everywhere.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    """Where the emulator's certificate material was written."""

    ca_bundle: Path
    server_chain: Path


def create_tls_files(
    directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """Create a fresh private CA and a server certificate for ``hosts`` under ``directory``.

    The CA's private key is never written: nothing but this process can issue certificates that
    the bundle trusts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="dynamics-emulator", organization_unit_name="local CA")
    cert = ca.issue_cert(*hosts)
    ca_bundle = directory / "ca.pem"
    server_chain = directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_chain))
    server_chain.chmod(0o600)
    return TlsFiles(ca_bundle=ca_bundle, server_chain=server_chain)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.server_chain))
    return ctx
