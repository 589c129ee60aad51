"""Signals from outside and from jobs: exit status 128+N, every job process
and grandchild gone, jobs recorded cancelled, lock released; kill_grace; a
second SIGINT; SIGUSR1/SIGUSR2; an inherited ignored SIGINT.

dagrun is started with subprocess.Popen directly: a shell's `&` would make
SIGINT ignored (and dagrun, like make, keeps an ignored SIGINT ignored)."""
import os
import re
import signal
import sys
import time

import pytest

import conftest
from conftest import gone

PY = sys.executable
SLOW = conftest.SLOW

# The jobs' helper.
#   --pid F        write our PID to F (after the signal setup below)
#   --on-term F    on SIGTERM, create F and keep running (so only SIGKILL ends us)
#   --marker F     create F once started
#   --wait F       wait (bounded) for file F; exit 9 if it never comes
JOB = r'''
import os, signal, sys, time
a = sys.argv[1:]
opt = dict(zip(a[::2], a[1::2]))
if "--on-term" in opt:
    def onterm(sig, frame):
        open(opt["--on-term"], "w").close()
    signal.signal(signal.SIGTERM, onterm)
if "--pid" in opt:
    with open(opt["--pid"] + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(opt["--pid"] + ".tmp", opt["--pid"])
if "--marker" in opt:
    open(opt["--marker"], "w").close()
status = 0
if "--wait" in opt:
    end = time.monotonic() + 30
    while not os.path.exists(opt["--wait"]) and time.monotonic() < end:
        time.sleep(0.005)
    status = 0 if os.path.exists(opt["--wait"]) else 9
sys.exit(status)
'''


def default_signals():
    """preexec_fn: SIGINT and SIGHUP at their defaults, as from an interactive
    shell, even when this test run itself was started with them ignored
    (in the background, or under nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def setup_job(dr):
    (dr.path / "job.py").write_text(JOB)
    return "%s job.py" % PY


def status(rc):
    """The exit status as a shell's $? shows it: a process that re-raises the
    signal to die by it (as it should, so its caller sees the interrupt) and
    one that exits 128+N both read as 128+N."""
    return 128 - rc if rc < 0 else rc


def journal(dr):
    p = dr.path / ".dagrun/journal"
    return dr.journal() if p.exists() else []


def states(dr):
    return {f[1]: f[3] for f in journal(dr) if f[0] == "end"}


def started(dr, *names):
    have = {f[1] for f in journal(dr) if f[0] == "start"}
    return all(n in have for n in names)


def pidof(dr, name):
    p = dr.path / name
    return int(p.read_text()) if p.exists() and p.read_text().strip() else None


def ours(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except OSError:
        return False
    return b"sleep" in cmd or b"job.py" in cmd or cmd.startswith(b"/bin/sh")


def cleanup(dr, p, pidfiles=()):
    """Whatever happened: dagrun and every process the test made are ended."""
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)
    for name in pidfiles:
        pid = pidof(dr, name)
        if pid and not gone(pid) and ours(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def loglines(dr, text):
    p = dr.path / ".dagrun/main.log"
    return p.read_text().count(text) if p.exists() else 0


def own(stderr):
    """dagrun's own stderr, without a wrapper's (valgrind's) report lines."""
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


def lock_is_free(dr):
    """A run of another config on the same state directory works at once."""
    (dr.path / "other.ini").write_text("[node quick]\ncmd = true\n")
    r = dr.run("-f", "other.ini")
    return r.returncode == 0, own(r.stderr)


TREE = ("sleep 300 & echo $! > gc1.pid; sleep 300 & echo $! > gc2.pid; "
        "echo $$ > sh.pid; wait")
PIDFILES = ("py.pid", "sh.pid", "gc1.pid", "gc2.pid")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["INT", "TERM", "HUP"])
def test_signal_ends_the_run_kills_every_job_process_and_releases_the_lock(dr, sig):
    job = setup_job(dr)
    p = dr.popen(ini="""
[run]
jobs = 3
[node py]
cmd = %s --pid py.pid --wait never
[node tree]
cmd = %s
[node waiting]
after = py
cmd = touch waiting-ran
""" % (job, TREE), preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: all(pidof(dr, f) for f in PIDFILES) or p.poll() is not None,
                    what="the jobs and their children to start")
        assert p.poll() is None, p.communicate()
        pids = [pidof(dr, f) for f in PIDFILES]
        t0 = time.monotonic()
        p.send_signal(sig)
        out, err = p.communicate(timeout=20 * SLOW)
        assert time.monotonic() - t0 < 8 * SLOW       # the jobs obeyed SIGTERM: no grace needed
        assert status(p.returncode) == 128 + sig, (p.returncode, err)
        for pid in pids:
            dr.wait_for(lambda: gone(pid), timeout=5, what="process %d to be gone" % pid)
        assert states(dr) == {"py": "cancelled", "tree": "cancelled", "waiting": "cancelled"}
        done = [f for f in journal(dr) if f[0] == "done"]
        assert done and done[-1][1] == str(128 + sig)
        assert re.search(r"^cancelled [0-9.]+s py$", out, re.M), out
        assert not (dr.path / "waiting-ran").exists()
        assert lock_is_free(dr) == (True, "")
    finally:
        cleanup(dr, p, PIDFILES)


