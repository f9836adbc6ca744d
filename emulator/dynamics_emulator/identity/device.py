"""The device code flow: ``POST /{t}/oauth2/v2.0/devicecode`` starts it, ``/devicelogin`` is a
tiny page where a human approves the code (tests call :meth:`approve_device_code`); the token
endpoint redeems it (``grants``)."""

from __future__ import annotations

import secrets
from typing import Any

from dynamics_emulator.wire import Response

from .common import DeviceCode, missing
from .minting import Minting

_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"


class DeviceFlow(Minting):
    def approve_device_code(self, user_code: str, upn: str | None = None) -> None:
        """Sign in ``upn`` (default: the default user) for a pending device code.

        Raises:
            KeyError: unknown user code or user.
        """
        with self._lock:
            device_code = self._device_by_user_code.get(user_code.strip().upper())
            if device_code is None:
                raise KeyError(user_code)
            user = self._find_user(upn) if upn else self._default()
            if user is None:
                raise KeyError(upn or "no default user")
            self._device[device_code].user = user

    # ------------------------------------------------------------------ device code endpoint

    def _devicecode(self, p: dict[str, str]) -> dict[str, Any]:
        client_id = p.get("client_id")
        if not client_id:
            raise missing("client_id")
        client = self._client(client_id)
        scope = p.get("scope")
        if not scope or not scope.split():
            raise missing("scope")
        scopes = tuple(scope.split())
        self._resolve_user_scopes(scopes)  # validates
        now = self._clock()
        with self._lock:
            user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
            while user_code in self._device_by_user_code:
                user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
            device_code = "DAQABIQEAAAD" + secrets.token_urlsafe(96)
            self._device[device_code] = DeviceCode(
                client_id=client.client_id,
                scopes=scopes,
                user_code=user_code,
                expires_at=now + self.device_code_lifetime,
            )
            self._device_by_user_code[user_code] = device_code
        uri = f"{self.base_url}/devicelogin"
        return {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": self.device_code_lifetime,
            "interval": self.device_code_interval,
            "message": (
                f"To sign in, use a web browser to open the page {uri} and enter the code "
                f"{user_code} to authenticate."
            ),
        }

    def _device_login(self, method: str, params: dict[str, str]) -> Response:
        if method == "POST" and params.get("user_code"):
            try:
                self.approve_device_code(params["user_code"], params.get("login_hint") or None)
            except KeyError:
                return self._html(
                    400, "<p>That code didn't work. Check the code and try again.</p>"
                )
            return self._html(200, "<p>You have signed in. You may now close this window.</p>")
        return self._html(
            200,
            '<form method="post"><label>Enter code <input name="user_code"></label>'
            '<button type="submit">Next</button></form>',
        )
