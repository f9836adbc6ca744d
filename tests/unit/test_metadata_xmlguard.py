"""dynamics_api.metadata.xmlguard: hostile and foreign documents are refused before parsing."""

from __future__ import annotations

import pytest

from dynamics_api.metadata import MetadataError, fetch_metadata, parse_metadata
from tests.fixtures import CRM_SCHEMA, needs_fixtures
from tests.unit.csdl_docs import EDMX_OPEN, ENV, VERSION, csdl, entity, key

# ---------------------------------------------------------------------------------------------
# Hostile and foreign documents
# ---------------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n"
    + EDMX_OPEN.encode()
    + b"&lol9;</edmx:Edmx>"
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    + EDMX_OPEN.encode()
    + b"&xxe;</edmx:Edmx>"
)
DOCTYPE_ONLY = (
    b'<!DOCTYPE edmx:Edmx SYSTEM "http://attacker.example/x.dtd">' + csdl("").split(b"?>", 1)[1]
)


def _utf16(doc: bytes, codec: str) -> bytes:
    text = doc.decode().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
    return "\ufeff".encode(codec) + text.encode(codec)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(DOCTYPE_ONLY, id="external-dtd"),
        pytest.param(b"\xef\xbb\xbf" + BILLION_LAUGHS, id="utf8-bom"),
        pytest.param(
            BILLION_LAUGHS.replace(b"?>\n", b"?>\n<!-- comment -->\n<?pi data?>\n", 1),
            id="after-comment-and-pi",
        ),
        pytest.param(_utf16(BILLION_LAUGHS, "utf-16-le"), id="utf16le-bom"),
        pytest.param(_utf16(BILLION_LAUGHS, "utf-16-be"), id="utf16be-bom"),
        pytest.param(_utf16(EXTERNAL_ENTITY, "utf-16-le")[2:], id="utf16le-no-bom"),
    ],
)
def test_dtd_is_refused_before_parsing(doc: bytes) -> None:
    with pytest.raises(MetadataError, match="DOCTYPE/ENTITY"):
        parse_metadata(doc)
    # also when it arrives one byte at a time
    with pytest.raises(MetadataError, match="DOCTYPE/ENTITY"):
        fetch_metadata(
            lambda url: (doc[i : i + 1] for i in range(len(doc))), ENV, api_version=VERSION
        )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            b'<?xml version="1.0" encoding="cp037"?>' + EDMX_OPEN.encode(),
            "cp037",
            id="ebcdic-declared",
        ),
        pytest.param(b"\x00\x00\xfe\xff\x00\x00\x00<", "UTF-32", id="utf32"),
        pytest.param(b"\x4c\x6f\xa7\x94\x93\x40", "EBCDIC", id="ebcdic"),
    ],
)
def test_refused_encodings(doc: bytes, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_metadata(doc)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(b"<!DOCTYPE html><html><body>Sign in</body></html>", id="html-doctype"),
        pytest.param(b"<html><head><title>Sign in</title></head></html>", id="html"),
        pytest.param(b'{"error": {"code": "0x80060888"}}', id="json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n  ", id="blank"),
        pytest.param(
            b'<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx">'
            b"</edmx:Edmx>",
            id="odata-v3-csdl",
        ),
        pytest.param(b'<feed xmlns="http://www.w3.org/2005/Atom"></feed>', id="atom"),
    ],
)
def test_not_csdl_is_refused(doc: bytes) -> None:
    with pytest.raises(MetadataError, match="isn't a Dataverse environment"):
        parse_metadata(doc)


def test_malformed_csdl_is_refused() -> None:
    with pytest.raises(MetadataError, match="not well-formed"):
        parse_metadata(csdl(entity("x", key("id")))[:-40])


def test_metadata_error_is_a_value_error() -> None:
    assert issubclass(MetadataError, ValueError)


@needs_fixtures
def test_str_source_is_a_path() -> None:
    with pytest.raises(TypeError, match="bytes"):
        parse_metadata("<edmx:Edmx/>")
    assert set(parse_metadata(str(CRM_SCHEMA), ["account"]).entities) == {
        "account",
        "crmbaseentity",
    }
