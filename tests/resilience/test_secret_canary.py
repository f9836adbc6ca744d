"""The secret canary: every CLI path, with distinctive secrets and DEBUG logging, and not one of the
secrets (nor any access or refresh token the emulator issued) in stdout, stderr, the dead-letter file
or the state.

The delegated flow is exercised with a refresh token obtained from the emulator (as
tests/integration/test_auth.py does) and through `tap-dynamics login --device-code`.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from dynamics_emulator.server import Emulator
from tests.integration.test_auth import first_refresh_token
from tests.tapharness import discover, run_tap, select
from tests.targetharness import messages_text, record_message, run_target

DEBUG = {"LOGLEVEL": "DEBUG", "TAP_DYNAMICS_LOGLEVEL": "DEBUG", "TARGET_DYNAMICS_LOGLEVEL": "DEBUG"}


def _login_paths(
    emu: Emulator,
    tmp: Path,
    secret: str,
    outputs: list[tuple[str, str]],
    codes: dict[str, int],
) -> list[str]:
    """`tap-dynamics login --device-code` signing a user in (public client), and the same with
    the confidential client's secret in the config (refused: device code needs a public client).
    Returns the refresh tokens the sign-in stored."""
    import re
    import threading
    import time

    from tests.integration.test_login import _cli, _read_lines

    cache = tmp / "login-cache.json"
    for name, cfg in (
        ("login-public", {"client_id": emu.public_client_id, "token_cache_path": str(cache)}),
        ("login-confidential", {"client_secret": secret}),
    ):
        config = {**emu.tap_config(), **cfg}
        if name == "login-public":
            config.pop("client_secret")
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(config))
        proc = _cli(["login", "--device-code", "--config", str(path)], emu, DEBUG)
        err: list[str] = []
        out: list[str] = []
        pumps = [
            threading.Thread(target=_read_lines(proc.stderr, err), daemon=True),
            threading.Thread(target=_read_lines(proc.stdout, out), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            match = re.search(r"enter the code (\w+)", "".join(err))
            if match:
                assert emu.identity is not None
                emu.identity.approve_device_code(match.group(1))
                break
            time.sleep(0.05)
        codes[name] = proc.wait(60)
        for pump in pumps:
            pump.join(10)
        outputs.append((f"{name} stdout", "".join(out)))
        outputs.append((f"{name} stderr", "".join(err)))
    assert codes["login-public"] == 0
    assert codes["login-confidential"] != 0
    stored = json.loads(cache.read_text()).get("RefreshToken", {})
    return [entry["secret"] for entry in stored.values()]


def test_no_secret_or_token_appears_anywhere(tmp_path: Path) -> None:
    secret = "CANARY-SECRET-" + uuid.uuid4().hex
    wrong_secret = "CANARY-SECRET-WRONG-" + uuid.uuid4().hex
    fake_rt = "CANARY-RT-" + uuid.uuid4().hex
    tokens: set[str] = set()
    outputs: list[tuple[str, str]] = []  # (what, text)
    codes: dict[str, int] = {}

    with Emulator(
        client_secret=secret, counts={"account": 30, "systemuser": 3, "transactioncurrency": 4}
    ) as emu:
        assert emu.identity is not None
        validate = emu.identity.validate_access_token

        def spy(token: str, resource: str | None = None) -> Any:
            tokens.add(token)
            return validate(token, resource=resource)

        emu.identity.validate_access_token = spy  # type: ignore[method-assign]

        def tap(name: str, **kw: Any) -> None:
            run = run_tap(emu, tmp_path / name, env=DEBUG, **kw)
            codes[name] = run.returncode
            outputs.append((f"{name} stdout", run.stdout))
            outputs.append((f"{name} stderr", run.stderr))

        def target(name: str, text: str, **kw: Any) -> None:
            run = run_target(emu, tmp_path / name, text, env=DEBUG, **kw)
            codes[name] = run.returncode
            outputs.append((f"{name} stdout", run.stdout))
            outputs.append((f"{name} stderr", run.stderr))
            dead = tmp_path / name / "dead-letter.jsonl"
            if dead.exists():
                outputs.append((f"{name} dead letters", dead.read_text()))

        tap("about", args=["--about"])
        tap("about-json", args=["--about", "--format", "json"])
        tap("discover", args=["--discover"])
        catalog = select(discover(emu, tmp_path / "cat"), ["account"])
        tap("sync", catalog=catalog, config={"page_size": 10})
        state = json.loads([line for line in outputs[-2][1].splitlines() if '"STATE"' in line][-1])[
            "value"
        ]
        tap("sync-with-state", catalog=catalog, state=state)
        tap("wrong-secret", catalog=catalog, config={"client_secret": wrong_secret})
        tap("fake-refresh-token", catalog=catalog, config={"refresh_token": fake_rt})
        real_rt = first_refresh_token(emu)
        tap(
            "delegated",
            catalog=catalog,
            config={
                "client_id": emu.public_client_id,
                "client_secret": None,
                "refresh_token": real_rt,
                "token_cache_path": str(tmp_path / "tokens.json"),
            },
        )

        good: list[dict[str, Any]] = [
            {
                "accountid": str(uuid.UUID(int=i + (9 << 120))),
                "name": f"Canary {i}",
                "description": secret[:8] + " is not the secret",
            }
            for i in range(20)
        ]
        bad: list[dict[str, Any]] = [
            {"accountid": "not-a-guid", "name": "bad key"},
            {"accountid": str(uuid.uuid4()), "nosuchcolumn": 1},
            {"accountid": str(uuid.uuid4()), "name": "x" * 500},  # refused by the service
        ]
        schema = {
            "type": "SCHEMA",
            "stream": "account",
            "key_properties": ["accountid"],
            "schema": {"type": "object", "properties": {}},
        }
        text = messages_text(
            [
                schema,
                *(record_message("account", r) for r in good + bad),
                {"type": "STATE", "value": {"canary": "done"}},
            ]
        )
        target("target-about", "", args=["--about"])
        target("target-sync", text, config={"max_failed_records": 10})
        target("target-bad-records", text)  # more failures than allowed: exits non-zero
        target("target-dry-run", text, config={"dry_run": True, "max_failed_records": 10})
        target("target-wrong-secret", text, config={"client_secret": wrong_secret})
        target("target-fake-refresh-token", text, config={"refresh_token": fake_rt})
        emu.service.settings.denied_tables["*"] = {"account"}  # type: ignore[union-attr]
        tap("denied-table", catalog=catalog)
        target("target-denied-table", text)
        emu.service.settings.denied_tables.clear()  # type: ignore[union-attr]
        emu.revoke_all_tokens()
        tap(
            "revoked-refresh-token",
            catalog=catalog,
            config={
                "client_id": emu.public_client_id,
                "client_secret": None,
                "refresh_token": real_rt,
                "token_cache_path": str(tmp_path / "tokens2.json"),
            },
        )

        login_rts = _login_paths(emu, tmp_path, secret, outputs, codes)

    secrets = {
        "client secret": secret,
        "wrong client secret": wrong_secret,
        "fake refresh token": fake_rt,
        "real refresh token": real_rt,
        **{f"login refresh token {i}": rt for i, rt in enumerate(login_rts)},
    }
    assert len(tokens) >= 3, "the spy saw too few access tokens: the runs did not authenticate"
    for i, token in enumerate(sorted(tokens)):
        secrets[f"access token {i}"] = token
        # A token's signature alone is as good as the token: check it too.
        secrets[f"access token {i} signature"] = token.rsplit(".", 1)[-1]
    leaks = [
        f"{name} in {what}"
        for what, text in outputs
        for name, value in secrets.items()
        if value in text
    ]
    assert leaks == []
    # Each path really ran as intended: the successful ones succeeded, the failing ones failed.
    ok = {"about", "about-json", "discover", "sync", "sync-with-state", "delegated"}
    ok |= {"target-about", "target-sync", "target-dry-run", "login-public"}
    assert {n for n, c in codes.items() if c == 0} == ok, codes
    assert any("DEBUG" in text for what, text in outputs if what.endswith("stderr"))
