"""Environment URL validation and the Microsoft cloud (and so the Entra ID host) it belongs to.

A Dataverse environment lives at ``https://<org>.crm<N>.dynamics.com`` (public cloud, ``<N>`` the
region; ``crm9`` is US GCC) or, in Microsoft's "Developer resources" form,
``https://<org>.api.crm<N>.dynamics.com``. Sovereign clouds have their own suffixes and their own
Entra ID (login) hosts:

=================  ===============================  ==================================
cloud              org host suffix                  authority host
=================  ===============================  ==================================
public             ``crm[N].dynamics.com``          ``https://login.microsoftonline.com``
gcc                ``crm9.dynamics.com``            ``https://login.microsoftonline.com``
gcc-high           ``crm.microsoftdynamics.us``     ``https://login.microsoftonline.us``
dod                ``crm.appsplatform.us``          ``https://login.microsoftonline.us``
china              ``crm.dynamics.cn``              ``https://login.chinacloudapi.cn``
custom             anything else (the emulator)     must be given as ``authority_host``
=================  ===============================  ==================================

Each suffix may be preceded by ``api.`` (``org.api.crm4.dynamics.com``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from dynamics_api.errors import ConfigError

__all__ = [
    "CHINA_AUTHORITY",
    "PUBLIC_AUTHORITY",
    "US_GOV_AUTHORITY",
    "Cloud",
    "cloud_for",
    "normalize_authority_host",
    "normalize_environment_url",
    "resolve_authority_host",
    "resource_for",
]

PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
US_GOV_AUTHORITY = "https://login.microsoftonline.us"
CHINA_AUTHORITY = "https://login.chinacloudapi.cn"

_EXAMPLE = "https://yourorg.crm.dynamics.com"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_IPV6_RE = re.compile(r"^[0-9a-f:.]+$")
_ORG = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_GCC_RE = re.compile(rf"^{_ORG}\.(?:api\.)?crm9\.dynamics\.com$")
_PUBLIC_RE = re.compile(rf"^{_ORG}\.(?:api\.)?crm\d*\.dynamics\.com$")
_GCC_HIGH_RE = re.compile(rf"^{_ORG}\.(?:api\.)?crm\.microsoftdynamics\.us$")
_DOD_RE = re.compile(rf"^{_ORG}\.(?:api\.)?crm\.appsplatform\.us$")
_CHINA_RE = re.compile(rf"^{_ORG}\.(?:api\.)?crm\.dynamics\.cn$")


@dataclass(frozen=True)
class Cloud:
    """A Microsoft cloud as far as signing in is concerned.

    Attributes:
        name: ``public``, ``gcc``, ``gcc-high``, ``dod``, ``china`` or ``custom``.
        authority_host: the Entra ID host (``https://login.microsoftonline.com``), or ``None`` for
            ``custom`` environments, which need the ``authority_host`` setting.
    """

    name: str
    authority_host: str | None


_CLOUDS: tuple[tuple[re.Pattern[str], Cloud], ...] = (
    (_GCC_RE, Cloud("gcc", PUBLIC_AUTHORITY)),
    (_PUBLIC_RE, Cloud("public", PUBLIC_AUTHORITY)),
    (_GCC_HIGH_RE, Cloud("gcc-high", US_GOV_AUTHORITY)),
    (_DOD_RE, Cloud("dod", US_GOV_AUTHORITY)),
    (_CHINA_RE, Cloud("china", CHINA_AUTHORITY)),
)
_CUSTOM = Cloud("custom", None)


def _bad_url(setting: str, value: str | None, why: str, example: str) -> ConfigError:
    """A ConfigError naming the setting; ``value=None`` keeps the value out of the message."""
    if value is None:
        return ConfigError(f"The setting {setting} {why}, for example {example}.")
    shown = value if len(value) <= 200 else value[:200] + "..."
    return ConfigError(f"The setting {setting} ({shown!r}) {why}, for example {example}.")


def _split_https_url(value: object, setting: str, example: str) -> tuple[str, str, str]:
    """(original text, lower-cased host[:port], path) of an ``https://`` URL, or ConfigError."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"The setting {setting} is empty or not text: set it to an https URL, "
            f"for example {example}."
        )
    text = value.strip()
    if any(ch.isspace() for ch in text):
        raise _bad_url(setting, text, "contains spaces: set one https URL", example)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _bad_url(setting, text, "is not a valid URL: set an https URL", example) from None
    scheme = parts.scheme.lower()
    if scheme == "http":
        raise _bad_url(setting, text, "uses http://: use an https:// URL", example)
    if scheme != "https":
        raise _bad_url(setting, text, "must be an https:// URL", example)
    if parts.username is not None or parts.password is not None:
        # Never echo the value: it holds a password.
        raise _bad_url(
            setting, None, "must not contain a user name or password: set the plain URL", example
        )
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise _bad_url(  # a query may hold a signature or a code: do not echo it
            setting, None, "must not contain a query or fragment: set the plain URL", example
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise _bad_url(setting, text, "has no host name: set an https URL", example)
    if ":" in host:  # IPv6 literal
        if not _IPV6_RE.match(host):
            raise _bad_url(setting, text, "has an invalid host name: set an https URL", example)
        host_text = f"[{host}]"
    else:
        host = host.rstrip(".")
        if not _HOST_RE.match(host):
            raise _bad_url(setting, text, "has an invalid host name: set an https URL", example)
        host_text = host
    if port is not None and port != 443:
        if port == 0:
            raise _bad_url(setting, text, "has an invalid port: set an https URL", example)
        host_text = f"{host_text}:{port}"
    return text, host_text, parts.path


def normalize_environment_url(url: str) -> str:
    """The canonical form of an ``environment_url`` setting: ``https://<host>[:<port>]``.

    Surrounding spaces and a trailing ``/`` are removed, as is a Web API path
    (``/api/data/v9.2/``); the host is lower-cased; a port other than 443 is kept (443 is dropped,
    it is the same URL and must not leak into token scopes).

    Args:
        url: the setting's value.

    Returns:
        For example ``https://contoso.crm4.dynamics.com``.

    Raises:
        ConfigError: empty, not ``https://``, a path other than ``/api/data/...``, a query, a user
            name, or an unparsable host or port.
    """
    text, host, path = _split_https_url(url, "environment_url", _EXAMPLE)
    stripped = path.rstrip("/")
    if stripped and not (
        stripped.lower() == "/api/data" or stripped.lower().startswith("/api/data/")
    ):
        raise _bad_url(
            "environment_url",
            text,
            "has a path: set the environment's root URL (a Web API path /api/data/... is "
            "accepted and dropped)",
            _EXAMPLE,
        )
    return f"https://{host}"


def normalize_authority_host(authority_host: str) -> str:
    """The canonical form of an ``authority_host`` setting: ``https://<host>[:<port>]``.

    Args:
        authority_host: for example ``https://login.microsoftonline.us`` (or the emulator's URL).

    Returns:
        The URL without trailing ``/``, host lower-cased.

    Raises:
        ConfigError: not an https URL, or it has a path (the tenant belongs in ``tenant_id``).
    """
    text, host, path = _split_https_url(
        authority_host, "authority_host", "https://login.microsoftonline.com"
    )
    if path.rstrip("/"):
        raise _bad_url(
            "authority_host",
            text,
            "has a path: set the sign-in host only and put the tenant in tenant_id",
            "https://login.microsoftonline.com",
        )
    return f"https://{host}"


def _host_of(environment_url: str) -> str:
    host = normalize_environment_url(environment_url)[len("https://") :]
    if host.startswith("["):
        return host
    return host.rsplit(":", 1)[0] if ":" in host else host


def cloud_for(environment_url: str) -> Cloud:
    """The Microsoft cloud an environment belongs to, from its host name.

    Only the host name counts; an explicit port does not change the cloud.

    Args:
        environment_url: the ``environment_url`` setting (normalised here).

    Returns:
        The matching :class:`Cloud`, or ``Cloud("custom", None)`` for any other host.

    Raises:
        ConfigError: the URL is not a valid environment URL.
    """
    host = _host_of(environment_url)
    for pattern, cloud in _CLOUDS:
        if pattern.match(host):
            return cloud
    return _CUSTOM


def resolve_authority_host(environment_url: str, authority_host: str | None = None) -> str:
    """The Entra ID host to sign in at: the ``authority_host`` setting, else the cloud's.

    Args:
        environment_url: the ``environment_url`` setting.
        authority_host: the ``authority_host`` setting (empty or ``None`` when not set).

    Returns:
        For example ``https://login.microsoftonline.com``.

    Raises:
        ConfigError: a custom environment without ``authority_host``, or an invalid value.
    """
    if authority_host:
        return normalize_authority_host(authority_host)
    cloud = cloud_for(environment_url)
    if cloud.authority_host is None:
        raise ConfigError(
            f"The environment_url {normalize_environment_url(environment_url)!r} is not a known "
            "Dynamics 365 host (such as https://yourorg.crm.dynamics.com), so the sign-in host "
            "cannot be derived: set authority_host, for example https://login.microsoftonline.com."
        )
    return cloud.authority_host


def resource_for(environment_url: str) -> str:
    """The OAuth resource (scope prefix) for an environment: its normalised URL.

    Scopes are then ``f"{resource}/.default"`` (app) and ``f"{resource}/user_impersonation"``
    (delegated). An ``api.`` host (``https://org.api.crm.dynamics.com``) is used as-is rather than
    rewritten to ``https://org.crm.dynamics.com``: both hosts are served by the same organisation,
    Dynamics' service principal accepts either as the token audience (Microsoft's own OAuth sample
    uses the ``api.`` form as the resource), and keeping the user's URL means the resource always
    names exactly the host the requests go to.

    Args:
        environment_url: the ``environment_url`` setting.

    Returns:
        For example ``https://contoso.crm.dynamics.com`` (no trailing ``/``).

    Raises:
        ConfigError: the URL is not a valid environment URL.
    """
    return normalize_environment_url(environment_url)
