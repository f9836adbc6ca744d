"""The one secret scrubber (no I/O): what is masked, what is left alone, and msal's loggers."""

from __future__ import annotations

import logging

import pytest

from dynamics_api.auth import Scrubber, redact
from dynamics_api.auth.scrub import REDACTED

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        pytest.param(f"Bearer {JWT}", JWT, id="jwt"),
        pytest.param(f"token={JWT}.", "c2lnbmF0dXJl", id="jwt-signature"),
        pytest.param('{"refresh_token": "0.AR-rt", "x": 1}', "0.AR-rt", id="json-field"),
        pytest.param('{"client_secret":"abc~def"}', "abc~def", id="json-no-space"),
        pytest.param('{"client_assertion": "a.b.c"}', "a.b.c", id="assertion"),
        pytest.param("{'code': '1.Acode', 'state': 's'}", "1.Acode", id="repr-field"),
        pytest.param("{'code_verifier': 'v3rifier'}", "v3rifier", id="verifier"),
        pytest.param("POST /?code=1.Acode&state=s HTTP/1.1", "1.Acode", id="query-param"),
        pytest.param("GET /cb?access_token=at-value#x", "at-value", id="query-token"),
    ],
)
def test_redact_masks_secret_shapes(text: str, hidden: str) -> None:
    out = redact(text)
    assert hidden not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "Entra ID refused a token for client_id 'abc' (AADSTS7000215).",
        '{"error_codes": [7000215], "state": "s1", "codes": "x"}',
        "the code path is fine; state=abc&scope=openid",
        "https://org.crm.dynamics.com/api/data/v9.2/accounts?$select=name",
        "eyJ alone is not a token",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_scrubber_removes_known_values_then_shapes() -> None:
    scrub = Scrubber("plain-secret-value", None, "", "abc")
    scrub.add("0.ARrefresh-token")
    out = scrub(f"a plain-secret-value b 0.ARrefresh-token c {JWT} abc")
    assert out == f"a {REDACTED} b {REDACTED} c {REDACTED} abc"  # 3 characters: left alone
    assert "plain-secret-value" not in repr(scrub)


def test_scrubber_masks_the_longest_value_whole() -> None:
    scrub = Scrubber("secret", "secret-and-more")
    assert scrub("x secret-and-more y") == f"x {REDACTED} y"


@pytest.mark.parametrize(
    "logger_name", ["msal.application", "msal.oauth2cli.authcode", "msal.token_cache"]
)
def test_msal_loggers_are_redacted(caplog: pytest.LogCaptureFixture, logger_name: str) -> None:
    caplog.set_level(logging.DEBUG, logger=logger_name)
    # What msal's redirect listener logs on an answer, and an event line with an assertion.
    logging.getLogger(logger_name).debug(
        "Got auth response: %s", {"code": "1.Acode-value", "state": "st"}
    )
    logging.getLogger(logger_name).debug("event=%s", '{"client_assertion": "h.c.s"}')
    assert "Got auth response" in caplog.text
    assert "1.Acode-value" not in caplog.text
    assert "h.c.s" not in caplog.text
    assert "'state': 'st'" in caplog.text


def test_other_loggers_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="tests.scrub")
    logging.getLogger("tests.scrub").debug("%s", {"code": "visible"})
    assert "visible" in caplog.text
