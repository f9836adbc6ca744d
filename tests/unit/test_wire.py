"""A response's body read in one piece (``dynamics_api.wire.read_body``), over a real urllib3
response, as the service sends it (gzip when asked). A body cut off before its announced length
is a network error, retried: tests/integration/test_http.py (the emulator's ``truncate`` fault,
over a real socket). ``DataverseClient.request`` tells ``answered`` only when an answer gives
its length (the emulator, which always does: tests/integration/test_http.py)."""

from __future__ import annotations

import gzip
import io

import pytest
import requests
import requests.adapters
import urllib3

from dynamics_api.http import DataverseClient
from dynamics_api.wire import INTO_CHUNK, read_body, read_body_into

PAGE = b'{"value":[' + b",".join(b'{"name":"row %d"}' % i for i in range(2000)) + b"]}"


def _response(body: bytes, headers: dict[str, str]) -> requests.Response:
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(body),
        headers=headers,
        status=200,
        preload_content=False,
        enforce_content_length=True,
    )
    response = requests.Response()
    response.raw = raw
    response.status_code = 200
    response.headers = requests.structures.CaseInsensitiveDict(headers)
    return response


def test_a_body_is_read_whole_and_kept_as_the_content() -> None:
    response = _response(PAGE, {"Content-Length": str(len(PAGE))})
    assert read_body(response) == PAGE
    assert response.content == PAGE  # not read again: the raw stream is spent
    assert b"".join(response.iter_content(1000)) == PAGE


def test_a_gzip_body_comes_decoded() -> None:
    packed = gzip.compress(PAGE)
    response = _response(packed, {"Content-Length": str(len(packed)), "Content-Encoding": "gzip"})
    assert read_body(response) == PAGE


def test_a_body_written_to_a_file_comes_whole_and_decoded() -> None:
    big = PAGE * (2 * INTO_CHUNK // len(PAGE) + 1)  # more than one read of the file's chunk
    for body, headers in (
        (big, {"Content-Length": str(len(big))}),
        (gzip.compress(big), {"Content-Encoding": "gzip"}),
    ):
        response = _response(body, headers)
        into = io.BytesIO(b"kept")
        into.seek(4)  # written from where the file stands
        assert read_body_into(response, into) == len(big)
        assert into.getvalue() == b"kept" + big
        assert response.content == b""  # the body is the file's, not read again


class _Answers(requests.adapters.BaseAdapter):
    """Answers every request with PAGE, with the given headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__()
        self.headers = headers

    def send(
        self, request: requests.PreparedRequest, *args: object, **kw: object
    ) -> requests.Response:
        response = _response(PAGE, self.headers)
        response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        pass


class _Token:
    def token(self, force_refresh: bool = False) -> str:
        return "t"


@pytest.mark.parametrize(
    ("headers", "told"),
    [({"Content-Length": str(len(PAGE))}, 1), ({}, 0)],
    ids=["length given", "sent as it is made"],
)
def test_answered_is_told_only_when_the_answer_gives_its_length(
    headers: dict[str, str], told: int
) -> None:
    # Without a length, the service may still be making the body as it sends it: its work is
    # not known to be done before the body has come.
    with DataverseClient("https://org.crm.dynamics.com", _Token()) as client:
        client._session.mount("https://", _Answers(headers))
        seen: list[None] = []
        response = client.request("GET", "accounts", answered=lambda: seen.append(None))
    assert len(seen) == told and response.content == PAGE
