"""The authorize endpoint (``/{t}/oauth2/v2.0/authorize``): it signs in the default user (or the
one named by ``login_hint``) without a page and redirects back with a code, in ``query``,
``fragment`` or ``form_post`` mode; and the PKCE check the token endpoint makes when the code is
redeemed."""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import uuid
from urllib.parse import urlencode

from dynamics_emulator.wire import Response

from .common import (
    HTML_TYPE,
    AadError,
    AuthCode,
    b64e,
    missing,
    redirect_matches,
    redirect_mismatch,
)
from .minting import Minting


def pkce_matches(challenge: str, method: str | None, verifier: str) -> bool:
    """Whether ``verifier`` answers the authorize request's ``code_challenge``."""
    if method == "S256":
        computed = b64e(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
    else:
        computed = verifier
    return bool(verifier) and hmac.compare_digest(computed, challenge)


class Authorization(Minting):
    def _authorize(
        self, tenant_seg: str, tenant_known: bool, p: dict[str, str], correlation_id: str
    ) -> Response:
        now = self._clock()
        if not tenant_known:
            return self._error_page(90002, self._tenant_not_found(tenant_seg), correlation_id, now)
        client_id = p.get("client_id")
        if not client_id:
            err = missing("client_id")
            return self._error_page(err.code, err.description, correlation_id, now)
        try:
            client = self._client(client_id)
        except AadError as exc:
            return self._error_page(exc.code, exc.description, correlation_id, now)
        redirect_uri = p.get("redirect_uri")
        redirect_uri_sent = redirect_uri is not None
        if redirect_uri is None:
            if not client.redirect_uris:
                return self._error_page(
                    500113,
                    "No reply address is registered for the application.",
                    correlation_id,
                    now,
                )
            redirect_uri = client.redirect_uris[0]
        if not any(redirect_matches(redirect_uri, r) for r in client.redirect_uris):
            err = redirect_mismatch(redirect_uri, client, 400, "invalid_request")
            return self._error_page(err.code, err.description, correlation_id, now)
        response_mode = p.get("response_mode") or "query"
        if response_mode not in ("query", "fragment", "form_post"):
            response_mode = "query"
        state = p.get("state")

        def fail(error: str, code: int, description: str) -> Response:
            params = {
                "error": error,
                "error_description": self._describe(code, description, correlation_id, now),
                "error_uri": f"{self.base_url}/error?code={code}",
            }
            if state is not None:
                params["state"] = state
            return self._redirect(redirect_uri, response_mode, params)

        response_type = p.get("response_type")
        if not response_type:
            return fail("invalid_request", 900144, missing("response_type").description)
        if response_type != "code":
            return fail(
                "unsupported_response_type",
                700054,
                f"response_type '{response_type}' is not enabled for the application.",
            )
        scope = p.get("scope")
        if not scope or not scope.split():
            return fail("invalid_request", 900144, missing("scope").description)
        scopes = tuple(scope.split())
        try:
            self._resolve_user_scopes(scopes)
        except AadError as exc:
            return fail(exc.error, exc.code, exc.description)
        challenge = p.get("code_challenge")
        method = p.get("code_challenge_method")
        if challenge is not None:
            method = method or "plain"
            if method not in ("S256", "plain"):
                return fail(
                    "invalid_request",
                    501491,
                    f"Invalid code_challenge_method '{method}'. Supported values: S256, plain.",
                )
        login_hint = p.get("login_hint")
        with self._lock:
            user = self._find_user(login_hint) if login_hint else self._default()
        if user is None:
            if login_hint:
                return fail(
                    "invalid_request",
                    50034,
                    f"The user account {login_hint} does not exist in the '{self.tenant_id}' "
                    "directory. To sign into this application, the account must be added to the "
                    "directory.",
                )
            return fail("login_required", 50058, "No user is configured to sign in.")
        code = "1.A" + secrets.token_urlsafe(64)
        with self._lock:
            self._codes[code] = AuthCode(
                client_id=client.client_id,
                user=user,
                scopes=scopes,
                redirect_uri=redirect_uri,
                redirect_uri_sent=redirect_uri_sent,
                nonce=p.get("nonce"),
                code_challenge=challenge,
                code_challenge_method=method if challenge is not None else None,
                expires_at=now + self.code_lifetime,
            )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        params["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_OID, user.object_id))
        return self._redirect(redirect_uri, response_mode, params)

    def _redirect(self, redirect_uri: str, response_mode: str, params: dict[str, str]) -> Response:
        no_store = [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")]
        if response_mode == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}" />'
                for k, v in params.items()
            )
            page = (
                "<html><head><title>Working...</title></head><body>"
                f'<form method="POST" name="hiddenform" action="{html.escape(redirect_uri)}">'
                f"{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p>"
                '<input type="submit" value="Submit" /></noscript></form>'
                "<script>document.forms[0].submit();</script></body></html>"
            )
            return Response(200, page.encode("utf-8"), [("Content-Type", HTML_TYPE), *no_store])
        encoded = urlencode(params)
        if response_mode == "fragment":
            location = f"{redirect_uri.split('#', 1)[0]}#{encoded}"
        else:
            sep = "&" if "?" in redirect_uri else "?"
            location = f"{redirect_uri}{sep}{encoded}"
        return Response(302, b"", [("Location", location), *no_store])

    def _error_page(self, code: int, description: str, correlation_id: str, now: float) -> Response:
        text = html.escape(self._describe(code, description, correlation_id, now))
        body = (
            "<html><head><title>Sign in to your account</title></head><body>"
            "<h1>Sorry, but we're having trouble signing you in.</h1>"
            f"<pre>{text}</pre></body></html>"
        )
        return Response(400, body.encode("utf-8"), [("Content-Type", HTML_TYPE)])
