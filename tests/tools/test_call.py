"""``qproxy call``: exit codes and one-line messages, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest


def qproxy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qproxy", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_call_exit_codes_and_messages(refagent_socket: Path, workdir: Path) -> None:
    url = f"unix:{refagent_socket}"

    ok = qproxy("call", url, "guest-ping")
    assert (ok.returncode, json.loads(ok.stdout), ok.stderr) == (0, {}, "")
    args = {"text": "hé", "n": [1, 2.5, None]}
    echo = qproxy("call", url, "qproxy-echo", json.dumps(args), "--compact")
    assert echo.returncode == 0 and json.loads(echo.stdout) == args
    assert len(echo.stdout.strip().splitlines()) == 1

    bad = qproxy("call", url, "guest-no-such-command")
    assert bad.returncode == 1 and bad.stdout == ""
    assert _one_clean_line(bad.stderr) == (
        "CommandNotFound: The command guest-no-such-command has not been found")
    fail = qproxy("call", url, "qproxy-fail", '{"class": "GenericError", "desc": "nope"}')
    assert fail.returncode == 1 and _one_clean_line(fail.stderr).startswith("GenericError: ")

    missing = qproxy("call", f"unix:{workdir / 'nothing.sock'}", "guest-ping", "--timeout", "3")
    assert missing.returncode == 2
    assert "no such socket" in _one_clean_line(missing.stderr)

    for bad_url in ("nothing-like-a-url", "foo:bar", "tcp:localhost:notaport"):
        result = qproxy("call", bad_url, "guest-ping")
        assert result.returncode == 2, bad_url
        assert _one_clean_line(result.stderr).startswith("qproxy call: "), bad_url

    for bad_json in ("{not json", "[1, 2]", '"text"'):
        result = qproxy("call", url, "qproxy-echo", bad_json)
        assert result.returncode == 2, bad_json
        assert "ARGUMENTS_JSON" in _one_clean_line(result.stderr), bad_json

    started = time.monotonic()
    slow = qproxy("call", url, "qproxy-sleep", '{"seconds": 5}', "--timeout", "0.5")
    assert time.monotonic() - started < 4
    assert slow.returncode == 2
    assert "no reply to 'qproxy-sleep' within 0.5 s" in _one_clean_line(slow.stderr)


@pytest.mark.timeout(30)
def test_debug_shows_details_and_help_has_examples(workdir: Path) -> None:
    debug = qproxy("--debug", "call", f"unix:{workdir / 'nothing.sock'}", "guest-ping",
                   "--timeout", "2")
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    for command in ("call", "serve", "demo", "agent"):
        helped = qproxy(command, "--help")
        assert helped.returncode == 0, command
        assert "examples:" in helped.stdout, command
