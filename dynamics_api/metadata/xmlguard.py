"""The one hostile-XML guard: a document's prolog is checked before a byte reaches the XML parser.

The prolog is everything before the root element. Any ``DOCTYPE`` in it (and so any ``ENTITY``
declaration: billion laughs, external entities) is refused, whatever the encoding (UTF-8 with or
without a BOM, UTF-16); UTF-32, EBCDIC and declared encodings that are neither ASCII-compatible
nor UTF-16 are refused too, so a DOCTYPE cannot hide behind an exotic encoding. A document that
is not XML at all (an HTML sign-in page served in place of ``$metadata``, a JSON error) is named
as such, which is the usual cause when the environment URL is wrong.

Why not ``defusedxml``: its ElementTree parser is the pure-Python one (per-element callbacks),
which would slow the streaming C ``XMLPullParser`` this package relies on, and it cannot tell an
HTML page from a hostile document. Checking the prolog costs nothing per element: once the root
element's ``<`` is seen, a DTD can no longer appear (the parser rejects it as not well-formed).
"""

from __future__ import annotations

import re

from dynamics_api.metadata.model import MetadataError

__all__ = ["NOT_DATAVERSE", "PrologGuard"]

_PROLOG_LIMIT = 1024 * 1024
NOT_DATAVERSE = (
    "the URL probably isn't a Dataverse environment (expected "
    "https://<org>.crm<N>.dynamics.com, the service answering /api/data/v9.2/$metadata)"
)

_XML_DECL_ENCODING = re.compile(r"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ASCII_COMPATIBLE = frozenset(
    {
        "utf-8",
        "utf8",
        "us-ascii",
        "ascii",
        "iso-8859-1",
        "latin-1",
        "latin1",
        "windows-1252",
        "cp1252",
    }
)
_UTF16 = frozenset({"utf-16", "utf16", "utf-16le", "utf-16be"})


class PrologGuard:
    """Holds back the first bytes until the prolog is known to be free of DTD declarations.

    The prolog is everything before the root element: an XML declaration, comments, processing
    instructions and, in a hostile document, a ``DOCTYPE`` with ``ENTITY`` declarations. Once
    the root element's ``<`` is seen the document can no longer declare entities (a DOCTYPE
    after it is a well-formedness error for the parser), so the rest passes straight through.
    """

    __slots__ = ("_buf", "done", "origin")

    def __init__(self, origin: str) -> None:
        self._buf = b""
        self.done = False
        self.origin = origin

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """Returns the bytes that may go to the parser now (empty while still undecided)."""
        if self.done:
            return chunk
        self._buf += chunk
        if self._check(self._buf, final):
            self.done = True
            out, self._buf = self._buf, b""
            return out
        if final:
            raise MetadataError(
                f"The $metadata document from {self.origin} is empty or has no root element; "
                f"{NOT_DATAVERSE}."
            )
        if len(self._buf) > _PROLOG_LIMIT:
            raise MetadataError(
                f"The $metadata document from {self.origin} has no root element in its first "
                f"{_PROLOG_LIMIT} bytes; {NOT_DATAVERSE}."
            )
        return b""

    def _check(self, buf: bytes, final: bool) -> bool:
        if len(buf) < 4 and not final:
            return False
        family: str
        if buf.startswith(
            (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00")
        ):
            self._refuse_encoding("UTF-32")
        if buf.startswith(b"\x4c\x6f\xa7\x94"):
            self._refuse_encoding("EBCDIC")
        if buf.startswith(b"\xef\xbb\xbf"):
            family, text = "utf-8", buf[3:].decode("latin-1")
        elif buf.startswith((b"\xff\xfe", b"<\x00")):
            body = buf[2:] if buf.startswith(b"\xff\xfe") else buf
            family, text = "utf-16", body[: len(body) // 2 * 2].decode("utf-16-le", "replace")
        elif buf.startswith((b"\xfe\xff", b"\x00<")):
            body = buf[2:] if buf.startswith(b"\xfe\xff") else buf
            family, text = "utf-16", body[: len(body) // 2 * 2].decode("utf-16-be", "replace")
        else:
            # Any ASCII-compatible encoding: markup bytes are the same whatever the declaration
            # says, as long as the declared encoding is ASCII-compatible (checked below).
            family, text = "ascii", buf.decode("latin-1")
        return self._scan(text, family, final)

    def _refuse_encoding(self, name: str) -> None:
        raise MetadataError(
            f"The $metadata document from {self.origin} is encoded in {name}, which is refused "
            f"(Dataverse sends UTF-8); {NOT_DATAVERSE}."
        )

    def _scan(self, text: str, family: str, final: bool) -> bool:
        pos, n = 0, len(text)
        while True:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos >= n:
                return False
            if text[pos] != "<":
                raise MetadataError(
                    f"The $metadata document from {self.origin} is not XML (it starts with "
                    f"{text[pos : pos + 20]!r}); {NOT_DATAVERSE}."
                )
            if n - pos < 4 and not final:
                return False
            if text.startswith("<?", pos):
                end = text.find("?>", pos + 2)
                if end < 0:
                    return False
                if text.startswith("<?xml", pos):
                    self._check_declared_encoding(text[pos:end], family)
                pos = end + 2
            elif text.startswith("<!--", pos):
                end = text.find("-->", pos + 4)
                if end < 0:
                    return False
                pos = end + 3
            elif text.startswith("<!", pos):
                if text[pos : pos + 14].upper().startswith("<!DOCTYPE HTML"):
                    raise MetadataError(
                        f"The $metadata request to {self.origin} returned an HTML page, not "
                        f"OData CSDL; {NOT_DATAVERSE}."
                    )
                raise MetadataError(
                    f"The $metadata document from {self.origin} contains a DOCTYPE/ENTITY "
                    "declaration; it is refused before parsing (entity expansion or external "
                    "entities could exhaust memory or read local files). Dataverse never sends one."
                )
            else:
                return True

    def _check_declared_encoding(self, decl: str, family: str) -> None:
        match = _XML_DECL_ENCODING.search(decl)
        if match is None:
            return
        declared = match.group(1).lower()
        allowed = _UTF16 if family == "utf-16" else _ASCII_COMPATIBLE
        if declared not in allowed:
            self._refuse_encoding(declared)
