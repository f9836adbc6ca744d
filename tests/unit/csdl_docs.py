"""Small CSDL documents and a recording ``open_stream`` for the dynamics_api.metadata tests."""

from __future__ import annotations

from collections.abc import Iterator

VERSION = "9.2"
ENV = "https://contoso.crm4.dynamics.com"
STANDARD = [
    "account",
    "contact",
    "incident",
    "activitypointer",
    "email",
    "phonecall",
    "task",
    "opportunity",
    "lead",
    "systemuser",
    "team",
    "annotation",
]

EDMX_OPEN = '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">'
SCHEMA_OPEN = (
    '<Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" '
    'xmlns="http://docs.oasis-open.org/odata/ns/edm">'
)


def csdl(types: str, container: str = "", *, references: str = "", prolog: str = "") -> bytes:
    """A minimal CSDL document around entity type declarations and entity sets."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}{EDMX_OPEN}{references}'
        f"<edmx:DataServices>{SCHEMA_OPEN}{types}"
        f'<EntityContainer Name="System">{container}</EntityContainer>'
        "</Schema></edmx:DataServices></edmx:Edmx>"
    ).encode()


def entity(name: str, body: str, *, base: str | None = None, abstract: bool = False) -> str:
    attrs = f' Name="{name}"'
    if base:
        attrs += f' BaseType="mscrm.{base}"'
    if abstract:
        attrs += ' Abstract="true"'
    return f"<EntityType{attrs}>{body}</EntityType>"


def key(name: str) -> str:
    return f'<Key><PropertyRef Name="{name}" /></Key>'


def prop(name: str, edm_type: str = "Edm.String", extra: str = "", body: str = "") -> str:
    return f'<Property Name="{name}" Type="{edm_type}"{extra}>{body}</Property>'


def base_declared_first() -> bytes:
    return csdl(
        entity("base", key("baseid") + prop("baseid", "Edm.Guid") + prop("shared"))
        + entity("derived", key("baseid") + prop("own"), base="base")
        + entity("other", key("otherid") + prop("otherid", "Edm.Guid"))
    )


class Opener:
    """An ``open_stream`` that serves a document in chunks and records the URLs."""

    def __init__(self, doc: bytes, chunk: int = 8192) -> None:
        self.doc, self.chunk = doc, chunk
        self.urls: list[str] = []

    def __call__(self, url: str) -> Iterator[bytes]:
        self.urls.append(url)
        for i in range(0, len(self.doc), self.chunk):
            yield self.doc[i : i + self.chunk]
