"""The console on a terminal: one status line rewritten in place."""
import os
import pty
import select
import subprocess
import time

from conftest import argv, clean_env, SLOW


def run_on_pty(dr, *args, ini):
    dr.write(ini)
    master, slave = pty.openpty()
    p = subprocess.Popen(argv(*args), cwd=dr.path, env=clean_env(TERM="xterm"),
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    end = time.monotonic() + 30 * SLOW
    try:
        while time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:      # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=10 * SLOW)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return rc, out.decode(errors="replace")


def test_status_line_is_rewritten_in_place(dr):
    rc, out = run_on_pty(dr, "-j", "2", ini="""
[node a]
cmd = true
[node b]
cmd = true
[node c]
after = a b
cmd = true
""")
    assert rc == 0
    assert "\r" in out and "\x1b[K" in out
    assert "[3/3]" in out or "3 jobs: 3 ok" in out
    # no per-job lines on a terminal, only the summary at the end
    lines = [l for l in out.replace("\r\n", "\n").split("\n") if l.strip()]
    assert not any(l.startswith("ok ") for l in lines)
    assert lines[-1].split("\r")[-1].split("\x1b[K")[-1].startswith("dagrun: 3 jobs: 3 ok")


def test_failure_is_printed_above_the_status_line(dr):
    rc, out = run_on_pty(dr, ini="""
[node bad]
cmd = sh -c 'echo broken >&2; exit 4'
""")
    assert rc == 1
    assert "FAILED exit 4" in out and "bad| broken" in out


def test_not_a_terminal_has_no_control_characters(dr):
    r = dr.run(ini="[node a]\ncmd = true\n[node b]\ncmd = sh -c 'exit 1'\n",
               env=clean_env(TERM="xterm"))
    assert r.returncode == 1
    for text in (r.stdout, r.stderr):
        assert "\r" not in text and "\x1b" not in text
    assert "ok " in r.stdout and "FAILED exit 1" in r.stderr