def test_job_ignoring_sigterm_is_killed_after_kill_grace(dr):
    job = setup_job(dr)
    p = dr.popen(ini="[run]\nkill_grace = 1s\n[node stubborn]\n"
                 "cmd = %s --on-term got-term --pid s.pid --wait never\n" % job,
                 preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: pidof(dr, "s.pid") or p.poll() is not None, what="the job")
        pid = pidof(dr, "s.pid")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20 * SLOW)
        took = time.monotonic() - t0
        assert status(p.returncode) == 143, err
        assert (dr.path / "got-term").exists()        # SIGTERM first ...
        assert 0.9 <= took < 10 * SLOW, took           # ... SIGKILL after the grace
        dr.wait_for(lambda: gone(pid), timeout=5, what="the stubborn job to be gone")
        end = [f for f in journal(dr) if f[0] == "end" and f[1] == "stubborn"]
        assert end[0][3:5] == ["cancelled", str(128 + signal.SIGKILL)]
        assert lock_is_free(dr) == (True, "")
    finally:
        cleanup(dr, p, ["s.pid"])


def test_grandchild_ignoring_sigterm_is_killed_after_kill_grace(dr):
    p = dr.popen(ini="""
[run]
kill_grace = 1s
[node g]
cmd = (trap '' TERM; exec sleep 300) & echo $! > gc.pid; echo $$ > sh.pid; wait
""", preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: (pidof(dr, "gc.pid") and pidof(dr, "sh.pid")) or p.poll() is not None,
                    what="the job and its child")
        pids = pidof(dr, "sh.pid"), pidof(dr, "gc.pid")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 143, err
        for pid in pids:
            dr.wait_for(lambda: gone(pid), timeout=1.5, what="process %d to be gone" % pid)
    finally:
        cleanup(dr, p, ["gc.pid", "sh.pid"])


def test_job_exiting_0_on_sigterm_is_recorded_cancelled(dr):
    p = dr.popen(ini="""
[run]
jobs = 2
[node graceful]
cmd = trap 'exit 0' TERM; echo $$ > g.pid; while :; do sleep 0.05; done
[node follows]
after = graceful
cmd = touch follows-ran
""", preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: pidof(dr, "g.pid") or p.poll() is not None, what="the job")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 130, err
        assert not (dr.path / "follows-ran").exists()
        # it was stopped before it finished its work: not a success
        assert states(dr) == {"graceful": "cancelled", "follows": "cancelled"}
        assert not re.search(r"^ok .* graceful$", out, re.M), out
    finally:
        cleanup(dr, p, ["g.pid"])


def test_second_sigint_kills_at_once(dr):
    job = setup_job(dr)
    p = dr.popen(ini="[run]\nkill_grace = 60s\n[node stubborn]\n"
                 "cmd = %s --on-term got-term --pid s.pid --wait never\n" % job,
                 preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: pidof(dr, "s.pid") or p.poll() is not None, what="the job")
        pid = pidof(dr, "s.pid")
        p.send_signal(signal.SIGINT)
        # the first SIGINT reached the job as SIGTERM, which it shrugs off
        dr.wait_for(lambda: (dr.path / "got-term").exists(), timeout=10, what="SIGTERM at the job")
        assert p.poll() is None
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20 * SLOW)
        assert time.monotonic() - t0 < 5 * SLOW        # not the 60 s grace
        assert status(p.returncode) == 130, err
        dr.wait_for(lambda: gone(pid), timeout=5, what="the job to be gone")
        end = [f for f in journal(dr) if f[0] == "end" and f[1] == "stubborn"]
        assert end[0][3:5] == ["cancelled", str(128 + signal.SIGKILL)]
    finally:
        cleanup(dr, p, ["s.pid"])


