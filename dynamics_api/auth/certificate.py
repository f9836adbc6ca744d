"""The certificate credential: a PEM file holding the certificate and its private key.

msal signs a client assertion (RS256, ``x5t`` header) with the key; Entra ID finds the registered
certificate by its SHA-1 thumbprint, computed here from the certificate unless the
``client_certificate_thumbprint`` setting gives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dynamics_api.errors import ConfigError

__all__ = ["ClientCertificate"]

_THUMBPRINT_RE = re.compile(r"^[0-9a-f]{40}$")
_PEM_BLOCK_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate credential: the private key (PEM) and the certificate's SHA-1 thumbprint.

    Attributes:
        path: the file it was read from.
        thumbprint: lower-case hex SHA-1 of the DER certificate (what Entra ID shows).
        private_key_pem: the private key; never shown in ``repr``.
    """

    path: str
    thumbprint: str
    private_key_pem: str = field(repr=False)

    @classmethod
    def load(cls, path: str, thumbprint: str | None = None) -> ClientCertificate:
        """Read a PEM file holding the private key and (unless ``thumbprint`` is given) the cert.

        Args:
            path: the ``client_certificate_path`` setting.
            thumbprint: the ``client_certificate_thumbprint`` setting (hex, ``:`` and spaces
                allowed); computed from the certificate when ``None``.

        Returns:
            The credential.

        Raises:
            ConfigError: unreadable file, no or encrypted private key, no certificate and no
                thumbprint, a malformed thumbprint, or one that does not match the certificate.
        """
        # Imported here: only a certificate sign-in needs them, and they take 45 ms to import,
        # at every start of the tap and the target.
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        shown = str(Path(path).expanduser())
        try:
            text = Path(path).expanduser().read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise ConfigError(
                f"The setting client_certificate_path ({shown!r}) cannot be read "
                f"({exc.strerror or type(exc).__name__}): set it to a PEM file holding the "
                "certificate and its private key."
            ) from None
        blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK_RE.finditer(text)]
        if any(label == "ENCRYPTED PRIVATE KEY" for label, _ in blocks):
            raise ConfigError(
                f"The private key in client_certificate_path ({shown!r}) is encrypted: "
                "export it without a passphrase (and keep the file readable by you only)."
            )
        keys = [pem for label, pem in blocks if label.endswith("PRIVATE KEY")]
        if not keys:
            raise ConfigError(
                f"The file named by client_certificate_path ({shown!r}) holds no PEM private "
                "key: it must contain the certificate and its unencrypted private key."
            )
        try:
            key = serialization.load_pem_private_key(keys[0].encode("ascii"), password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                f"The private key in client_certificate_path ({shown!r}) cannot be read: it must "
                "be an unencrypted PEM RSA key."
            ) from None
        certs = [pem for label, pem in blocks if label == "CERTIFICATE"]
        computed: str | None = None
        if certs:
            try:
                cert = x509.load_pem_x509_certificate(certs[0].encode("ascii"))
            except ValueError:
                raise ConfigError(
                    f"The certificate in client_certificate_path ({shown!r}) cannot be read."
                ) from None
            if cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise ConfigError(
                    f"The certificate and the private key in client_certificate_path ({shown!r}) "
                    "do not belong together: put the certificate's own key in the file."
                )
            computed = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - x5t is SHA-1
        given: str | None = None
        if thumbprint:
            given = re.sub(r"[\s:]", "", thumbprint).lower()
            if not _THUMBPRINT_RE.match(given):
                raise ConfigError(
                    "The setting client_certificate_thumbprint must be the certificate's SHA-1 "
                    "thumbprint: 40 hexadecimal digits, as the app registration shows it."
                )
            if computed is not None and given != computed:
                raise ConfigError(
                    "The setting client_certificate_thumbprint does not match the certificate in "
                    f"client_certificate_path ({shown!r}), whose thumbprint is "
                    f"{computed.upper()}: fix or remove client_certificate_thumbprint."
                )
        final = given or computed
        if final is None:
            raise ConfigError(
                f"The file named by client_certificate_path ({shown!r}) holds no certificate, so "
                "its thumbprint is unknown: add the certificate to the file or set "
                "client_certificate_thumbprint."
            )
        return cls(path=shown, thumbprint=final, private_key_pem=keys[0])

    def msal_credential(self) -> dict[str, str]:
        """The ``client_credential`` msal expects (RS256 assertion with an ``x5t`` header)."""
        return {"private_key": self.private_key_pem, "thumbprint": self.thumbprint}
