"""engine.faults: armed only by SWITCHBOARD_FAULTS, strict about what it is given, kills where told."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from engine.core import faults

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PASS_TWICE = ("from engine.core import faults\n"
              "faults.point('kill_after_commit_before_ack'); print('passed 1', flush=True)\n"
              "faults.point('kill_after_commit_before_ack'); print('passed 2', flush=True)\n")


def run(code: str, spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if spec is not None:
        env[faults.ENV] = spec
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_parse_reads_probabilities_and_nth_pass():
    rules = faults.parse(" kill_after_commit_before_ack:0.25 , kill_after_downstream_ack_before_sent:@3,")
    assert rules == {"kill_after_commit_before_ack": ("p", 0.25),
                     "kill_after_downstream_ack_before_sent": ("at", 3)}
    assert faults.parse("") == {}


@pytest.mark.parametrize("spec, words", [
    ("kill_after_comit_before_ack:0.1", "unknown fault point 'kill_after_comit_before_ack'"),
    ("kill_after_commit_before_ack", "needs a value"),
    ("kill_after_commit_before_ack:", "needs a value"),
    ("kill_after_commit_before_ack:0", "bad value '0'"),
    ("kill_after_commit_before_ack:1.5", "bad value '1.5'"),
    ("kill_after_commit_before_ack:@0", "bad value '@0'"),
    ("kill_after_commit_before_ack:often", "bad value 'often'"),
])
def test_parse_refuses_what_would_silently_test_nothing(spec, words):
    with pytest.raises(ValueError, match=words):
        faults.parse(spec)


def test_off_unless_armed():
    assert faults.ARMED is False   # the suite runs without SWITCHBOARD_FAULTS
    faults.point("kill_after_commit_before_ack")   # would kill pytest if it were armed
    try:
        faults.arm("kill_after_downstream_ack_before_sent:@5")
        assert faults.ARMED is True
        faults.point("kill_after_commit_before_ack")   # armed, but not this point
        faults.point("kill_after_downstream_ack_before_sent")   # pass 1 of 5
    finally:
        faults.arm(None)
    assert faults.ARMED is False


def test_nth_pass_kills_with_sigkill_and_says_where():
    result = run(PASS_TWICE, "kill_after_commit_before_ack:@2")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "passed 1\n"
    assert "FAULT INJECTION ARMED" in result.stderr
    assert "SIGKILL at kill_after_commit_before_ack (pass 2)" in result.stderr


def test_probability_one_kills_at_the_first_pass():
    result = run(PASS_TWICE, "kill_after_commit_before_ack:1")
    assert result.returncode == -signal.SIGKILL and result.stdout == ""


def test_unset_or_empty_environment_is_off():
    for spec in (None, ""):
        result = run(PASS_TWICE, spec)
        assert result.returncode == 0 and result.stdout == "passed 1\npassed 2\n"
        assert "FAULT" not in result.stderr


def test_bad_environment_stops_at_import():
    result = run("import engine.core.faults", "kill_somewhere:0.5")
    assert result.returncode != 0
    assert "unknown fault point 'kill_somewhere'" in result.stderr
