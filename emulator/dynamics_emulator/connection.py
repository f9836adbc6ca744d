"""Where an emulator is and how to sign in to it: what a client needs, in one value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Connection:
    """The emulator's URLs, tenant, confidential client and CA bundle.

    ``settings()`` gives them as tap-dynamics / target-dynamics settings; the CA bundle is not a
    setting (clients trust it through ``REQUESTS_CA_BUNDLE``, see ``environ()``).
    """

    environment_url: str
    authority_host: str
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    ca_bundle: str

    @property
    def authority(self) -> str:
        """The msal authority: ``<authority_host>/<tenant>``."""
        return f"{self.authority_host}/{self.tenant_id}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings for tap-dynamics / target-dynamics pointed at this emulator."""
        cfg: dict[str, Any] = {
            "environment_url": self.environment_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "tenant_id": self.tenant_id,
            "authority_host": self.authority_host,
        }
        cfg.update(overrides)
        return cfg

    def environ(self) -> dict[str, str]:
        """Environment variables a client process needs besides its settings."""
        return {"REQUESTS_CA_BUNDLE": self.ca_bundle}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], ca_bundle: str) -> Connection:
        """The connection behind connector settings (``settings()``'s inverse)."""
        return cls(
            environment_url=settings["environment_url"],
            authority_host=settings["authority_host"],
            tenant_id=settings["tenant_id"],
            client_id=settings["client_id"],
            client_secret=settings["client_secret"],
            ca_bundle=ca_bundle,
        )

    @classmethod
    def from_file(cls, path: str | Path, client_secret: str | None = None) -> Connection:
        """The connection of a running ``dynamics-emulator``, from the ``emulator.json`` it wrote.

        The file holds no secret: pass the one given with ``--client-secret-env``, or leave it
        out to read the generated one from the ``client_secret`` file beside it.
        """
        path = Path(path)
        info = json.loads(path.read_text(encoding="utf-8"))
        if client_secret is None:
            client_secret = (path.parent / "client_secret").read_text(encoding="utf-8").strip()
        return cls(
            environment_url=info["environment_url"],
            authority_host=info["authority_host"],
            tenant_id=info["tenant_id"],
            client_id=info["client_id"],
            client_secret=client_secret,
            ca_bundle=info["ca_bundle"],
        )