def test_job_that_sends_sigint_to_dagrun_ends_the_run_with_130(dr):
    job = setup_job(dr)
    p = dr.popen(ini="""
[run]
jobs = 2
[node victim]
cmd = %s --pid v.pid --wait never
[node killer]
cmd = i=0; while [ ! -e v.pid ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; kill -INT $PPID
[node never]
after = victim
cmd = touch never-ran
""" % job, preexec_fn=default_signals)
    try:
        out, err = p.communicate(timeout=30 * SLOW)
        assert status(p.returncode) == 130, (p.returncode, err)
        st = states(dr)
        assert st["victim"] == "cancelled" and st["never"] == "cancelled", st
        assert not (dr.path / "never-ran").exists()
        pid = pidof(dr, "v.pid")
        dr.wait_for(lambda: gone(pid), timeout=5, what="the victim to be gone")
    finally:
        cleanup(dr, p, ["v.pid"])


def test_sigusr1_pauses_launching_and_sigusr2_resumes(dr):
    job = setup_job(dr)
    p = dr.popen(ini="""
[node a]
cmd = %s --marker a.started --wait a.go
[node b]
after = a
cmd = %s --marker b.started
""" % (job, job), preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: (dr.path / "a.started").exists() or p.poll() is not None, what="a")
        p.send_signal(signal.SIGUSR1)
        dr.wait_for(lambda: loglines(dr, "launching paused") == 1, timeout=10, what="pause logged")
        (dr.path / "a.go").touch()
        dr.wait_for(lambda: states(dr).get("a") == "ok", what="a to end")
        # a second SIGUSR1, logged only after dagrun went round its loop
        # again since a ended: had b been launched, it would be by now
        p.send_signal(signal.SIGUSR1)
        dr.wait_for(lambda: loglines(dr, "launching paused") == 2, timeout=10, what="second pause")
        assert not started(dr, "b")
        assert not (dr.path / "b.started").exists()
        assert p.poll() is None
        p.send_signal(signal.SIGUSR2)
        out, err = p.communicate(timeout=20 * SLOW)
        assert p.returncode == 0, err
        assert (dr.path / "b.started").exists()
        assert states(dr) == {"a": "ok", "b": "ok"}
        assert loglines(dr, "launching resumed") == 1
    finally:
        (dr.path / "a.go").touch()
        cleanup(dr, p)


def test_ignored_sigint_stays_ignored_and_sigterm_still_ends_the_run(dr):
    job = setup_job(dr)
    p = dr.popen(ini="""
[node a]
cmd = %s --pid a.pid --wait a.go
[node b]
after = a
cmd = %s --pid b.pid --wait never
""" % (job, job), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        dr.wait_for(lambda: pidof(dr, "a.pid") or p.poll() is not None, what="a")
        p.send_signal(signal.SIGINT)
        # SIGUSR2 (resume: harmless) after SIGINT: once its log line shows,
        # dagrun has handled every signal sent before it
        p.send_signal(signal.SIGUSR2)
        dr.wait_for(lambda: loglines(dr, "launching resumed") == 1 or p.poll() is not None,
                    timeout=10, what="SIGUSR2 logged")
        assert p.poll() is None, p.communicate()
        assert loglines(dr, "SIGINT") == 0
        assert not gone(pidof(dr, "a.pid"))
        # launching goes on: b starts when a ends
        (dr.path / "a.go").touch()
        dr.wait_for(lambda: pidof(dr, "b.pid") or p.poll() is not None, what="b to start")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 143, err
        assert states(dr) == {"a": "ok", "b": "cancelled"}
        dr.wait_for(lambda: gone(pidof(dr, "b.pid")), timeout=5, what="b to be gone")
    finally:
        (dr.path / "a.go").touch()
        cleanup(dr, p, ["a.pid", "b.pid"])


def test_sigterm_while_jobs_wait_for_a_slot(dr):
    """Jobs that never started are cancelled too, and none starts after the signal."""
    job = setup_job(dr)
    ini = "[run]\njobs = 1\n" + "".join(
        "[node n%d]\ncmd = %s --marker n%d.started --wait never\n" % (i, job, i) for i in range(4))
    p = dr.popen(ini=ini, preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: any((dr.path / ("n%d.started" % i)).exists() for i in range(4))
                    or p.poll() is not None, what="the first job")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 143, err
        assert sum((dr.path / ("n%d.started" % i)).exists() for i in range(4)) == 1
        assert set(states(dr).values()) == {"cancelled"} and len(states(dr)) == 4
        assert sum(1 for f in journal(dr) if f[0] == "start") == 1
    finally:
        cleanup(dr, p)
