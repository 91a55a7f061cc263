"""The command line in-process (``engine.cli.main.main``): usage errors, check, a dry run, and
the exit codes of DESIGN §3.6, without a subprocess per case."""

from __future__ import annotations

import pytest

from engine.cli.main import main
from support.daemon import ROOT, SAMPLES


def test_check_on_the_shipped_config_is_ok(capsys):
    assert main(["-c", str(ROOT / "config.toml"), "check"]) == 0
    assert ": ok (" in capsys.readouterr().out


def test_an_unknown_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_test_verb_on_an_unknown_channel_is_one_sentence_and_exit_1(capsys):
    sample = next(SAMPLES.glob("ADT*.hl7"))
    assert main(["-c", str(ROOT / "config.toml"), "test", "no-such-channel", str(sample)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("switchboard test: no channel named 'no-such-channel'") and "Traceback" not in err


def test_a_missing_config_file_is_exit_1_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert main(["-c", str(missing), "check"]) == 1
    assert str(missing) in capsys.readouterr().err
