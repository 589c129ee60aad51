"""Shared helpers: every test drives the real dagrun binary in its own tmp_path.

DAGRUN names the binary (default: ../dagrun beside this directory).
DAGRUN_WRAP, if set, is a command prefix (for example valgrind) split on blanks.
"""
import os
import shlex
import sys
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.abspath(os.environ.get("DAGRUN") or os.path.join(HERE, "..", "dagrun"))
WRAP = shlex.split(os.environ.get("DAGRUN_WRAP", ""))
SLOW = 1 if not WRAP else 10   # a wrapper such as valgrind slows dagrun itself


def _machine(path):
    """The ELF machine of a binary, or None."""
    try:
        with open(path, "rb") as f:
            h = f.read(20)
    except OSError:
        return None
    if h[:4] != b"\x7fELF":
        return None
    return int.from_bytes(h[18:20], "little" if h[5] == 1 else "big")


# dagrun built for another machine runs under qemu-user (binfmt_misc)
EMULATED = _machine(BIN) not in (None, _machine(sys.executable))


def argv(*args):
    return WRAP + [BIN] + [str(a) for a in args]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRUN")}
    env.pop("TERM", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def gone(pid):
    """Not running: no such process, or a zombie waiting for its reaper."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class Runner:
    def __init__(self, path):
        self.path = path

    def write(self, text, name="dagrun.ini"):
        p = self.path / name
        p.write_text(text)
        return p

    def run(self, *args, ini=None, timeout=60, env=None, input=None, cwd=None):
        """Run dagrun to completion; returns CompletedProcess (text)."""
        if ini is not None:
            self.write(ini)
        return subprocess.run(argv(*args), cwd=cwd or self.path, env=env or clean_env(),
                              capture_output=True, text=True, timeout=timeout * SLOW,
                              stdin=subprocess.DEVNULL if input is None else None,
                              input=input)

    def popen(self, *args, ini=None, env=None, **kw):
        if ini is not None:
            self.write(ini)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(argv(*args), cwd=self.path, env=env or clean_env(),
                                text=True, **kw)

    def journal(self, state_dir=".dagrun"):
        """Journal records as lists of fields (the time field dropped)."""
        p = self.path / state_dir / "journal"
        return [line.split("\t")[1:] for line in p.read_text().splitlines()]

    def wait_for(self, predicate, timeout=20, what="condition"):
        """Poll predicate until true; bounded."""
        end = time.monotonic() + timeout * SLOW
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.01)
        raise AssertionError("timed out waiting for " + what)


@pytest.fixture
def dr(tmp_path):
    return Runner(tmp_path)
