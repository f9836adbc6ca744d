"""Access tokens for the Dataverse Web API, from Entra ID through msal.

Two flows, chosen by the settings (see ``ARCHITECTURE.md``, "Settings contract"):

* **Delegated** (``refresh_token`` set, or ``token_cache_path`` naming a cache that already holds a
  refresh token for ``client_id``, as ``tap-dynamics login`` leaves it): the token is the user's. A
  public client (no ``client_secret``) or a confidential one (a secret or certificate) redeems the
  refresh token with ``acquire_token_by_refresh_token`` for ``<resource>/user_impersonation``.
  Entra ID answers with a new (rotated) refresh token, which is kept in memory and in msal's token
  cache; later tokens come from ``acquire_token_silent`` for the signed-in account (msal keeps
  rotating the cached refresh token), falling back to the newest refresh token held in memory. With
  ``token_cache_path`` the cache (so the rotated refresh token) survives the run, and an account
  found there is preferred over the ``refresh_token`` setting, which is then usually older.
* **Client credentials** (no ``refresh_token``): the app's own token for ``<resource>/.default``,
  proven with ``client_secret`` or a certificate (``client_certificate_path``, a PEM file holding
  the certificate and its private key; ``client_certificate_thumbprint`` is the hex SHA-1 of the
  certificate, computed from the file when not given). ``tenant_id`` is required.

The authority is ``<authority_host>/<tenant_id or "organizations">``, ``authority_host`` coming from
the setting or from the environment's cloud (:mod:`dynamics_api.cloud`).

Instance discovery: for an authority host that msal does not know (anything but Microsoft's login
hosts), msal validates the authority by calling
``https://login.microsoftonline.com/common/discovery/instance`` unless ``instance_discovery=False``.
That call would leave the machine (and fail against the emulator or an air-gapped proxy), so it is
switched off for hosts outside :data:`MICROSOFT_AUTHORITY_HOSTS`; for Microsoft's own hosts msal
keeps its defaults (it skips the call for hosts it knows and uses its alias table).

HTTP: msal gets a :class:`~dynamics_api.session_base.VerifiedSession` as ``http_client`` (msal
ignores its own ``verify``/``timeout`` then), so the CA named by ``REQUESTS_CA_BUNDLE`` is the one
trusted and verification is never off.

Caching: :meth:`TokenProvider.token` holds the token in memory and asks msal again when fewer than
300 s remain (for short-lived tokens half the lifetime, never less than 60 s); msal's own cache
treats tokens with under 5 minutes left as expired, so the two agree. ``force_refresh=True``
bypasses both caches: ``remove_tokens_for_client()`` for client credentials (whose
``acquire_token_for_client`` would otherwise return the cached token), ``force_refresh`` of
``acquire_token_silent`` for the delegated flow.

Token cache file (``token_cache_path``): msal's ``SerializableTokenCache``, written with mode 0600
(atomically, through a temporary file) by :func:`save_token_cache`, read by
:func:`load_token_cache`, both under :func:`token_cache_lock` (also used by
:mod:`tap_dynamics.login`). Every acquisition that may reach Entra ID runs under an
exclusive ``fcntl.flock`` on ``<token_cache_path>.lock`` and re-reads the file first, so two runs
sharing the file each start from the newest rotated refresh token and neither loses the other's.

Secrets: the client secret, the certificate's key, refresh and access tokens never appear in a log
line, an exception message or a ``repr``. msal masks the secrets it knows of in its DEBUG
``event=`` lines; as a second guard a filter on msal's loggers redacts JWT-shaped strings (access
and id tokens, client assertions) and secret-named JSON fields.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from dynamics_api.cloud import normalize_environment_url, resolve_authority_host, resource_for
from dynamics_api.errors import AuthError, ConfigError
from dynamics_api.session_base import VerifiedSession

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory file locks
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FLOW_CLIENT_CREDENTIALS",
    "FLOW_REFRESH_TOKEN",
    "MICROSOFT_AUTHORITY_HOSTS",
    "ClientCertificate",
    "TokenProvider",
    "auth_error",
    "discovery_error",
    "load_token_cache",
    "network_error",
    "save_token_cache",
    "token_cache_lock",
    "uses_instance_discovery",
]

logger = logging.getLogger(__name__)

FLOW_CLIENT_CREDENTIALS = "client_credentials"
FLOW_REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a flow name

#: Refresh a token when fewer seconds than this remain (msal's own cache treats <5 min as expired).
REFRESH_MARGIN = 300.0
#: Never hand out a cached token that expires sooner than this.
MIN_REMAINING = 60.0
#: Lifetime assumed when a token response gives no ``expires_in``.
DEFAULT_LIFETIME = 300.0
#: HTTP timeout (connect, read) for the identity endpoints.
HTTP_TIMEOUT = (10.0, 60.0)

#: Entra ID hosts run by Microsoft: msal keeps its default instance discovery for these only.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)

_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})
_THUMBPRINT_RE = re.compile(r"^[0-9a-f]{40}$")
_PEM_BLOCK_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s.*?-----END \1-----", re.DOTALL)
_AADSTS_RE = re.compile(r"AADSTS(\d+)")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_SECRET_FIELD_RE = re.compile(
    r'("(?:client_assertion|client_secret|refresh_token|access_token|id_token|secret|code)"'
    r'\s*:\s*)"[^"]*"'
)
_REDACTED = "********"


# ------------------------------------------------------------------------------ log redaction


def _redact(text: str) -> str:
    text = _SECRET_FIELD_RE.sub(lambda m: f'{m.group(1)}"{_REDACTED}"', text)
    return _JWT_RE.sub(_REDACTED, text)


class _RedactingFilter(logging.Filter):
    """Masks JWTs and secret-named JSON fields in msal's log records (msal logs the client
    assertion of certificate credentials in its DEBUG "event=" lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        redacted = _redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = ()
        return True


