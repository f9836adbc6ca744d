"""``dynamics-emulator``: run the local Dataverse Web API + Entra ID service."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType

from .cost import CostModel
from .protection import NO_LIMITS, ServiceLimits
from .server import COUNTERS_PATH, Emulator, EmulatorOptions


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
    real = p.add_argument_group(
        "a real organisation's costs and limits",
        "Off by default. With them the emulator answers as slowly as a real organisation would "
        "(scaled by --time-scale) and throttles as its service protection does.",
    )
    real.add_argument(
        "--cost-model",
        action="store_true",
        help="charge each request a real web server's time (a 5,000-row page of 150 columns: "
        "about 2 s) and wait it before answering",
    )
    real.add_argument(
        "--time-scale",
        type=float,
        help="real seconds per modelled second (e.g. 0.01; implies --cost-model; default 1)",
    )
    real.add_argument(
        "--service-protection",
        action="store_true",
        help="the real limits per caller and web server: 6,000 requests and 1,200 s of server "
        "time per 300 s window, 52 concurrent requests",
    )
    real.add_argument(
        "--max-requests", type=int, help="requests per caller per window (default unlimited)"
    )
    real.add_argument(
        "--max-execution-seconds",
        type=float,
        help="server seconds allowed per caller per window (default unlimited)",
    )
    real.add_argument("--max-concurrent", type=int, help="concurrent requests per caller")
    real.add_argument("--window", type=float, help="the sliding window in seconds (default 300)")
    real.add_argument(
        "--web-servers", type=int, default=1, help="simulated web servers (default 1)"
    )
    real.add_argument(
        "--dop-hint", type=int, default=4, help="the x-ms-dop-hint response header (default 4)"
    )
    real.add_argument(
        "--prerender",
        action="store_true",
        help="keep rendered pages and answer repeated identical GETs with the same bytes",
    )
    real.add_argument(
        "--prerender-max-mb",
        type=int,
        default=1024,
        help="memory for kept pages in MB (default 1024)",
    )
    return p


def _realism(args: argparse.Namespace, opts: EmulatorOptions) -> str | None:
    """Put the cost model, limits, servers and cache in ``opts``; a problem as one sentence."""
    if args.time_scale is not None and not args.time_scale > 0:
        return "--time-scale must be a positive number, such as 0.01."
    if args.web_servers < 1:
        return "--web-servers must be at least 1."
    if args.cost_model or args.time_scale is not None:
        opts.cost_model = CostModel(time_scale=args.time_scale or 1.0)
    limits = ServiceLimits() if args.service_protection else NO_LIMITS
    given = {
        "max_requests": args.max_requests,
        "max_execution_seconds": args.max_execution_seconds,
        "max_concurrent": args.max_concurrent,
        "window_seconds": args.window,
    }
    limits = replace(limits, **{k: v for k, v in given.items() if v is not None})
    opts.service_protection = limits if limits.active else None
    opts.web_servers = args.web_servers
    opts.dop_hint = args.dop_hint
    opts.prerender = args.prerender
    opts.prerender_max_bytes = args.prerender_max_mb * 1024 * 1024
    return None


def _realism_lines(opts: EmulatorOptions) -> list[str]:
    lines = []
    if opts.cost_model is not None:
        lines.append(f"cost model       on, time scale {opts.cost_model.time_scale:g}")
    lim = opts.service_protection
    if lim is not None:
        shown = [
            f"{lim.max_requests} requests" if lim.max_requests is not None else None,
            f"{lim.max_execution_seconds:g} s of server time"
            if lim.max_execution_seconds is not None
            else None,
        ]
        per = " and ".join(x for x in shown if x) or "no budget"
        conc = f", {lim.max_concurrent} concurrent" if lim.max_concurrent is not None else ""
        lines.append(f"protection       {per} per {lim.window_seconds:g} s{conc}")
    if opts.web_servers > 1:
        lines.append(f"web servers      {opts.web_servers}")
    if opts.prerender:
        lines.append("prerender        on")
    return lines


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
    problem = _realism(args, opts)
    if problem:
        print(f"dynamics-emulator: {problem}", file=sys.stderr)
        return 2
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
        # A real organisation's costs and limits, and where to read what the servers did.
        "time_scale": opts.cost_model.time_scale if opts.cost_model is not None else None,
        "web_servers": opts.web_servers,
        "counters_url": f"{emulator.url}{COUNTERS_PATH}",
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
    for line in _realism_lines(opts):
        print(f"  {line}")
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
