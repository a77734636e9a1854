"""``bnn-serve``'s command line: every setting a flag, clear one-line errors, argparse's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import service
from service.__main__ import parse_settings
from service.settings import Settings


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_settings(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_help_lists_every_setting_with_its_variable(monkeypatch, capsys):
    monkeypatch.setenv("BNN_LOG_LEVEL", "nonsense")  # --help still works with a bad environment
    code, out, _ = _exit(["--help"], capsys)
    assert code == 0
    help_text = " ".join(out.split())
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text, name
        assert f"BNN_{name.upper()}" in help_text, name
    assert "--version" in help_text


def test_version(capsys):
    code, out, _ = _exit(["--version"], capsys)
    assert code == 0 and out.strip() == f"bnn-serve {service.__version__}"


def test_flags_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("BNN_PORT", "9000")
    monkeypatch.setenv("BNN_MAX_BATCH_SIZE", "8")
    settings = parse_settings(["--port", "9100", "--model-store", "/srv/models", "--kernel-isa", "PORTABLE"])
    assert settings.port == 9100 and settings.max_batch_size == 8
    assert str(settings.model_store) == "/srv/models" and settings.kernel_isa == "portable"


def test_named_choices_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("BNN_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("BNN_OMP_WAIT_POLICY", "Active")
    settings = parse_settings([])
    assert settings.log_level == "debug" and settings.omp_wait_policy == "active"


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--port", "-4"], {}, "--port / BNN_PORT"),
        ([], {"BNN_LOG_LEVEL": "loud"}, "--log-level / BNN_LOG_LEVEL"),
        (["--max-batch-size", "many"], {}, "--max-batch-size / BNN_MAX_BATCH_SIZE"),
        ([], {"BNN_KERNEL_THREADS": "0"}, "--kernel-threads / BNN_KERNEL_THREADS"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(monkeypatch, capsys, argv, env, named):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = _exit(argv, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnn-serve: error:") and named in lines[0], err


def test_an_unknown_flag_exits_2(capsys):
    code, _, err = _exit(["--no-such-flag"], capsys)
    assert code == 2 and "--no-such-flag" in err


def test_the_installed_command(tmp_path):
    """The console script, from a directory outside the repository: one line, exit 2, no traceback."""
    script = Path(sys.executable).parent / "bnn-serve"  # what pip installed next to this interpreter
    bnn_serve = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    bad = subprocess.run([*bnn_serve, "--port", "x"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    ok = subprocess.run([*bnn_serve, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip() == f"bnn-serve {service.__version__}"


def test_a_missing_model_store_stops_start_up_in_one_line(tmp_path):
    """From a directory without ./model_store, bnn-serve says so and exits before loading anything."""
    out = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "model store model_store is not a directory" in lines[0] and "--model-store" in lines[0]
