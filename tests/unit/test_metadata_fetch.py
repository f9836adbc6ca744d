"""dynamics_api.metadata.fetch: $metadata streamed through the parser (no network)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dynamics_api.metadata import fetch_metadata, metadata_url
from tests.fixtures import CRM_SCHEMA, needs_fixtures
from tests.unit.csdl_docs import ENV, VERSION, Opener, base_declared_first


def test_metadata_url() -> None:
    assert metadata_url("https://Contoso.crm4.dynamics.com/", VERSION) == (
        "https://contoso.crm4.dynamics.com/api/data/v9.2/$metadata?annotations=true"
    )


@needs_fixtures
def test_fetch_streams_through_the_parser() -> None:
    opener = Opener(CRM_SCHEMA.read_bytes())
    model = fetch_metadata(opener, ENV + "/", ["account"], api_version=VERSION)
    assert opener.urls == [f"{ENV}/api/data/v9.2/$metadata?annotations=true"]
    assert set(model.entities) == {"account", "crmbaseentity"}


def test_fetch_refetches_when_a_base_was_skipped() -> None:
    opener = Opener(base_declared_first(), chunk=64)
    model = fetch_metadata(opener, ENV, ["derived"], api_version=VERSION)
    assert len(opener.urls) == 2
    assert set(model.entities) == {"derived", "base"}


@needs_fixtures
def test_fetch_with_a_session_like_object() -> None:
    doc = CRM_SCHEMA.read_bytes()

    class Response:
        closed = False

        def raise_for_status(self) -> None:
            pass

        def iter_content(self, chunk_size: int) -> Iterable[bytes]:
            return (doc[i : i + chunk_size] for i in range(0, len(doc), chunk_size))

        def close(self) -> None:
            self.closed = True

    class Session:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []
            self.response = Response()

        def get(self, url: str, **kwargs: Any) -> Response:
            self.calls.append((url, kwargs))
            return self.response

    session = Session()
    model = fetch_metadata(session, ENV, ["contact"], api_version=VERSION)
    assert "contact" in model.entities
    assert session.calls[0][1]["stream"] is True
    assert session.response.closed