_REDACTING_FILTER = _RedactingFilter()


def _install_msal_log_redaction() -> None:
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name == "msal" or name.startswith("msal.")
    ]
    for name in {"msal", "msal.application", "msal.token_cache", *names}:
        log = logging.getLogger(name)
        if _REDACTING_FILTER not in log.filters:
            log.addFilter(_REDACTING_FILTER)


_install_msal_log_redaction()


# ------------------------------------------------------------------------------ settings


def _setting(config: Mapping[str, Any], name: str) -> str | None:
    """A text setting, stripped; ``None`` when absent or empty."""
    value = config.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"The setting {name} must be text, not {type(value).__name__}.")
    value = value.strip()
    return value or None


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


# ------------------------------------------------------------------------------ errors


def _first_sentence(description: str) -> str:
    """``"AADSTS7000215: Invalid client secret provided. Ensure...\\r\\nTrace ID: ..."`` ->
    ``"Invalid client secret provided."``."""
    text = description.replace("\r\n", "\n").split("\n", 1)[0]
    text = re.sub(r"^\s*AADSTS\d+:\s*", "", text).strip()
    match = re.search(r"(?<=[.!?])\s", text)
    if match:
        text = text[: match.start()]
    if len(text) > 300:
        text = text[:297].rstrip() + "..."
    if text and text[-1] not in ".!?":
        text += "."
    return text


def _aadsts_code(result: Mapping[str, Any]) -> int | None:
    codes = result.get("error_codes")
    if isinstance(codes, list):
        for code in codes:
            if isinstance(code, int) and not isinstance(code, bool):
                return code
            if isinstance(code, str) and code.isdigit():
                return int(code)
    match = _AADSTS_RE.search(str(result.get("error_description") or ""))
    return int(match.group(1)) if match else None


