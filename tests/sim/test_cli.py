"""`python -m railyard.sim`: seed specs, the last line, the exit status, the replay command."""

from __future__ import annotations

import argparse

import pytest

from railyard.sim import broken, run_seed
from railyard.sim.__main__ import main, parse_seeds


def test_parse_seeds() -> None:
    assert parse_seeds("17") == [17]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("1,5,10-12") == [1, 5, 10, 11, 12]
    for bad in ("", "x", "5-2", "1-"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)


def test_passing_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "3", "--seeds", "0-2", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "3 seeds, 0 violations"


BREAK = "vote-without-log-check"


def failing_seed() -> int:
    """The first seed that catches BREAK (the breakage tests show there is one)."""
    with broken(BREAK):
        return next(seed for seed in range(100) if run_seed(seed, 3).violation)


def test_failing_run_names_seed_property_and_replay(capsys: pytest.CaptureFixture[str]) -> None:
    seed = failing_seed()
    code = main(["--nodes", "3", "--seeds", str(seed), "--break", BREAK])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[-1] == "1 seeds, 1 violations"
    assert out[0].startswith(f"seed {seed}: ")
    assert "violated" in out[0]
    assert out[1].strip() == (
        f"replay: python -m railyard.sim --nodes 3 --seeds {seed} --break {BREAK} -v"
    )


def test_verbose_prints_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--nodes", "3", "--seeds", "2", "--steps", "30", "-v"]) == 0
    out = capsys.readouterr().out
    assert "leads term" in out
    assert "-> append" in out


def test_jobs_give_the_same_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Worker processes break the same rule and report in seed order."""
    seed = failing_seed()
    argv = ["--nodes", "3", "--seeds", f"{max(seed - 1, 0)}-{seed + 1}", "--break", BREAK]
    main(argv)
    serial = capsys.readouterr().out
    main([*argv, "--jobs", "2"])
    assert capsys.readouterr().out == serial
    assert "violated" in serial
