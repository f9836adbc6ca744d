"""The secret canary: every CLI path, with distinctive secrets and DEBUG logging, and not one of the
secrets (nor any access or refresh token the emulator issued) in stdout, stderr, the dead-letter file
or the state.

The delegated flow is exercised with a refresh token obtained from the emulator (as
tests/integration/test_auth.py does) and through `tap-dynamics login --device-code`; the secretless
flows with a managed identity (whose endpoint secret, IDENTITY_HEADER, is a secret too) and with
federated tokens (good, expired and not a JWT) in a token file.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from dynamics_emulator.identity import ClientApp, ManagedIdentity
from dynamics_emulator.server import Emulator
from tests.integration.test_auth import first_refresh_token
from tests.oidc_issuer import ExternalIssuer
from tests.tapharness import discover, run_tap, select
from tests.targetharness import messages_text, record_message, run_target

DEBUG = {"LOGLEVEL": "DEBUG", "TAP_DYNAMICS_LOGLEVEL": "DEBUG", "TARGET_DYNAMICS_LOGLEVEL": "DEBUG"}
FED_CLIENT_ID = "3f9c7d5b-1e4a-4b6c-8d0f-0a2b4c6d8e0f"
ISSUER = ExternalIssuer("https://oidc.prod-aks.azure.com/canary/cluster/")
USER_MI = ManagedIdentity(
    "4a0d8e6c-2f5b-4c7d-9e1a-1b3c5d7e9f1a", "5b1e9f7d-3a6c-4d8e-8f2b-2c4d6e8f0a2b"
)
NO_APP = {"client_id": None, "client_secret": None, "tenant_id": None}


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

    fed_token = ISSUER.token()
    expired_fed_token = ISSUER.token(lifetime=-600)
    workload_app = ClientApp(FED_CLIENT_ID, federated_credentials=(ISSUER.credential(),))
    with Emulator(
        client_secret=secret,
        counts={"account": 30, "systemuser": 3, "transactioncurrency": 4},
        extra_clients=(workload_app,),
    ) as emu:
        assert emu.identity is not None
        emu.identity.register_managed_identity(USER_MI)
        mi_env = emu.identity.managed_identity_environ()
        validate = emu.identity.validate_access_token

        def spy(token: str, resource: str | None = None) -> Any:
            tokens.add(token)
            return validate(token, resource=resource)

        emu.identity.validate_access_token = spy  # type: ignore[method-assign]

        def tap(name: str, env: dict[str, str] | None = None, **kw: Any) -> None:
            run = run_tap(emu, tmp_path / name, env={**DEBUG, **(env or {})}, **kw)
            codes[name] = run.returncode
            outputs.append((f"{name} stdout", run.stdout))
            outputs.append((f"{name} stderr", run.stderr))

        def target(name: str, text: str, env: dict[str, str] | None = None, **kw: Any) -> None:
            run = run_target(emu, tmp_path / name, text, env={**DEBUG, **(env or {})}, **kw)
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

        mi = {**NO_APP, "managed_identity": True}
        tap("managed-identity", catalog=catalog, config=mi, env=mi_env)
        user_mi = {**mi, "managed_identity_client_id": USER_MI.client_id}
        tap("managed-identity-user", catalog=catalog, config=user_mi, env=mi_env)
        unassigned = {**mi, "managed_identity_client_id": str(uuid.uuid4())}
        tap("managed-identity-unassigned", catalog=catalog, config=unassigned, env=mi_env)
        wrong_header = {**mi_env, "IDENTITY_HEADER": "CANARY-WRONG-HEADER-" + uuid.uuid4().hex}
        tap("managed-identity-wrong-header", catalog=catalog, config=mi, env=wrong_header)
        token_files = {}
        for name, value in (
            ("federated", fed_token),
            ("federated-expired", expired_fed_token),
            ("federated-not-a-jwt", fake_rt),
        ):
            token_files[name] = tmp_path / f"{name}.token"
            token_files[name].write_text(value)
            workload = {"client_id": FED_CLIENT_ID, "client_secret": None}
            tap(
                name,
                catalog=catalog,
                config={**workload, "federated_token_file": str(token_files[name])},
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
        target(
            "target-federated",
            text,
            config={
                "client_id": FED_CLIENT_ID,
                "client_secret": None,
                "max_failed_records": 10,
            },
            env={"AZURE_FEDERATED_TOKEN_FILE": str(token_files["federated"])},
        )
        target(
            "target-managed-identity",
            text,
            config={**mi, "max_failed_records": 10},
            env=mi_env,
        )
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
        "federated token": fed_token,
        "expired federated token": expired_fed_token,
        "federated token signature": fed_token.rsplit(".", 1)[-1],
        "managed identity header": mi_env["IDENTITY_HEADER"],
        "wrong managed identity header": wrong_header["IDENTITY_HEADER"],
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
    ok |= {"managed-identity", "managed-identity-user", "federated"}
    ok |= {"target-federated", "target-managed-identity"}
    assert {n for n, c in codes.items() if c == 0} == ok, codes
    assert any("DEBUG" in text for what, text in outputs if what.endswith("stderr"))
