"""A closed stdout (`pyantrea compile ... | head -1`) ends the three CLIs quietly: status 0 or 141,
no traceback, no "Exception ignored" at exit (errors.run_cli)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyantrea.errors import EXIT_SIGPIPE, InvalidArgument, run_cli

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "examples" / "seed")

COMMANDS = {
    "pyantrea compile": ["-m", "pyantrea.cli", "compile", SEED, "--node", "worker1"],
    "antctl get ovsflows": ["-m", "pyantrea.antctl.main", "--cluster", SEED, "get", "ovsflows", "--node", "worker1"],
    "antctl get ovsflows -o json": ["-m", "pyantrea.antctl.main", "--cluster", SEED, "get", "ovsflows", "--node",
                                    "worker1", "-o", "json"],
}  # each prints more than a pipe page (4096 bytes)
SMALL = {  # output shorter than a page; argparse prints --help itself (SystemExit), the pipe closes all the same
    "antctl get networkpolicy -o yaml": ["-m", "pyantrea.antctl.main", "--cluster", SEED, "get", "networkpolicy",
                                         "--node", "worker1", "-o", "yaml"],
    "pyantrea --help": ["-m", "pyantrea.cli", "--help"],
    "antctl --help": ["-m", "pyantrea.antctl.main", "--help"],
    "pyantrea lab --help": ["-m", "pyantrea.lab", "--help"],
}


def _env(tmp_path: Path, unbuffered: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return {**env, "PYANTREA_LAB_DIR": str(tmp_path / "no-lab")}


def _expected(unbuffered: bool) -> tuple[int, ...]:
    # Buffered (the default), the closed pipe always shows, at the latest in run_cli's flush: 141.
    # With PYTHONUNBUFFERED=1 a write the reader cut short is a short write, not an error, and
    # argparse swallows its own write errors: then the command may end with 0.
    return (0, EXIT_SIGPIPE) if unbuffered else (EXIT_SIGPIPE,)


BUFFERING = pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])


def _assert_quiet(stderr: bytes) -> None:
    text = stderr.decode(errors="replace")
    for bad in ("BrokenPipeError", "Exception ignored", "Traceback", "Broken pipe"):
        assert bad not in text, text


@BUFFERING
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_reader_that_closes_after_one_read(tmp_path: Path, name: str, unbuffered: bool) -> None:
    """`CMD | head -c 100`: the pipe is shrunk to one page so that the writer is still writing."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    p = subprocess.Popen([sys.executable, *COMMANDS[name]], stdout=w, stderr=subprocess.PIPE, cwd=ROOT,
                         env=_env(tmp_path, unbuffered))
    os.close(w)
    first = os.read(r, 100)
    os.close(r)
    _, err = p.communicate(timeout=60)
    assert first, "no output at all"
    assert p.returncode in _expected(unbuffered)
    _assert_quiet(err)


@BUFFERING
@pytest.mark.parametrize("name", sorted(COMMANDS) + sorted(SMALL))
def test_a_reader_gone_before_the_first_write(tmp_path: Path, name: str, unbuffered: bool) -> None:
    r, w = os.pipe()
    os.close(r)
    p = subprocess.Popen([sys.executable, *{**COMMANDS, **SMALL}[name]], stdout=w, stderr=subprocess.PIPE, cwd=ROOT,
                         env=_env(tmp_path, unbuffered))
    os.close(w)
    _, err = p.communicate(timeout=60)
    assert p.returncode in _expected(unbuffered)
    _assert_quiet(err)


@BUFFERING
def test_head_in_a_shell(tmp_path: Path, unbuffered: bool) -> None:
    """The command lines of the report, as a user types them."""
    for cmd in ("pyantrea compile examples/seed --node worker1 | head -1",
                "antctl --cluster examples/seed get ovsflows --node worker1 | head -1",
                "pyantrea compile examples/seed | head -1"):
        cmd = cmd.replace("pyantrea ", f"{sys.executable} -m pyantrea.cli ").replace(
            "antctl ", f"{sys.executable} -m pyantrea.antctl.main ")
        res = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, cwd=ROOT,
                             env=_env(tmp_path, unbuffered), timeout=60)
        assert res.returncode in (0, EXIT_SIGPIPE), res
        assert res.stdout.count(b"\n") == 1
        _assert_quiet(res.stderr)


def test_run_cli_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(lambda: 3) == 3

    def bad() -> int:
        raise InvalidArgument("no such thing")

    assert run_cli(bad) == 1
    assert capsys.readouterr().err == "Error: no such thing\n"


def test_a_broken_pipe_that_is_not_stdouts_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A daemon's socket closing under us is a real error (exit 1, one line), not a quiet 141."""
    r, w = os.pipe()
    with os.fdopen(w, "w") as out, os.fdopen(r, "r"):
        monkeypatch.setattr(sys, "stdout", out)

        def sock_closed() -> int:
            raise BrokenPipeError(32, "Broken pipe")

        assert run_cli(sock_closed) == 1
        monkeypatch.undo()
    assert capsys.readouterr().err == "Error: [Errno 32] Broken pipe\n"