def _home_account_id(result: Mapping[str, Any]) -> str | None:
    """``uid.utid`` from a token response's ``client_info`` (what msal keys accounts by)."""
    info = result.get("client_info")
    if not isinstance(info, str):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(info + "=" * (-len(info) % 4)))
    except (binascii.Error, ValueError):
        return None
    if isinstance(data, dict) and data.get("uid") and data.get("utid"):
        return f"{data['uid']}.{data['utid']}"
    return None


def auth_error(
    result: Mapping[str, Any],
    *,
    client_id: str,
    tenant_id: str | None,
    resource: str,
    certificate_thumbprint: str | None = None,
    refused: str = "a token",
    scrub: Callable[[str], str] = _redact,
) -> AuthError:
    """One sentence for an msal (or redirect) error result, with the known AADSTS codes explained.

    Args:
        result: the error dict (``error``, ``error_description``, ``error_codes``).
        client_id, tenant_id, resource: named in the sentence (``None`` tenant: organizations).
        certificate_thumbprint: the certificate credential's thumbprint, if one is used.
        refused: what Entra ID refused, for codes without a specific sentence ("a token").
        scrub: removes secrets from the sentence (default: JWT-shaped strings and secret fields).

    Returns:
        The error (``error`` and ``aadsts`` set from the result).
    """
    error = str(result.get("error") or "")
    code = _aadsts_code(result)
    sentence = _first_sentence(str(result.get("error_description") or ""))
    cid = client_id
    tenant = tenant_id or "organizations"
    tag = f"AADSTS{code}" if code is not None else (error or "no code")
    relogin = (
        "Sign in again (`tap-dynamics login`) to get a new refresh_token (README: Getting a "
        "refresh token)."
    )
    messages: dict[int, str] = {
        7000215: (
            f"Entra ID rejected the client secret for client_id '{cid}' ({tag}). Check "
            "client_secret: it may be wrong or expired (use the secret's value, not its ID)."
        ),
        7000222: (
            f"The client secret for client_id '{cid}' has expired ({tag}). Create a new "
            "secret in the app registration and set client_secret."
        ),
        7000218: (
            f"client_id '{cid}' is a confidential application and needs a credential "
            f"({tag}). Set client_secret or client_certificate_path."
        ),
        700025: (
            f"client_id '{cid}' is a public client application, which must not send a "
            f"credential ({tag}). Remove client_secret and client_certificate_path."
        ),
        700016: (
            f"Entra ID does not know an application with client_id '{cid}' in tenant "
            f"'{tenant}' ({tag}). Check client_id and tenant_id."
        ),
        90002: (
            f"Entra ID could not find the tenant '{tenant}' ({tag}). Check tenant_id (and "
            "authority_host for a sovereign cloud)."
        ),
        70000: (
            f"Entra ID rejected the refresh token as invalid or already used ({tag}). {relogin}"
        ),
        700082: (f"The refresh token has expired after a period of inactivity ({tag}). {relogin}"),
        50173: (
            "The refresh token was revoked (for example after a password change or a "
            f"sign-out of all sessions) ({tag}). {relogin}"
        ),
        65001: (
            f"The user or an administrator has not consented to client_id '{cid}' using "
            f"Dynamics 365 ({tag}). Grant consent for the Dynamics CRM user_impersonation "
            "permission in the app registration, then sign in again."
        ),
        500011: (
            f"Entra ID found no Dynamics 365 resource '{resource}' in tenant "
            f"'{tenant}' ({tag}). Check environment_url: it must be your environment's "
            "URL, such as https://yourorg.crm.dynamics.com."
        ),
        700027: (
            f"Entra ID did not accept the certificate for client_id '{cid}' ({tag}). Check "
            "that client_certificate_path holds the certificate registered on the app "
            f"(thumbprint {certificate_thumbprint.upper() if certificate_thumbprint else '?'})"
            " and its private key."
        ),
    }
    if code in messages:
        message = messages[code]
    elif error == "no_refresh_token":
        message = f"No refresh token is available for client_id '{cid}'. {relogin}"
    else:
        detail = f": {sentence}" if sentence else "."
        message = f"Entra ID refused {refused} for client_id '{cid}' ({tag}){detail}"
    return AuthError(scrub(message), error=error or None, aadsts=code)


