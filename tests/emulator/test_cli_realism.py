"""The command's switches for a real organisation's costs and limits (off unless asked for)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics_emulator.cli import _realism, build_parser
from dynamics_emulator.harness import EmulatorProcess
from dynamics_emulator.protection import ServiceLimits
from dynamics_emulator.server import EmulatorOptions


def _options(*argv: str) -> tuple[EmulatorOptions, str | None]:
    opts = EmulatorOptions()
    return opts, _realism(build_parser().parse_args(list(argv)), opts)


def test_everything_is_off_by_default() -> None:
    opts, problem = _options()
    assert problem is None
    assert opts.cost_model is None
    assert opts.service_protection is None
    assert (opts.web_servers, opts.dop_hint, opts.prerender) == (1, 4, False)


def test_a_time_scale_turns_the_cost_model_on() -> None:
    opts, _ = _options("--time-scale", "0.01")
    assert opts.cost_model is not None and opts.cost_model.time_scale == 0.01
    opts, _ = _options("--cost-model")
    assert opts.cost_model is not None and opts.cost_model.time_scale == 1.0


def test_service_protection_takes_the_real_limits_and_overrides() -> None:
    opts, _ = _options("--service-protection", "--max-concurrent", "8", "--window", "60")
    assert opts.service_protection == ServiceLimits(max_concurrent=8, window_seconds=60.0)


def test_a_single_limit_switches_on_only_that_one() -> None:
    opts, _ = _options("--max-requests", "3", "--window", "2")
    assert opts.service_protection == ServiceLimits(
        max_requests=3, max_execution_seconds=None, max_concurrent=None, window_seconds=2.0
    )


def test_servers_hint_and_prerender() -> None:
    opts, _ = _options(
        "--web-servers", "3", "--dop-hint", "8", "--prerender", "--prerender-max-mb", "5"
    )
    assert (opts.web_servers, opts.dop_hint, opts.prerender) == (3, 8, True)
    assert opts.prerender_max_bytes == 5 * 1024 * 1024


@pytest.mark.parametrize(
    ("argv", "says"),
    [(("--time-scale", "0"), "--time-scale"), (("--web-servers", "0"), "--web-servers")],
)
def test_nonsense_is_one_sentence(argv: tuple[str, ...], says: str) -> None:
    _, problem = _options(*argv)
    assert problem is not None and problem.startswith(says) and problem.endswith(".")


def test_the_command_runs_a_real_organisation_and_serves_its_counters(tmp_path: Path) -> None:
    args = ("--rows", "20", "--table", "account", "--time-scale", "0.001", "--web-servers", "2")
    # A window of 3,000 modelled seconds is 3 s at this scale: the three requests fall in it
    # at any pace of the machine (300 s, the default, is 0.3 s).
    limits = ("--service-protection", "--max-requests", "2", "--window", "3000")
    with EmulatorProcess(tmp_path, *args, *limits) as emu:
        assert "  cost model       on, time scale 0.001" in emu.banner
        assert emu.info["time_scale"] == 0.001 and emu.info["web_servers"] == 2
        http = emu.session()
        statuses = [http.get(http.url("WhoAmI"), timeout=30).status_code for _ in range(3)]
        counters = http.get(emu.info["counters_url"], timeout=30).json()
    # The session keeps the affinity cookie: one server, whose budget of two runs out.
    assert statuses == [200, 200, 429]
    assert counters["requests"] == 3 and counters["throttled"] == 1
    assert sorted(s["requests"] for s in counters["servers"]) == [0, 3]
    # Two requests ran, each charged the model's fixed part (0.06 s) and nothing more.
    assert counters["server_seconds"] == pytest.approx(2 * 0.06)
