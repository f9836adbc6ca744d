"""``dynamics-emulator``: run the local Dataverse Web API + Entra ID service."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from .server import Emulator, EmulatorOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dynamics-emulator",
        description=(
            "A local Microsoft Dataverse (Dynamics 365) Web API and Entra ID token service over "
            "HTTPS, with seeded Customer Service data. Clients trust it through the CA bundle it "
            "writes (REQUESTS_CA_BUNDLE); TLS verification stays on."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="port (default 8443; 0 picks a free one)")
    p.add_argument(
        "--workdir",
        default=".emulator",
        help="where the CA bundle, the connection file and the database go (default .emulator)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the generated data (default 42)")
    p.add_argument(
        "--rows",
        type=int,
        help="number of rows of --table to generate (e.g. 1000000 for benchmarks)",
    )
    p.add_argument("--table", default="account", help="the table --rows applies to")
    p.add_argument(
        "--csdl",
        help="serve this CSDL file (such as a real org's $metadata) instead of the built-in model",
    )
    p.add_argument("--client-id", help="the confidential client's id (default: a fixed demo id)")
    p.add_argument(
        "--client-secret-env",
        metavar="VAR",
        help="read the client secret from this environment variable (default: generate one)",
    )
    p.add_argument(
        "--max-requests",
        type=int,
        help="service protection: requests allowed per caller per window (default unlimited)",
    )
    p.add_argument(
        "--window", type=float, default=300.0, help="service protection window in seconds"
    )
    p.add_argument(
        "--max-concurrent", type=int, help="service protection: concurrent requests per caller"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir = Path(args.workdir)
    secret = None
    if args.client_secret_env:
        secret = os.environ.get(args.client_secret_env)
        if not secret:
            print(
                f"dynamics-emulator: the environment variable {args.client_secret_env} is empty; "
                "set it to the client secret to use.",
                file=sys.stderr,
            )
            return 2
    rows = {args.table: args.rows} if args.rows is not None else {}
    opts = EmulatorOptions(
        host=args.host,
        port=args.port,
        workdir=workdir,
        store_path=workdir / "org.sqlite",
        seed=args.seed,
        rows=rows,
        csdl_path=args.csdl,
        client_secret=secret,
    )
    if args.client_id:
        opts.client_id = args.client_id
    if args.csdl and not Path(args.csdl).is_file():
        print(f"dynamics-emulator: no CSDL file at {args.csdl}.", file=sys.stderr)
        return 2
    store = workdir / "org.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    emulator = Emulator(opts)
    started = time.perf_counter()
    try:
        emulator.start()
    except OSError as exc:
        print(
            f"dynamics-emulator: cannot listen on {args.host}:{args.port}: {exc.strerror}.",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        if not args.csdl:
            raise
        # A document with a DTD, or not XML: one sentence, no traceback.
        print(f"dynamics-emulator: cannot serve {args.csdl}: {exc}.", file=sys.stderr)
        return 2
    if args.max_requests or args.max_concurrent:
        emulator.protection.configure(
            max_requests=args.max_requests,
            window_seconds=args.window,
            max_concurrent=args.max_concurrent,
        )
    assert emulator.identity is not None
    info = {
        "environment_url": emulator.url,
        "authority_host": emulator.authority_host,
        "tenant_id": emulator.tenant_id,
        "client_id": emulator.client_id,
        "public_client_id": emulator.public_client_id,
        "ca_bundle": str(Path(emulator.ca_bundle).resolve()),
        "identity_endpoint": emulator.identity.managed_identity_endpoint,
        "pid": os.getpid(),
        "rows": emulator.counts,
    }
    conn = workdir / "emulator.json"
    conn.write_text(json.dumps(info, indent=2))
    secret_note = "(from $" + args.client_secret_env + ")" if args.client_secret_env else None
    if secret_note is None:
        # A generated secret is the emulator's own throwaway credential; keep it out of the
        # connection file and hand it over in a private file instead.
        sfile = workdir / "client_secret"
        sfile.write_text(emulator.client_secret)
        sfile.chmod(0o600)
        secret_note = f"(generated; in {sfile})"
    # The managed identity endpoint's secret (IDENTITY_HEADER), handed over like the client secret.
    hfile = workdir / "identity_header"
    hfile.write_text(emulator.identity.managed_identity_header)
    hfile.chmod(0o600)
    print(f"dynamics-emulator ready in {time.perf_counter() - started:.1f}s", flush=True)
    print(f"  environment_url  {emulator.url}")
    print(f"  authority_host   {emulator.authority_host}")
    print(f"  tenant_id        {emulator.tenant_id}")
    print(f"  client_id        {emulator.client_id}")
    print(f"  client_secret    {secret_note}")
    print(
        f"  CA bundle        {info['ca_bundle']}  (export REQUESTS_CA_BUNDLE={info['ca_bundle']})"
    )
    print(
        f"  managed identity IDENTITY_ENDPOINT={emulator.identity.managed_identity_endpoint}  "
        f"(IDENTITY_HEADER in {hfile})"
    )
    print(f"  rows             {sum(emulator.counts.values()):,} in {len(emulator.counts)} tables")
    print(f"  connection file  {conn}", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