def network_error(authority_host: str, exc: requests.RequestException) -> AuthError:
    """One sentence for a failed request to the Entra ID authority (no URL query, no secret)."""
    host = urlsplit(authority_host).netloc
    if isinstance(exc, requests.exceptions.SSLError):
        what = f"TLS certificate verification failed for the Entra ID authority {host}"
    elif isinstance(exc, requests.exceptions.Timeout):
        what = f"The Entra ID authority {host} did not answer in time"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        what = f"Could not connect to the Entra ID authority {host}"
    else:
        what = f"The request to the Entra ID authority {host} failed ({type(exc).__name__})"
    return AuthError(
        f"{what}: check authority_host and network access, and if a proxy or private CA "
        "(such as the emulator's) signs its certificate, point REQUESTS_CA_BUNDLE at that "
        "CA bundle."
    )


def discovery_error(
    session: requests.Session,
    *,
    authority: str,
    authority_host: str,
    tenant_id: str | None,
    on_error: Callable[[Mapping[str, Any]], AuthError],
) -> AuthError:
    """Why msal could not read the tenant's sign-in configuration (it only says ValueError).

    Asks ``<authority>/v2.0/.well-known/openid-configuration`` once more to learn Entra ID's own
    error; ``on_error`` turns such an error body into the sentence (usually :func:`auth_error`).
    """
    url = f"{authority}/v2.0/.well-known/openid-configuration"
    host = urlsplit(authority_host).netloc
    try:
        resp = session.get(url, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        return network_error(authority_host, exc)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("error") or body.get("error_codes")):
        return on_error(body)
    return AuthError(
        f"Entra ID at {host} gave no sign-in configuration for tenant "
        f"'{tenant_id or 'organizations'}' (HTTP {resp.status_code}). Check tenant_id "
        "and authority_host."
    )


def uses_instance_discovery(authority_host: str) -> bool:
    """Whether msal may keep its instance discovery for this host (Microsoft's hosts only).

    For any other host pass ``instance_discovery=False`` to msal: its discovery call would go to
    login.microsoftonline.com and fail for the emulator or an air-gapped proxy.
    """
    return (urlsplit(authority_host).hostname or "").lower() in MICROSOFT_AUTHORITY_HOSTS


# ------------------------------------------------------------------------------ cache file


@contextmanager
def token_cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<path>.lock`` (creating the directory and lock file).

    Every read-modify-write of a token cache file must run under it.

    Raises:
        ConfigError: the lock file cannot be created.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"The token cache lock file {str(lock_path)!r} cannot be created "
            f"({exc.strerror or type(exc).__name__}): check token_cache_path."
        ) from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def load_token_cache(cache: msal.SerializableTokenCache, path: Path) -> None:
    """Replace ``cache``'s content by the file's (caller holds :func:`token_cache_lock`).

    A missing or empty file leaves ``cache`` as it is; a file readable by others is restricted to
    its owner (0600) with a warning; invalid content is ignored with a warning.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(
            f"The token cache {str(path)!r} cannot be read "
            f"({exc.strerror or type(exc).__name__}): check token_cache_path."
        ) from None
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        if os.fstat(handle.fileno()).st_mode & 0o077:
            logger.warning(
                "The token cache %s was readable by others; restricting it to its owner",
                path,
            )
            os.fchmod(handle.fileno(), 0o600)
        text = handle.read()
    if not text.strip():
        return
    try:
        state = json.loads(text)
    except ValueError:
        logger.warning("The token cache %s is not valid JSON; ignoring its content", path)
        return
    if not isinstance(state, dict):
        logger.warning("The token cache %s is not an msal token cache; ignoring it", path)
        return
    cache.deserialize(text)


def save_token_cache(cache: msal.SerializableTokenCache, path: Path) -> None:
    """Write ``cache`` if msal changed it (caller holds :func:`token_cache_lock`): mode 0600,
    atomically through a temporary file.

    Raises:
        ConfigError: the file cannot be written.
    """
    if not cache.has_state_changed:
        return
    data = cache.serialize()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"The token cache {str(path)!r} cannot be written "
            f"({exc.strerror or type(exc).__name__}): check token_cache_path."
        ) from None
    logger.debug("Saved the token cache to %s", path)


# ------------------------------------------------------------------------------ the provider


class TokenProvider:
    """Access tokens for one Dataverse environment, thread-safe and cached in memory.

    Build it with :meth:`from_config`. Call :meth:`token` before each request; after a 401 call
    ``token(force_refresh=True)`` once and retry. Nothing touches the network until the first
    :meth:`token` call.

    Args:
        environment_url: the environment (``https://org.crm.dynamics.com``).
        client_id: the Entra ID application (client) id.
        tenant_id: directory id or domain; ``None`` means ``organizations`` (delegated flow only).
        authority_host: the Entra ID host; ``None`` derives it from the environment's cloud.
        client_secret: the app's secret (client credentials, or a confidential delegated app).
        client_certificate: a certificate credential instead of a secret.
        refresh_token: selects the delegated flow.
        token_cache_path: where msal's token cache persists between runs.
        session: the HTTP session for the identity endpoints (default: a new
            :class:`VerifiedSession`, closed by :meth:`close`).

    Raises:
        ConfigError: settings missing, malformed or inconsistent.
    """

    def __init__(
        self,
        *,
        environment_url: str,
        client_id: str,
        tenant_id: str | None = None,
        authority_host: str | None = None,
        client_secret: str | None = None,
        client_certificate: ClientCertificate | None = None,
        refresh_token: str | None = None,
        token_cache_path: str | os.PathLike[str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.environment_url = normalize_environment_url(environment_url)
        self.resource = resource_for(self.environment_url)
        self.authority_host = resolve_authority_host(self.environment_url, authority_host)
        if not client_id or not client_id.strip():
            raise ConfigError(
                "The setting client_id is required: set the application (client) id of the "
                "Entra ID app registration."
            )
        self.client_id = client_id.strip()
        if client_secret and client_certificate is not None:
            raise ConfigError(
                "Both client_secret and client_certificate_path are set: keep only the "
                "credential the app registration should use."
            )
        self.token_cache_path = (
            Path(token_cache_path).expanduser() if token_cache_path is not None else None
        )
        self._cache = msal.SerializableTokenCache()
        if self.token_cache_path is not None:
            with token_cache_lock(self.token_cache_path):
                load_token_cache(self._cache, self.token_cache_path)
        # Delegated when a refresh token is given, or when the cache file already holds one for
        # this client (put there by `tap-dynamics login` or by an earlier delegated run).
        delegated = bool(refresh_token) or self._cache_has_refresh_token(self.client_id)
        self.flow = FLOW_REFRESH_TOKEN if delegated else FLOW_CLIENT_CREDENTIALS
        if self.flow == FLOW_CLIENT_CREDENTIALS:
            if not client_secret and client_certificate is None:
                raise ConfigError(
                    "No credential is set: set client_secret (or client_certificate_path) and "
                    "tenant_id for the client-credentials flow, or sign in with `tap-dynamics "
                    "login` for the delegated flow (README: Getting a refresh token)."
                )
            if not tenant_id:
                raise ConfigError(
                    "The setting tenant_id is required for the client-credentials flow: set the "
                    "directory (tenant) id or domain, for example contoso.onmicrosoft.com."
                )
            if tenant_id.lower() in _TENANT_ALIASES:
                raise ConfigError(
                    f"The setting tenant_id is '{tenant_id}', which the client-credentials flow "
                    "cannot use: set the directory (tenant) id or domain."
                )
        self.tenant_id = tenant_id
        self.authority = f"{self.authority_host}/{tenant_id or 'organizations'}"
        self.scopes = (
            [f"{self.resource}/user_impersonation"]
            if self.flow == FLOW_REFRESH_TOKEN
            else [f"{self.resource}/.default"]
        )
        self._secret = client_secret or None
        self._certificate = client_certificate
        self._refresh_token = refresh_token or None
        # Everything that must never be shown, for scrubbing service texts.
        self._never_show: set[str] = {s for s in (self._secret, self._refresh_token) if s}
        self._owns_session = session is None
        self._session: requests.Session = session or VerifiedSession(timeout=HTTP_TIMEOUT)
        self._lock = threading.RLock()
        self._app: msal.ClientApplication | None = None
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._lifetime = 0.0
        self._home_account_id: str | None = None

    def _cache_has_refresh_token(self, client_id: str) -> bool:
        entries = self._cache.search(
            msal.TokenCache.CredentialType.REFRESH_TOKEN, query={"client_id": client_id}
        )
        return any(entry.get("secret") for entry in entries)

    # -------------------------------------------------------------------------- construction

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, session: requests.Session | None = None
    ) -> TokenProvider:
        """Build a provider from tap/target settings.

        Reads ``environment_url``, ``client_id``, ``client_secret``, ``refresh_token``,
        ``tenant_id``, ``authority_host``, ``token_cache_path``, ``client_certificate_path`` and
        ``client_certificate_thumbprint``; empty strings count as unset.

        Args:
            config: the settings.
            session: the HTTP session for the identity endpoints (default: a new
                :class:`VerifiedSession`).

        Returns:
            The provider (no network traffic yet).

        Raises:
            ConfigError: settings missing, malformed or inconsistent.
        """
        environment_url = _setting(config, "environment_url")
        if environment_url is None:
            raise ConfigError(
                "The setting environment_url is required: set it to the environment's URL, for "
                "example https://yourorg.crm.dynamics.com."
            )
        client_id = _setting(config, "client_id")
        if client_id is None:
            raise ConfigError(
                "The setting client_id is required: set the application (client) id of the "
                "Entra ID app registration."
            )
        cert_path = _setting(config, "client_certificate_path")
        thumbprint = _setting(config, "client_certificate_thumbprint")
        if thumbprint and not cert_path:
            raise ConfigError(
                "The setting client_certificate_thumbprint is set without "
                "client_certificate_path: set the path of the PEM file holding the certificate's "
                "private key."
            )
        certificate = ClientCertificate.load(cert_path, thumbprint) if cert_path else None
        return cls(
            environment_url=environment_url,
            client_id=client_id,
            tenant_id=_setting(config, "tenant_id"),
            authority_host=_setting(config, "authority_host"),
            client_secret=_setting(config, "client_secret"),
            client_certificate=certificate,
            refresh_token=_setting(config, "refresh_token"),
            token_cache_path=_setting(config, "token_cache_path"),
            session=session,
        )

    @property
    def credential_kind(self) -> str:
        """``client_secret``, ``certificate`` or ``none`` (a public client)."""
        if self._secret:
            return "client_secret"
        if self._certificate is not None:
            return "certificate"
        return "none"

    def __repr__(self) -> str:
        return (
            f"TokenProvider(environment_url={self.environment_url!r}, "
            f"client_id={self.client_id!r}, tenant_id={self.tenant_id!r}, "
            f"authority_host={self.authority_host!r}, flow={self.flow!r}, "
            f"credential={self.credential_kind!r}, "
            f"token_cache_path={str(self.token_cache_path) if self.token_cache_path else None!r})"
        )

    def close(self) -> None:
        """Close the HTTP session if this provider created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> TokenProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------- tokens

    def token(self, force_refresh: bool = False, *, rejected_token: str | None = None) -> str:
        """A valid access token for the environment.

        A token held in memory is reused while more than the refresh margin remains (300 s, or
        half the lifetime for short-lived tokens, but never less than 60 s).

        Args:
            force_refresh: skip every cache (this provider's and msal's) and ask Entra ID; use it
                once after the Web API answered 401.
            rejected_token: with ``force_refresh``, the token the Web API rejected: when another
                thread has already replaced it, the replacement is returned without a new request.

        Returns:
            The bearer token (without ``Bearer``).

        Raises:
            AuthError: Entra ID refused, or could not be reached.
            ConfigError: the token cache file cannot be written.
        """
        with self._lock:
            now = time.time()
            held = self._access_token
            if held is not None and self._fresh(now):
                if not force_refresh:
                    return held
                if rejected_token is not None and rejected_token != held:
                    return held
            result = self._acquire(force_refresh)
            token = str(result["access_token"])
            try:
                lifetime = float(result.get("expires_in") or DEFAULT_LIFETIME)
            except (TypeError, ValueError):
                lifetime = DEFAULT_LIFETIME
            self._access_token = token
            self._lifetime = lifetime
            self._expires_at = now + lifetime
            self._never_show.add(token)
            source = result.get("token_source", "identity_provider")
            logger.info(
                "Got an access token for %s (client_id %s, %s flow, from %s), valid for %d s",
                self.resource,
                self.client_id,
                self.flow,
                "msal's cache" if source == "cache" else "Entra ID",
                int(lifetime),
            )
            return token

    def _fresh(self, now: float) -> bool:
        margin = min(REFRESH_MARGIN, max(MIN_REMAINING, self._lifetime / 2))
        return self._expires_at - now >= margin

    def _acquire(self, force_refresh: bool) -> Mapping[str, Any]:
        app = self._get_app()
        with self._cache_file_lock():
            self._load_cache_file()
            try:
                if self.flow == FLOW_CLIENT_CREDENTIALS:
                    assert isinstance(app, msal.ConfidentialClientApplication)
                    if force_refresh:
                        app.remove_tokens_for_client()
                    result: Mapping[str, Any] = app.acquire_token_for_client(scopes=self.scopes)
                else:
                    result = self._acquire_delegated(app, force_refresh)
            except requests.RequestException as exc:
                raise self._network_error(exc) from None
            finally:
                self._save_cache_file()
        if "access_token" not in result:
            raise self._error(result)
        return result

    def _acquire_delegated(
        self, app: msal.ClientApplication, force_refresh: bool
    ) -> Mapping[str, Any]:
        first_error: Mapping[str, Any] | None = None
        account, cached_rts = self._find_account(app)
        if account is not None:
            silent = app.acquire_token_silent_with_error(
                self.scopes, account, force_refresh=force_refresh
            )
            if silent and "access_token" in silent:
                self._remember(silent, account.get("home_account_id"))
                return silent
            if silent:
                first_error = silent
        rt = self._refresh_token
        if rt and rt not in cached_rts:
            if first_error is not None:
                code = _aadsts_code(first_error)
                logger.info(
                    "The token cache's refresh token was refused (%s); trying the one from the "
                    "settings",
                    f"AADSTS{code}" if code is not None else first_error.get("error"),
                )
            result = app.acquire_token_by_refresh_token(rt, scopes=self.scopes)
            if "access_token" in result:
                self._remember(result, _home_account_id(result))
                return result
            return first_error or result
        if first_error is not None:
            return first_error
        return {
            "error": "no_refresh_token",
            "error_description": "No refresh token is available for this client.",
        }

    def _remember(self, result: Mapping[str, Any], home_account_id: object) -> None:
        """Keep the rotated refresh token (msal has put it in the cache too) and the account."""
        new_rt = result.get("refresh_token")
        if isinstance(new_rt, str) and new_rt:
            self._refresh_token = new_rt
            self._never_show.add(new_rt)
        if isinstance(home_account_id, str) and home_account_id:
            self._home_account_id = home_account_id

    def _find_account(self, app: msal.ClientApplication) -> tuple[dict[str, Any] | None, set[str]]:
        """The cached account with a refresh token for this client (the newest one first), and
        the refresh tokens msal would try for it."""
        best: tuple[int, dict[str, Any], set[str]] | None = None
        for account in app.get_accounts():
            entries = list(
                self._cache.search(
                    msal.TokenCache.CredentialType.REFRESH_TOKEN,
                    query={
                        "client_id": self.client_id,
                        "home_account_id": account.get("home_account_id"),
                        "environment": account.get("environment"),
                    },
                )
            )
            if not entries:
                continue
            secrets_ = {str(e.get("secret")) for e in entries}
            if account.get("home_account_id") == self._home_account_id:
                return account, secrets_
            newest = max(int(e.get("last_modification_time") or 0) for e in entries)
            if best is None or newest > best[0]:
                best = (newest, account, secrets_)
        if best is None:
            return None, set()
        return best[1], best[2]

    def _get_app(self) -> msal.ClientApplication:
        if self._app is not None:
            return self._app
        kwargs: dict[str, Any] = {
            "authority": self.authority,
            "token_cache": self._cache,
            "http_client": self._session,
        }
        if not uses_instance_discovery(self.authority_host):
            kwargs["instance_discovery"] = False
        credential: Any = self._secret
        if self._certificate is not None:
            credential = self._certificate.msal_credential()
        try:
            if credential:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=credential, **kwargs
                )
            else:
                self._app = msal.PublicClientApplication(self.client_id, **kwargs)
        except requests.RequestException as exc:
            raise self._network_error(exc) from None
        except ValueError:
            # Tenant discovery failed (msal says "Unable to get authority configuration");
            # ask once more to learn Entra ID's own error code.
            raise self._discovery_error() from None
        return self._app

    # -------------------------------------------------------------------------- errors

    def _scrub(self, text: str) -> str:
        for secret in self._never_show:
            if secret and len(secret) >= 4:
                text = text.replace(secret, _REDACTED)
        if self._certificate is not None:
            text = text.replace(self._certificate.private_key_pem, _REDACTED)
        return _redact(text)

    def _error(self, result: Mapping[str, Any]) -> AuthError:
        """One sentence for an msal error result."""
        return auth_error(
            result,
            client_id=self.client_id,
            tenant_id=self.tenant_id,
            resource=self.resource,
            certificate_thumbprint=self._certificate.thumbprint if self._certificate else None,
            scrub=self._scrub,
        )

    def _network_error(self, exc: requests.RequestException) -> AuthError:
        return network_error(self.authority_host, exc)

    def _discovery_error(self) -> AuthError:
        return discovery_error(
            self._session,
            authority=self.authority,
            authority_host=self.authority_host,
            tenant_id=self.tenant_id,
            on_error=self._error,
        )

    # -------------------------------------------------------------------------- cache file

    @contextmanager
    def _cache_file_lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``<token_cache_path>.lock`` (no-op without a cache path)."""
        if self.token_cache_path is None:
            yield
            return
        with token_cache_lock(self.token_cache_path):
            yield

    def _load_cache_file(self) -> None:
        """Replace the in-memory cache by the file's content (caller holds the file lock)."""
        if self.token_cache_path is not None:
            load_token_cache(self._cache, self.token_cache_path)

    def _save_cache_file(self) -> None:
        """Write the cache if msal changed it (caller holds the file lock): mode 0600, atomic."""
        if self.token_cache_path is not None:
            save_token_cache(self._cache, self.token_cache_path)
