"""Resume (-r) and crash safety: what earlier runs did is taken as done when
the job is the same, everything else and what follows it runs; jobs of a
dagrun killed with SIGKILL are ended before anything starts, so no job runs
twice at once; a torn journal line is ignored; a full state directory stops
new launches and a later -r goes on from there.

A dagrun killed with SIGKILL leaves a guard process that ends its jobs; to
test what the next run does with jobs left running, most tests kill the guard
too (the man page: "unless the guard is killed as well"); one test lets the
guard do its work.

A dagrun killed with SIGKILL leaves its jobs to whoever reaps orphans. Where
that is a PID 1 that never reaps (as in some containers), an ended job stays
a zombie and its process group "exists" for ever; the `reaper` fixture makes
this test process the orphans' reaper (PR_SET_CHILD_SUBREAPER) and reaps
them, as init does on an ordinary system."""
import ctypes
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import conftest
from conftest import gone

PY = sys.executable
SLOW = conftest.SLOW
STATES = ["waiting", "ready", "calibrating", "running", "suspended", "ok", "failed",
          "timeout", "cancelled", "skipped"]


# ------------------------------------------------------------------ helpers

def status(rc):
    """The exit status as a shell's $? shows it (a death by signal N is 128+N)."""
    return 128 - rc if rc < 0 else rc


def own(stderr):
    """dagrun's own stderr, without a wrapper's (valgrind's) report lines."""
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


def default_signals():
    """preexec_fn: SIGINT at its default even if this test run ignores it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def records(dr, sd=".dagrun"):
    """Journal records, time field included, as lists of fields; a last line
    without its newline (torn) is left out, as every reader must."""
    p = dr.path / sd / "journal"
    if not p.exists():
        return []
    return [l.split("\t") for l in p.read_text().split("\n")[:-1]]


def runs(recs):
    """The records split into runs, each list beginning with its run record."""
    out = []
    for f in recs:
        if f[1] == "run":
            out.append([])
        if out:
            out[-1].append(f)
    return out


def last_run(dr, sd=".dagrun"):
    return runs(records(dr, sd))[-1]


def started(run):
    return [f[2] for f in run if f[1] == "start"]


def resumed(run):
    return sorted(f[2] for f in run if f[1] == "resumed")


def ends(run):
    """job -> state of its last end record in this run."""
    return {f[2]: f[4] for f in run if f[1] == "end"}


def summary(out, text):
    assert re.search(r"^dagrun: %s in [0-9.]+s$" % re.escape(text), out, re.M), out


def ran(dr, name="ran"):
    """The jobs' own record of what ran: one name a line."""
    p = dr.path / name
    return sorted(p.read_text().split()) if p.exists() else []


def pidof(dr, name):
    p = dr.path / name
    return int(p.read_text()) if p.exists() and p.read_text().strip() else None


def stop(p):
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)


def guards(pid):
    """dagrun's guard: its child in a session of its own (see the man page)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(rest[1]) == pid and int(rest[3]) == int(d):
                out.append(int(d))
    return out


def sigkill(p, guard=True):
    """SIGKILL dagrun and, unless guard is False, its guard first, as
    `kill -9 -1` or the loss of both would: its jobs are left running."""
    if guard:
        for g in guards(p.pid):
            os.kill(g, signal.SIGKILL)
    p.kill()
    p.wait(timeout=10)


def traced_env():
    """For a dagrun under strace: an ASan build's leak check cannot run under ptrace."""
    return conftest.clean_env(ASAN_OPTIONS="detect_leaks=0")


def killgroup(pg):
    try:
        os.killpg(pg, signal.SIGKILL)
    except OSError:
        pass


RECORD = re.compile(
    r"\d+\.\d+\t(?:"
    r"run\t\d+\t\d+|expand\t\S+\t\d+|start\t\S+\t\d+\t\d+\t[0-9a-f]{16}|resumed\t\S+"
    r"|calibrate\t\S+|end\t\S+\t\d+\t[a-z]+\t-?\d+\t\d+(?:\.\d{3})?|retry\t\S+\t\d+\t[0-9.]+"
    r"|spawn\t\S+\t\d+|add\t\S+|suspend\t\S+|resume\t\S+|done\t\d+\t\d+\.\d{3}\t[^\t]+)")


def whole(line):
    """Is this line one whole journal record (not two run together, not cut)?"""
    return RECORD.fullmatch(line) is not None


# ------------------------------------------------------------------- reaper

PR_SET_CHILD_SUBREAPER = 36


class Reaper:
    """Orphans of a SIGKILLed dagrun come to this process and are reaped here,
    in a thread; children of our own (dagrun itself, in our process group)
    are left to their Popen."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        if self.libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), ctypes.c_ulong(0),
                           ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            pytest.skip("cannot become a child subreaper: errno %d" % ctypes.get_errno())
        self.me, self.pg = os.getpid(), os.getpgrp()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def orphans(self):
        """[(pid, pgid, state)] of our children that are not in our group."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(rest[1]) == self.me and int(rest[2]) != self.pg:
                out.append((int(d), int(rest[2]), rest[0]))
        return out

    def sweep(self):
        for pid, _, st in self.orphans():
            if st in ("Z", "X"):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def loop(self):
        while not self.done.wait(0.005):
            self.sweep()

    def close(self):
        """Kill and reap whatever orphan is left, and stop reaping."""
        for _, pg, _ in self.orphans():
            killgroup(pg)
        end = time.monotonic() + 10
        while self.orphans() and time.monotonic() < end:
            time.sleep(0.01)
        self.done.set()
        self.thread.join()
        self.sweep()
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(0), ctypes.c_ulong(0),
                        ctypes.c_ulong(0), ctypes.c_ulong(0))


@pytest.fixture
def reaper():
    r = Reaper()
    try:
        yield r
    finally:
        r.close()


# ------------------------------------------------------------ -r: what runs

# every job appends its name to `ran` (an absolute path, so dir may change)
def simple_ini(dr, nodes, vars="", run=""):
    """nodes: [(name, after, more keys)]; each job appends its name to ran."""
    ini = "[vars]\nran = %s\n%s" % (dr.path / "ran", vars)
    if run:
        ini += "[run]\n" + run
    for name, after, more in nodes:
        ini += "[node %s]\ncmd = echo %s >> ${ran}\n" % (name, name)
        if after:
            ini += "after = %s\n" % after
        ini += more
    return ini


CHAIN = [("a", "", ""), ("b", "a", ""), ("c", "b", ""), ("x", "", ""), ("y", "x", "")]


def test_resume_after_a_complete_run_runs_nothing(dr):
    dr.write(simple_ini(dr, CHAIN))
    r = dr.run("-q")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["a", "b", "c", "x", "y"]
    (dr.path / "ran").unlink()
    for _ in range(2):     # and again: resumed records carry the success on
        r = dr.run("-r")
        assert r.returncode == 0, r.stderr
        assert own(r.stderr) == ""
        assert ran(dr) == []
        summary(r.stdout, "5 jobs: 5 ok (5 of them by an earlier run)")
        run = last_run(dr)
        assert resumed(run) == ["a", "b", "c", "x", "y"]
        assert started(run) == [] and ends(run) == {}
        assert run[-1][1:3] == ["done", "0"]
        assert run[-1][4] == "5 ok (5 of them by an earlier run)"
        # a resumed job gets no console line
        assert not re.search(r"^ok ", r.stdout, re.M), r.stdout
    # without -r, everything runs again
    r = dr.run("-q")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["a", "b", "c", "x", "y"]
    summary(r.stdout, "5 jobs: 5 ok")


def test_resume_without_a_journal_runs_everything(dr):
    r = dr.run("-r", ini=simple_ini(dr, CHAIN))
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["a", "b", "c", "x", "y"]
    summary(r.stdout, "5 jobs: 5 ok")


@pytest.mark.parametrize("change", ["cmd", "var", "env", "dir", "shell", "post"])
def test_a_changed_job_runs_again_with_everything_after_it(dr, change):
    (dr.path / "w1").mkdir()
    (dr.path / "w2").mkdir()
    more = {"cmd": "", "var": "", "env": "env = K=1\n", "dir": "dir = w1\n",
            "shell": "shell = sh\n", "post": "post = true\n"}[change]
    nodes = [(n, a, more if n == "b" else m) for n, a, m in CHAIN]
    ini = simple_ini(dr, nodes, "v = 1\n")
    ini = ini.replace("cmd = echo b >> ${ran}", "cmd = echo b >> ${ran}; true ${v}")
    dr.write(ini)
    r = dr.run("-q")
    assert r.returncode == 0, r.stderr
    (dr.path / "ran").write_text("")
    args = ["-r"]
    if change == "cmd":
        ini = ini.replace("true ${v}", "true ${v} changed")
    elif change == "var":
        args += ["-D", "v=2"]
    elif change == "env":
        ini = ini.replace("env = K=1", "env = K=2")
    elif change == "dir":
        ini = ini.replace("dir = w1", "dir = w2")
    elif change == "shell":
        ini = ini.replace("shell = sh\n", "shell = /bin/sh\n")
    else:
        ini = ini.replace("post = true", "post = test -d .")
    assert ini != dr.path.joinpath("dagrun.ini").read_text() or change == "var"
    dr.write(ini)
    r = dr.run(*args)
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["b", "c"]                # b changed, c follows it
    run = last_run(dr)
    assert resumed(run) == ["a", "x", "y"]
    assert sorted(started(run)) == ["b", "c"]
    summary(r.stdout, "5 jobs: 5 ok (3 of them by an earlier run)")
    # the hash in the start records tells the two versions of b apart
    hashes = [f[5] for f in records(dr) if f[1] == "start" and f[2] == "b"]
    assert len(hashes) == 2 and hashes[0] != hashes[1], hashes
    chash = [f[5] for f in records(dr) if f[1] == "start" and f[2] == "c"]
    assert chash[0] == chash[1]                 # c itself did not change
    # the changed version is now the one that succeeded
    (dr.path / "ran").write_text("")
    r = dr.run(*args)
    assert r.returncode == 0, r.stderr
    assert ran(dr) == []
    summary(r.stdout, "5 jobs: 5 ok (5 of them by an earlier run)")


@pytest.mark.parametrize("change", ["timeout", "priority", "shell-variable"])
def test_what_the_hash_does_not_cover_does_not_rerun(dr, change):
    ini = simple_ini(dr, CHAIN).replace("cmd = echo b >> ${ran}",
                                        "cmd = echo b $FOO >> ${ran}\ntimeout = 1m\npriority = 1")
    r = dr.run("-q", ini=ini, env=conftest.clean_env(FOO="one"))
    assert r.returncode == 0, r.stderr
    (dr.path / "ran").write_text("")
    env = conftest.clean_env(FOO="one")
    if change == "timeout":
        dr.write(ini.replace("timeout = 1m", "timeout = 2m"))
    elif change == "priority":
        dr.write(ini.replace("priority = 1", "priority = 5"))
    else:
        env = conftest.clean_env(FOO="two")
    r = dr.run("-r", env=env)
    assert r.returncode == 0, r.stderr
    assert ran(dr) == []
    summary(r.stdout, "5 jobs: 5 ok (5 of them by an earlier run)")


def test_a_failed_job_and_what_follows_it_run_again_the_rest_does_not(dr):
    ini = simple_ini(dr, CHAIN).replace("cmd = echo b >> ${ran}",
                                        "cmd = echo b >> ${ran}; test -e fixed")
    r = dr.run("-k", ini=ini)
    assert r.returncode == 1
    assert ran(dr) == ["a", "b", "x", "y"]
    assert ends(last_run(dr)) == {"a": "ok", "b": "failed", "c": "skipped", "x": "ok", "y": "ok"}
    (dr.path / "ran").write_text("")
    (dr.path / "fixed").touch()
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["b", "c"]
    run = last_run(dr)
    assert resumed(run) == ["a", "x", "y"]
    summary(r.stdout, "5 jobs: 5 ok (3 of them by an earlier run)")


def test_every_run_of_the_journal_counts_not_only_the_last(dr):
    """a succeeds in run 1; run 2 (-r) changes b; run 3 (-r) still takes a
    from run 1, through run 2's resumed record."""
    dr.write(simple_ini(dr, [("a", "", ""), ("b", "", ""), ("c", "b", "")]))
    assert dr.run("-q").returncode == 0
    (dr.path / "ran").write_text("")
    ini = dr.path.joinpath("dagrun.ini").read_text()
    dr.write(ini.replace("echo b >>", "echo b  >>"))
    r = dr.run("-r")
    assert r.returncode == 0 and ran(dr) == ["b", "c"], (r.stderr, ran(dr))
    (dr.path / "ran").write_text("")
    r = dr.run("-r")
    assert r.returncode == 0 and ran(dr) == [], (r.stderr, ran(dr))
    summary(r.stdout, "3 jobs: 3 ok (3 of them by an earlier run)")
    assert resumed(last_run(dr)) == ["a", "b", "c"]


def test_a_job_begun_again_after_its_success_is_not_done_until_it_succeeds_again(dr):
    """b succeeds in run 1 with command X; run 2 starts b with command Y and
    is interrupted; with X back, run 3 must run b: its last start did not
    succeed, whatever run 1 did."""
    ini = simple_ini(dr, [("a", "", ""), ("b", "", ""), ("c", "b", "")])
    r = dr.run("-q", ini=ini)
    assert r.returncode == 0, r.stderr
    (dr.path / "ran").write_text("")
    hang = ("echo b >> ${ran}; echo $$ > b.pid; i=0; "
            "while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done")
    dr.write(ini.replace("cmd = echo b >> ${ran}", "cmd = " + hang))
    p = dr.popen("-r", preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: pidof(dr, "b.pid") or p.poll() is not None, what="b to start")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 130, err
    finally:
        (dr.path / "go").touch()
        stop(p)
    assert ends(last_run(dr)).get("b") == "cancelled"
    dr.write(ini)      # back to the command that succeeded in run 1
    (dr.path / "ran").write_text("")
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["b", "c"]
    assert resumed(last_run(dr)) == ["a"]
    summary(r.stdout, "3 jobs: 3 ok (1 of them by an earlier run)")


# --------------------------------------------------------- -r with fan-out

FAN = """
[vars]
ran = {ran}
[node f]
inputs = in/*.txt
output_dir = out
cmd = cp {{input}} {{output}} && echo {{name}} >> ${{ran}}
[node g]
after = f
cmd = echo g >> ${{ran}}
[node h]
cmd = echo h >> ${{ran}}
"""


def fan_setup(dr, ini=None):
    (dr.path / "in").mkdir()
    past = time.time() - 1000
    for i in (1, 2, 3):
        p = dr.path / "in" / ("%d.txt" % i)
        p.write_text("input %d\n" % i)
        os.utime(p, (past, past))
    dr.write(ini or FAN.format(ran=dr.path / "ran"))
    r = dr.run("-q")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["1.txt", "2.txt", "3.txt", "g", "h"]
    (dr.path / "ran").write_text("")


def test_fan_out_job_whose_input_changed_runs_again(dr):
    fan_setup(dr)
    out3 = (dr.path / "out" / "3.txt").stat().st_mtime
    (dr.path / "in" / "2.txt").write_text("input 2, longer now\n")      # replaced
    os.utime(dr.path / "in" / "2.txt", (out3 + 10, out3 + 10))
    os.utime(dr.path / "in" / "3.txt", (out3 + 10, out3 + 10))           # touched
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["2.txt", "3.txt", "g"]     # g follows jobs that ran; h does not
    assert (dr.path / "out" / "2.txt").read_text() == "input 2, longer now\n"
    run = last_run(dr)
    assert resumed(run) == ["f:in/1.txt", "h"]
    summary(r.stdout, "5 jobs: 5 ok (2 of them by an earlier run)")


def test_fan_out_input_with_a_new_size_but_its_old_time_is_done_by_its_newer_output(dr):
    """The hash changes (size), but the output is newer than the input: as
    the man page says, such a job is done whatever the journal says."""
    fan_setup(dr)
    p = dr.path / "in" / "2.txt"
    st = p.stat()
    p.write_text("input 2, longer now\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == []
    summary(r.stdout, "5 jobs: 5 ok (5 of them by an earlier run)")


@pytest.mark.parametrize("how", ["journal-deleted", "journal-deleted-cmd-changed"])
def test_fan_out_job_with_an_output_newer_than_its_input_is_done_without_the_journal(dr, how):
    fan_setup(dr)
    (dr.path / ".dagrun" / "journal").unlink()
    (dr.path / "out" / "2.txt").unlink()                                  # no output
    out3 = (dr.path / "out" / "3.txt").stat().st_mtime
    os.utime(dr.path / "in" / "3.txt", (out3 + 10, out3 + 10))           # input newer
    if how.endswith("cmd-changed"):
        ini = dr.path.joinpath("dagrun.ini").read_text()
        dr.write(ini.replace("cp {input} {output} &&", "cat {input} > {output} &&"))
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    # 1.txt's output is newer than its input; g and h have no journal to vouch for them
    assert ran(dr) == ["2.txt", "3.txt", "g", "h"]
    assert resumed(last_run(dr)) == ["f:in/1.txt"]
    summary(r.stdout, "5 jobs: 5 ok (1 of them by an earlier run)")


def test_fan_out_jobs_run_again_when_a_prerequisite_runs_even_with_newer_outputs(dr):
    ini = FAN.format(ran=dr.path / "ran").replace(
        "[node f]\n", "[node p]\ncmd = echo p >> ${ran}\n[node f]\nafter = p\n")
    (dr.path / "in").mkdir()
    past = time.time() - 1000
    for i in (1, 2, 3):
        q = dr.path / "in" / ("%d.txt" % i)
        q.write_text("input %d\n" % i)
        os.utime(q, (past, past))
    r = dr.run("-q", ini=ini)
    assert r.returncode == 0, r.stderr
    (dr.path / "ran").write_text("")
    r = dr.run("-r")
    assert r.returncode == 0 and ran(dr) == [], (r.stderr, ran(dr))
    dr.write(ini.replace("echo p >>", "echo p  >>"))
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    assert ran(dr) == ["1.txt", "2.txt", "3.txt", "g", "p"]
    assert resumed(last_run(dr)) == ["h"]
    summary(r.stdout, "6 jobs: 6 ok (1 of them by an earlier run)")


def test_calibration_measured_before_an_interruption_is_not_measured_again(dr):
    (dr.path / "in").mkdir()
    for i in range(4):
        (dr.path / "in" / ("%d.dat" % i)).write_text("%d\n" % i)
    # the first job to run is the calibration job: it ends at once; the
    # others wait for go
    dr.write("[node c]\ninputs = in/*.dat\ncalibrate = yes\n"
             "cmd = if [ ! -e cal.done ]; then touch cal.done; else echo {name} >> waiting; "
             "i=0; while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; "
             "[ -e go ]; fi\n")
    p = dr.popen(preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: (dr.path / "waiting").exists() or p.poll() is not None,
                    what="a job after the calibration")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 130, err
    finally:
        (dr.path / "go").touch()
        stop(p)
    first = runs(records(dr))[0]
    cal = [f[2] for f in first if f[1] == "calibrate"]
    assert len(cal) == 1 and ends(first)[cal[0]] == "ok", first
    assert [l.split("\t")[0] for l in (dr.path / ".dagrun/calibration").read_text().splitlines()] \
        == ["c"]
    log = dr.path / ".dagrun/main.log"
    mark = len(log.read_text().splitlines())
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    run = last_run(dr)
    assert resumed(run) == cal
    assert sorted(started(run)) == sorted(set("c:in/%d.dat" % i for i in range(4)) - set(cal))
    assert not any(f[1] == "calibrate" for f in run)
    texts = [l.split("\t", 2)[2] for l in log.read_text().splitlines()[mark:]]
    assert "calibration c: from an earlier run" in texts, texts
    assert "calibration c: one job alone first" not in texts, texts
    summary(r.stdout, "4 jobs: 4 ok (1 of them by an earlier run)")


# ---------------------------------------------------------------- retries

RETRY = """
[node r]
retries = 2
retry_delay = {delay}
cmd = echo "$DAGRUN_ATTEMPT" >> attempts; {body}
[node after]
after = r
cmd = touch after-ran
"""


@pytest.mark.parametrize("fixed", [False, True], ids=["still-failing", "fixed"])
def test_retries_go_on_counting_after_a_killed_run(dr, reaper, fixed):
    """r failed twice; dagrun is killed while attempt 3 waits for its delay:
    -r makes attempt 3, and no more."""
    p = dr.popen(ini=RETRY.format(delay="0.5s", body="test -e fixed"))
    try:
        dr.wait_for(lambda: any(f[1] == "retry" and f[2:4] == ["r", "3"] for f in records(dr))
                    or p.poll() is not None, what="the second retry to be scheduled")
        assert p.poll() is None, p.communicate()
        p.kill()
        p.wait(timeout=10)
    finally:
        stop(p)
    assert (dr.path / "attempts").read_text() == "1\n2\n"
    if fixed:
        (dr.path / "fixed").touch()
    r = dr.run("-r")
    assert (dr.path / "attempts").read_text() == "1\n2\n3\n"     # DAGRUN_ATTEMPT=3
    run = last_run(dr)
    assert [f[2:4] for f in run if f[1] == "start"] == (
        [["r", "3"], ["after", "1"]] if fixed else [["r", "3"]])
    assert not any(f[1] == "retry" for f in run)
    if fixed:
        assert r.returncode == 0, r.stderr
        assert (dr.path / "after-ran").exists()
        summary(r.stdout, "2 jobs: 2 ok")
    else:
        assert r.returncode == 1
        assert ends(run) == {"r": "failed", "after": "skipped"}
        assert [f[3] for f in run if f[1] == "end" and f[2] == "r"] == ["3"]
        assert re.search(r"^FAILED exit 1 [0-9.]+s r$", r.stderr, re.M), r.stderr
        assert not (dr.path / "after-ran").exists()
        summary(r.stdout, "2 jobs: 0 ok, 1 failed, 1 skipped")


def test_an_attempt_interrupted_by_sigkill_counts(dr, reaper):
    """Attempt 1 fails, attempt 2 is running when dagrun is killed: -r ends
    the orphaned attempt 2 and starts attempt 3."""
    body = ('if [ "$DAGRUN_ATTEMPT" = 2 ]; then echo $$ > r.pid; i=0; '
            'while [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; fi; '
            '[ "$DAGRUN_ATTEMPT" = 3 ]')
    p = dr.popen(ini=RETRY.format(delay="0.05s", body=body))
    try:
        dr.wait_for(lambda: pidof(dr, "r.pid") or p.poll() is not None, what="attempt 2")
        assert p.poll() is None, p.communicate()
        sigkill(p)
    finally:
        stop(p)
    old = pidof(dr, "r.pid")
    assert not gone(old)
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    assert "dagrun: r: still running from an earlier run (process group %d): terminated" % old \
        in r.stderr, r.stderr
    assert gone(old)
    assert (dr.path / "attempts").read_text() == "1\n2\n3\n"
    assert [f[2:4] for f in last_run(dr) if f[1] == "start"] == [["r", "3"], ["after", "1"]]
    summary(r.stdout, "2 jobs: 2 ok")


# ------------------------------------------------------ interrupt, then -r

WAITGO = ("echo start {n} >> ledger; i=0; "
          "while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; "
          "[ -e go ] && echo end {n} >> ledger")


def test_interrupted_run_then_resume_runs_only_what_had_not_finished(dr):
    ini = "[run]\njobs = 4\n"
    quick = "echo start {n} >> ledger; echo end {n} >> ledger"
    for n, after, cmd in [("a", "", quick), ("c", "", quick), ("b", "a", WAITGO),
                          ("e", "", WAITGO), ("d", "b", quick), ("z", "d c", quick)]:
        ini += "[node %s]\ncmd = %s\n" % (n, cmd.format(n=n))
        if after:
            ini += "after = %s\n" % after
    p = dr.popen(ini=ini, preexec_fn=default_signals)
    try:
        led = lambda: (dr.path / "ledger").read_text() if (dr.path / "ledger").exists() else ""
        dr.wait_for(lambda: ("start b" in led() and "start e" in led()
                             and ends(last_run(dr)) == {"a": "ok", "c": "ok"})
                    or p.poll() is not None, what="a and c done, b and e running")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20 * SLOW)
        assert status(p.returncode) == 130, err
    finally:
        stop(p)
    assert ends(last_run(dr)) == {"a": "ok", "c": "ok", "b": "cancelled", "e": "cancelled",
                                  "d": "cancelled", "z": "cancelled"}
    before = (dr.path / "ledger").read_text().splitlines()
    (dr.path / "go").touch()
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    now = (dr.path / "ledger").read_text().splitlines()[len(before):]
    assert sorted(l for l in now if l.startswith("start")) == \
        ["start b", "start d", "start e", "start z"]
    assert sorted(l for l in now if l.startswith("end")) == ["end b", "end d", "end e", "end z"]
    run = last_run(dr)
    assert resumed(run) == ["a", "c"]
    assert sorted(started(run)) == ["b", "d", "e", "z"]
    assert set(ends(run).values()) == {"ok"}
    summary(r.stdout, "6 jobs: 6 ok (2 of them by an earlier run)")
    # -s agrees
    s = dr.run("-s", "-q")
    assert s.returncode == 0, s.stderr
    rows = [l.split("\t") for l in s.stdout.splitlines()]
    assert rows[0][2:4] == ["ended", "0"] and rows[0][5] == "6", rows
    assert dict((r[1], int(r[2])) for r in rows[1:11])["ok"] == 6


# ---------------------------------------------------------- lock held: exit 3

def test_resume_while_the_earlier_dagrun_holds_the_lock_exits_3_and_s_still_works(dr):
    ini = "[node a]\ncmd = true\n[node w]\ncmd = %s\n" % WAITGO.format(n="w")
    p = dr.popen(ini=ini)
    try:
        dr.wait_for(lambda: (dr.path / "ledger").exists() or p.poll() is not None,
                    what="w to start")
        assert p.poll() is None, p.communicate()
        before = (dr.path / ".dagrun/journal").read_text()
        r = dr.run("-r")
        assert r.returncode == 3, r.stderr
        assert re.search(r"\block\b.*\b%d\b" % p.pid, r.stderr), r.stderr
        assert (dr.path / ".dagrun/journal").read_text().startswith(before)
        assert sum(1 for f in records(dr) if f[1] == "run") == 1    # the loser recorded nothing
        s = dr.run("-s")
        assert s.returncode == 0, s.stderr
        assert re.match(r"run %d running for \d+s\n" % p.pid, s.stdout), s.stdout
        assert re.search(r"^  running +[0-9.]+s  w$", s.stdout, re.M), s.stdout
        q = dr.run("-s", "-q")
        assert q.stdout.split("\n")[0].split("\t")[:3] == ["run", str(p.pid), "running"]
        (dr.path / "go").touch()
        out, err = p.communicate(timeout=30 * SLOW)
        assert p.returncode == 0, err
    finally:
        (dr.path / "go").touch()
        stop(p)
    r = dr.run("-r")
    assert r.returncode == 0, r.stderr
    summary(r.stdout, "2 jobs: 2 ok (2 of them by an earlier run)")


# -------------------------------------------- jobs of a dagrun killed by SIGKILL

# The first copy of the job writes its PID and start time and runs until it
# is ended; a later copy reports whether the first one was gone when it began.
DEAD = r'''
import os, signal, sys, time
def starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if rest[0] in ("Z", "X") else rest[19]
if os.path.exists("first.pid"):
    pid, st = open("first.pid").read().split()
    alive = starttime(int(pid)) == st
    with open("second.txt", "w") as f:
        f.write("%s %.6f\n" % ("first-alive" if alive else "first-gone", time.time()))
    sys.exit(0)
if "--ignore-term" in sys.argv:
    def onterm(sig, frame):
        with open("got-term", "w") as f:
            f.write("%.6f\n" % time.time())
    signal.signal(signal.SIGTERM, onterm)
with open("first.tmp", "w") as f:
    f.write("%d %s\n" % (os.getpid(), starttime(os.getpid())))
os.rename("first.tmp", "first.pid")
end = time.monotonic() + 60
while time.monotonic() < end:
    time.sleep(0.01)
sys.exit(9)
'''


def start_and_kill(dr, ini, guard=True):
    """Start a run, SIGKILL dagrun (and its guard, unless guard is False)
    once the first copy of `long` runs; returns the orphaned job's PID."""
    (dr.path / "dead.py").write_text(DEAD)
    p = dr.popen(ini=ini)
    try:
        dr.wait_for(lambda: (dr.path / "first.pid").exists() or p.poll() is not None,
                    what="the long job")
        assert p.poll() is None, p.communicate()
        dr.wait_for(lambda: "long" in started(last_run(dr)), what="long's start record")
        if "[node quick]" in ini:
            dr.wait_for(lambda: ends(last_run(dr)).get("quick") == "ok", what="quick to end")
        sigkill(p, guard)
    finally:
        stop(p)
    return int((dr.path / "first.pid").read_text().split()[0])


DEAD_INI = ("[run]\njobs = 2\n[node long]\ncmd = %s dead.py\n[node quick]\ncmd = true\n"
            "[node next]\nafter = long\ncmd = touch next-ran\n" % PY)


def test_the_guard_ends_the_jobs_of_a_dagrun_killed_with_sigkill(dr, reaper):
    """dagrun alone gets SIGKILL: its guard ends the job it left running"""
    pid = start_and_kill(dr, DEAD_INI, guard=False)
    try:
        dr.wait_for(lambda: gone(pid), what="the guard to end the orphaned job")
        assert not (dr.path / "second.txt").exists()
        dr.wait_for(lambda: "long: still running after dagrun died (process group %d): "
                    "SIGTERM" % pid in (dr.path / ".dagrun/main.log").read_text(),
                    what="the guard's line in main.log")
    finally:
        killgroup(pid)


@pytest.mark.parametrize("resume", [True, False], ids=["-r", "plain"])
def test_job_of_a_killed_dagrun_is_ended_before_its_new_copy_starts(dr, reaper, resume):
    pid = start_and_kill(dr, DEAD_INI)
    try:
        # SIGKILL cannot be passed on: with its guard gone too, the job runs on
        time.sleep(0.2)
        assert not gone(pid)
        assert not (dr.path / "second.txt").exists()
        r = dr.run(*(["-r"] if resume else []))
        assert r.returncode == 0, r.stderr
        assert own(r.stderr) == ("dagrun: long: still running from an earlier run "
                                 "(process group %d): terminated\n" % pid), r.stderr
        assert "long: still running from an earlier run (process group %d): SIGTERM" % pid \
            in (dr.path / ".dagrun/main.log").read_text()
        assert gone(pid)
        assert (dr.path / "second.txt").read_text().split()[0] == "first-gone"
        assert (dr.path / "next-ran").exists()
        run = last_run(dr)
        assert ends(run)["long"] == "ok"
        assert run[-1][1:3] == ["done", "0"]
        if resume:
            summary(r.stdout, "3 jobs: 3 ok (1 of them by an earlier run)")   # quick
        else:
            summary(r.stdout, "3 jobs: 3 ok")
    finally:
        killgroup(pid)


def test_job_of_a_killed_dagrun_that_ignores_sigterm_gets_sigkill_after_kill_grace(dr, reaper):
    ini = ("[run]\nkill_grace = 1s\n[node long]\ncmd = %s dead.py --ignore-term\n" % PY)
    pid = start_and_kill(dr, ini)
    try:
        t0 = time.monotonic()
        r = dr.run("-r")
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert ("dagrun: long: still running from an earlier run (process group %d): "
                "terminated" % pid) in r.stderr, r.stderr
        assert gone(pid)
        term = float((dr.path / "got-term").read_text())        # SIGTERM first ...
        verdict, when = (dr.path / "second.txt").read_text().split()
        assert verdict == "first-gone"
        assert float(when) - term >= 0.9, (term, when)          # ... SIGKILL after the grace
        assert took < 10 * SLOW
        summary(r.stdout, "1 jobs: 1 ok")
    finally:
        killgroup(pid)


def test_a_finished_run_leaves_nothing_to_end(dr, reaper):
    """Only a run without its done record has jobs to look for: a job whose
    PID is recorded in a finished run is not touched, even if alive."""
    r = dr.run(ini="[node a]\ncmd = true\n")
    assert r.returncode == 0
    # a process of ours, alive, in a group of its own, whose PID we plant as a's
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        j = dr.path / ".dagrun/journal"
        text = j.read_text()
        text = re.sub(r"(\tstart\ta\t1\t)\d+", lambda m: m.group(1) + str(victim.pid), text)
        j.write_text(text)
        r = dr.run("-r")
        assert r.returncode == 0, r.stderr
        assert own(r.stderr) == ""
        assert victim.poll() is None
        # and an unfinished run whose job's PID now belongs to another program
        # (started more than 2 s away from the record): left alone too
        lines = [l for l in text.splitlines(True) if "\tdone\t" not in l and "\tend\t" not in l]
        old = lambda l: "%.6f" % (float(l.split("\t", 1)[0]) - 100) + "\t" + l.split("\t", 1)[1]
        j.write_text("".join(old(l) for l in lines))
        r = dr.run("-r")
        assert r.returncode == 0, r.stderr
        assert "still running" not in r.stderr
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


# ------------------------------------------------------------ journal sync

def test_journal_is_synced_within_a_second_of_a_record_and_at_the_end(dr):
    """strace shows dagrun's fdatasync calls: one a second after the first
    records, while the job still runs, and one after the done record."""
    strace = shutil.which("strace")
    if not strace or conftest.WRAP:
        pytest.skip("needs strace (and no wrapper) to see the fdatasync calls")
    dr.write("[node a]\ncmd = echo $$ > a.pid; i=0; "
             "while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n")
    trace = dr.path / "trace"
    p = subprocess.Popen([strace, "-o", str(trace), "-ttt", "-e", "trace=fdatasync",
                          conftest.BIN, "-q"], cwd=dr.path, env=traced_env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    syncs = lambda: [float(l.split()[0]) for l in
                     (trace.read_text().splitlines() if trace.exists() else [])
                     if "fdatasync(" in l and "= 0" in l]
    try:
        dr.wait_for(lambda: syncs() or p.poll() is not None, timeout=10, what="an fdatasync")
        assert p.poll() is None, p.communicate()
        assert pidof(dr, "a.pid") and not (dr.path / "go").exists()    # a still runs
        first = float(records(dr)[0][0])                                 # the run record
        assert first <= syncs()[0] <= first + 1.3, (first, syncs())
        (dr.path / "go").touch()
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    finally:
        (dr.path / "go").touch()
        stop(p)
    done = float(last_run(dr)[-1][0])
    assert last_run(dr)[-1][1] == "done"
    assert syncs()[-1] >= done, (done, syncs())


# ------------------------------------------------------------ torn journal

def test_torn_journal_at_every_byte_of_its_last_records(dr):
    """A finished run's journal cut at every byte offset within its last four
    records: -s reads what is whole; -r takes as done exactly the jobs whose
    end ok record is whole, runs the rest and what follows them, and its own
    records are whole lines."""
    graph = {"a": [], "b": [], "c": [], "d": ["c"]}
    dr.write(simple_ini(dr, [(n, " ".join(p), "") for n, p in graph.items()], run="jobs = 1\n"))
    r = dr.run("-q")
    assert r.returncode == 0, r.stderr
    j = dr.path / ".dagrun/journal"
    full = j.read_text()
    lines = full.splitlines(True)
    assert [l.split("\t")[1] for l in lines[-4:]] == ["start", "end", "end", "done"] or \
        [l.split("\t")[1] for l in lines[-4:]][-1] == "done", lines
    pid = lines[0].split("\t")[2]
    first = len(full) - sum(len(l) for l in lines[-4:])
    offsets = list(range(first, len(full) + 1))
    if conftest.WRAP:       # under valgrind: line boundaries, records without their
        # newline, and a cut after each field of the end and done records
        offsets = [o for o in offsets if full[o - 1:o] == "\n" or full[o:o + 1] == "\n"
                   or (full[o - 1:o] == "\t" and "\tstart\t" not in
                       full[full.rfind("\n", 0, o) + 1:o])]
    for o in offsets:
        cut = full[:o]
        whole_part = cut[:cut.rfind("\n") + 1]
        torn = cut[len(whole_part):]
        recs = [l.split("\t") for l in whole_part.splitlines()]
        ok = {f[2] for f in recs if f[1] == "end" and f[4] == "ok"}
        began = {f[2] for f in recs if f[1] == "start"}
        finished = any(f[1] == "done" for f in recs)
        why = "journal cut at byte %d of %d: torn %r" % (o, len(full), torn)

        j.write_text(cut)
        s = dr.run("-s", "-q")
        assert s.returncode == 0, (why, s.stderr)
        rows = [l.split("\t") for l in s.stdout.splitlines()]
        assert rows[0][:4] == ["run", pid, "ended" if finished else "stopped",
                               "0" if finished else "-1"], (why, rows)
        assert rows[0][5] == "4", (why, rows)
        counts = {r[1]: int(r[2]) for r in rows[1:11]}
        assert [r[1] for r in rows[1:11]] == STATES, (why, rows)
        assert sum(counts.values()) == 4, (why, rows)
        assert counts["ok"] == len(ok), (why, rows)
        assert counts["running"] == len(began - ok), (why, rows)
        assert counts["waiting"] == 4 - len(began | ok), (why, rows)
        if not conftest.WRAP:
            assert dr.run("-s").returncode == 0, why

        # -r: the torn record counts for nothing
        (dr.path / "ran").write_text("")
        must = set(graph) - ok
        must |= {n for n, pre in graph.items() if set(pre) & must}
        r = dr.run("-r", "-q")
        assert r.returncode == 0, (why, r.stderr)
        assert own(r.stderr) == "", (why, r.stderr)   # nothing to end: the run had ended
        assert ran(dr) == sorted(must), why
        n = 4 - len(must)
        summary(r.stdout, "4 jobs: 4 ok" + (" (%d of them by an earlier run)" % n if n else ""))
        after = j.read_text()
        assert after.startswith(whole_part), why
        rest = after[len(whole_part):]
        if torn and rest.startswith(torn + "\n"):
            rest = rest[len(torn) + 1:]       # ended with a newline, as the man page says
        # else: the torn fragment was cut off; either way, what this run wrote
        # is whole lines, none run together with the fragment
        assert rest.endswith("\n"), (why, rest)
        new = rest[:-1].split("\n")
        assert new[0].split("\t")[1:3] == ["run", new[0].split("\t")[2]], (why, new)
        assert all(whole(l) for l in new), (why, [l for l in new if not whole(l)])
        assert sorted(l.split("\t")[2] for l in new if l.split("\t")[1] == "resumed") == \
            sorted(ok), why
        assert sorted(l.split("\t")[2] for l in new if l.split("\t")[1] == "start") == \
            sorted(must), why


# --------------------------------------------------------------- disk full

@pytest.fixture
def small_disk(dr):
    """A 64K tmpfs at st (root only), unmounted after; returns a function
    that gives it more room."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with a small tmpfs the test mounts: needs root")
    mnt = dr.path / "st"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())

    def grow():
        subprocess.run(["mount", "-o", "remount,size=10m", str(mnt)], check=True)
    try:
        yield grow
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


FULL = re.compile(r"^dagrun: st/journal: No space left on device: no new job starts$", re.M)
FULL_ANY = re.compile(r"^dagrun: st/(journal|main\.log, error\.log or benchmarks\.log): "
                      r"No space left on device: no new job starts$", re.M)


def ledger(dr):
    p = dr.path / "ledger"
    return p.read_text().splitlines() if p.exists() else []


def check_journal_readable(dr, total):
    """Whole records, at most a torn last line; -s shows the run."""
    text = (dr.path / "st/journal").read_text()
    body = text[:text.rfind("\n") + 1]
    bad = [l for l in body.splitlines() if not whole(l)]
    assert bad == [], bad
    s = dr.run("-s", "-q")
    assert s.returncode == 0, s.stderr
    rows = [l.split("\t") for l in s.stdout.splitlines()]
    assert rows[0][2] in ("stopped", "ended") and rows[0][5] == str(total), rows
    counts = {r[1]: int(r[2]) for r in rows[1:11]}
    assert sum(counts.values()) == total, rows
    recs = records(dr, "st")
    assert counts["ok"] == sum(1 for f in recs if f[1] == "end" and f[4] == "ok"), rows
    assert dr.run("-s").returncode == 0


def test_full_disk_stops_new_jobs_and_resume_goes_on_once_there_is_room(dr, small_disk):
    # one job at a time: which job's record meets the full disk is then the
    # only question (a burst of launches is the next test's)
    n = 100
    ini = "[run]\nstate_dir = st\njobs = 1\n" + "".join(
        "[node j%03d]\ncmd = echo start j%03d >> ledger; yes j%03d | head -c 6000; "
        "echo end j%03d >> ledger; true\n" % (i, i, i, i) for i in range(n))
    r = dr.run(ini=ini)
    assert r.returncode == 1, r.stderr
    err = own(r.stderr)
    assert err.count("no new job starts") == 1, err
    # quick jobs: the journal meets the full disk before the logs are first
    # written, half a second in (unless valgrind slows dagrun down)
    assert (FULL_ANY if conftest.WRAP or conftest.EMULATED else FULL).search(err), err
    led = ledger(dr)
    began = {l.split()[1] for l in led if l.startswith("start")}
    assert 0 < len(began) < n, led
    # on_failure = stop: the jobs that had started finished
    assert {l.split()[1] for l in led if l.startswith("end")} == began
    # no job started after the error: the journal could record every start
    # but the one whose record failed
    recs = records(dr, "st")
    journaled = {f[2] for f in recs if f[1] == "start"}
    assert journaled <= began
    assert len(began - journaled) <= 1, sorted(began - journaled)
    m = re.search(r"^dagrun: %d jobs: (\d+) ok, (\d+) cancelled in [0-9.]+s$" % n, r.stdout, re.M)
    assert m and int(m.group(1)) == len(began) and int(m.group(2)) == n - len(began), r.stdout
    check_journal_readable(dr, n)
    okbefore = {f[2] for f in recs if f[1] == "end" and f[4] == "ok"}
    assert okbefore

    small_disk()
    mark = len(led)
    r = dr.run("-r", "-q")
    assert r.returncode == 0, r.stderr
    assert own(r.stderr) == ""
    summary(r.stdout, "%d jobs: %d ok (%d of them by an earlier run)" % (n, n, len(okbefore)))
    again = [l.split()[1] for l in ledger(dr)[mark:] if l.startswith("start")]
    assert not set(again) & okbefore, sorted(set(again) & okbefore)
    assert sorted(again) == sorted(set(again))
    assert {l.split()[1] for l in ledger(dr) if l.startswith("end")} == \
        {"j%03d" % i for i in range(n)}
    run = last_run(dr, "st")
    assert resumed(run) == sorted(okbefore)
    assert sorted(started(run)) == sorted(set("j%03d" % i for i in range(n)) - okbefore)
    assert set(ends(run).values()) == {"ok"}
    assert run[-1][1:3] == ["done", "0"]


@pytest.mark.parametrize("policy", ["stop", "abort"])
def test_full_disk_running_jobs_end_as_on_failure_says(dr, small_disk, policy):
    ini = ("[run]\nstate_dir = st\njobs = 2\nkill_grace = 5s\non_failure = %s\n"
           "[node slow]\n"
           "cmd = trap 'echo term slow >> ledger; exit 143' TERM; echo $$ > slow.pid; "
           "echo start slow >> ledger; i=0; "
           "while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; "
           "echo end slow >> ledger\n"
           "[node fill]\ncmd = echo start fill >> ledger; head -c 200000 /dev/zero; "
           "echo end fill >> ledger; true\n" % policy)
    ini += "".join("[node q%02d]\nafter = fill\ncmd = echo start q%02d >> ledger; "
                   "echo end q%02d >> ledger\n" % (i, i, i) for i in range(80))
    dr.write(ini)
    errf = dr.path / "stderr.txt"
    with open(errf, "w") as ef:
        p = dr.popen(stderr=ef)
    try:
        dr.wait_for(lambda: "no new job starts" in errf.read_text() or p.poll() is not None,
                    what="the write error")
        assert FULL_ANY.search(errf.read_text()), errf.read_text()
        slow = pidof(dr, "slow.pid")
        assert slow
        if policy == "stop":
            # the running job goes on; dagrun waits for it
            time.sleep(0.2)
            assert p.poll() is None and not gone(slow)
            (dr.path / "go").touch()
        out, _ = p.communicate(timeout=30 * SLOW)
    finally:
        (dr.path / "go").touch()
        stop(p)
    assert p.returncode == 1, errf.read_text()
    assert own(errf.read_text()).count("no new job starts") == 1
    led = ledger(dr)
    dr.wait_for(lambda: gone(slow), timeout=10, what="slow to be gone")
    if policy == "stop":
        assert "end slow" in led and "term slow" not in led, led
        assert re.search(r"^ok [0-9.]+s slow$", out, re.M), out
    else:
        assert "term slow" in led and "end slow" not in led, led
        assert re.search(r"^cancelled [0-9.]+s slow$", out, re.M), out
    began = {l.split()[1] for l in led if l.startswith("start")}
    journaled = {f[2] for f in records(dr, "st") if f[1] == "start"}
    assert len(began - journaled) <= 1, sorted(began - journaled)
    check_journal_readable(dr, 82)


def test_full_disk_met_by_the_last_flush_of_the_logs_exits_1(dr, small_disk):
    """The job fills the disk; the journal's records fit in its first page,
    but main.log, written for the first time at the end, cannot be."""
    if conftest.WRAP:
        pytest.skip("under valgrind the logs may be flushed while the job runs")
    r = dr.run(ini="[run]\nstate_dir = st\n[node fill]\ncmd = head -c 200000 /dev/zero; true\n")
    err = own(r.stderr)
    assert FULL_ANY.search(err) and err.count("no new job starts") == 1, err
    assert (dr.path / "st/main.log").read_text() == ""      # its lines were lost
    assert r.returncode == 1, (r.returncode, err)


def test_full_journal_in_a_burst_of_launches_starts_nothing_after_the_error(dr, small_disk):
    """40 jobs become ready at once and start in one go; the journal's page
    fills up in the middle of their start records. The start record that
    fails is the last job to start: the rest are cancelled."""
    if conftest.WRAP:
        pytest.skip("under valgrind the logs' first flush, not the burst, meets the full disk")
    n = 40
    ini = ("[run]\nstate_dir = st\njobs = %d\n[node fill]\ncmd = head -c 200000 /dev/zero; true\n"
           % n) + "".join("[node b%02d]\nafter = fill\ncmd = echo start b%02d >> ledger\n" % (i, i)
                          for i in range(n))
    dr.write(ini)
    # An earlier run fills the journal's first page so that the page ends in
    # the middle of the burst of start records (a page is 4096 bytes on tmpfs).
    probe = subprocess.Popen(["true"])
    probe.wait()
    d = len(str(probe.pid))             # digits of the PIDs to come
    t = len("1795474493.604375")
    run_rec = t + len("\trun\t") + d + len("\t%d\n" % (n + 1))
    start = lambda name: t + len("\tstart\t%s\t1\t" % name) + d + 1 + 16 + 1
    end_fill = t + len("\tend\tfill\t1\tok\t0\t0.001\n")
    before = run_rec + start("fill") + end_fill + (n // 2) * start("b00")
    room = 4096 - before
    head = "1700000000.000000\trun\t1\t0\n1700000000.000000\tadd\t"
    tail = "\n1700000000.000000\tdone\t0\t0.000\t0 ok\n"
    assert room > len(head) + len(tail) + 1
    pad = head + "p" * (room - len(head) - len(tail)) + tail
    assert len(pad) == room
    (dr.path / "st/journal").write_text(pad)
    r = dr.run("-q")
    assert r.returncode == 1, r.stderr
    assert FULL.search(own(r.stderr)), r.stderr
    recs = runs(records(dr, "st"))[-1]
    journaled = {f[2] for f in recs if f[1] == "start"} - {"fill"}
    # the test's own premise: the journal filled up within the burst
    assert 0 < len(journaled) < n, ("journal did not fill within the burst", sorted(journaled))
    began = {l.split()[1] for l in ledger(dr)}
    assert journaled <= began
    assert len(began - journaled) <= 1, "started after the error: %s" % sorted(began - journaled)
    m = re.search(r"^dagrun: %d jobs: (\d+) ok, (\d+) cancelled in [0-9.]+s$" % (n + 1),
                  r.stdout, re.M)
    assert m and int(m.group(1)) == len(began) + 1, r.stdout


# ------------------------------------------------------------- crash test

# Each job: a lock directory per node (a second copy finding it says so in
# `violations`), then start, a short sleep and end in the ledger. SIGTERM
# (from the next run, ending a dead run's job) removes the lock; it is held
# off while the lock is taken, so that the lock is never left behind.
CRASH_CMD = ("trap '' TERM; "
             "mkdir locks/{n} 2>/dev/null || echo \"CONCURRENT {n} $$\" >> violations; "
             "trap 'rmdir locks/{n} 2>/dev/null; exit 143' TERM; echo \"start {n} $$\" >> ledger; "
             "sleep {t}; echo \"end {n} $$\" >> ledger; rmdir locks/{n}")


def job_of(pid):
    """DAGRUN_JOB in a process's environment, or None."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"DAGRUN_JOB="):
            return e[len(b"DAGRUN_JOB="):].decode()
    return None


def random_dag(rng, n=200, layers=5):
    """{name: [prerequisites]}: layers of n/layers nodes, each node after 1-3
    nodes of the layer before and now and then one further back."""
    names = ["n%03d" % i for i in range(n)]
    per = n // layers
    layer = {m: min(i // per, layers - 1) for i, m in enumerate(names)}
    pre = {}
    for m in names:
        k = layer[m]
        if k == 0:
            pre[m] = []
            continue
        prev = [x for x in names if layer[x] == k - 1]
        chosen = set(rng.sample(prev, rng.randint(1, 3)))
        if k > 1 and rng.random() < 0.3:
            chosen.add(rng.choice([x for x in names if layer[x] < k - 1]))
        pre[m] = sorted(chosen)
    return pre


@pytest.mark.heavy
def test_crash_200_nodes_killed_100_times_then_resumed(dr, reaper):
    rng = random.Random(7)
    graph = random_dag(rng)
    (dr.path / "locks").mkdir()
    ini = "[run]\njobs = 4\n"
    for m, pre in graph.items():
        t = "%.3f" % rng.uniform(0.01, 0.06)
        ini += "[node %s]\ncmd = %s\n" % (m, CRASH_CMD.format(n=m, t=t))
        if pre:
            ini += "after = %s\n" % " ".join(pre)
    dr.write(ini)
    led = dr.path / "ledger"

    def ledger_lines(pids=False):
        """"start NAME", "end NAME" (with the job's PID after if pids)"""
        lines = led.read_text().splitlines() if led.exists() else []
        return lines if pids else [l.rsplit(" ", 1)[0] for l in lines]

    kills, rounds, terminated = 0, 0, 0
    inflight = {m: 0 for m in graph}     # kills at which the node was in flight
    final = None
    t0 = time.monotonic()
    while kills < 100:
        rounds += 1
        base = len(ledger_lines())
        p = dr.popen("-j", "4", *(["-r"] if rounds > 1 else []))
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.06))                 # a random moment ...
        else:
            grow = rng.randint(1, 8)                         # ... or after some progress
            end = time.monotonic() + 10
            while (len(ledger_lines()) < base + grow and p.poll() is None
                   and time.monotonic() < end):
                time.sleep(0.002)
        now = set()      # the nodes in flight at this kill
        if p.poll() is None:
            # SIGKILL; half the time its guard too, so that the next run
            # alone has to end the jobs left running
            sigkill(p, guard=rng.random() < 0.5)
            kills += 1
            for pid, _, st in reaper.orphans():     # left running, recorded or not
                job = job_of(pid)
                if st not in ("Z", "X") and job in graph:
                    now.add(job)
        out, err = p.communicate(timeout=30)
        terminated += err.count("still running from an earlier run")
        if p.returncode != -signal.SIGKILL:
            assert p.returncode == 0, err
            final = out
            break
        # in flight at this kill: started and not ended, for the journal of
        # the run just killed or for the jobs themselves
        recs = records(dr)
        killed = [r for r in runs(recs) if r[0][2] == str(p.pid)]
        if killed:
            now |= set(started(killed[0])) - set(ends(killed[0]))
        copies = [l.split() for l in ledger_lines(pids=True)]
        ended = {(c[1], c[2]) for c in copies if c[0] == "end"}
        for c in copies:
            if c[0] == "start" and (c[1], c[2]) not in ended and not gone(int(c[2])):
                now.add(c[1])
        for m in now:
            inflight[m] += 1
        assert time.monotonic() - t0 < 120 * SLOW, "the kills take too long"
    if final is None:
        r = dr.run("-r", "-j", "4", "-q", timeout=60)
        rounds += 1
        terminated += r.stderr.count("still running from an earlier run")
        assert r.returncode == 0, r.stderr
        summary_out = r.stdout
    else:
        summary_out = final

    lines = ledger_lines()
    recs = records(dr)
    extra = {m: lines.count("end " + m) for m in graph if lines.count("end " + m) > 1}
    starts = sum(1 for l in lines if l.startswith("start"))
    v = dr.path / "violations"
    violations = v.read_text().splitlines() if v.exists() else []
    # a copy of a job whose start the journal never recorded: spawned, and
    # dagrun killed before it wrote the record
    recorded = {f[4] for f in recs if f[1] == "start"}
    unrecorded = sorted({tuple(l.split()[1:]) for l in ledger_lines(pids=True)
                         if l.startswith("start") and l.split()[2] not in recorded})
    print("\ncrash test: %d kills, %d rounds, %d jobs ended by the next run as left running, "
          "%d job starts for 200 nodes, %d nodes ran to their end more than once (%d extra), "
          "%d nodes in flight at some kill, %d copies never recorded in the journal %s, "
          "violations %s, %.1fs"
          % (kills, rounds, terminated, starts, len(extra), sum(extra.values()) - len(extra),
             sum(1 for m in inflight if inflight[m]), len(unrecorded), unrecorded, violations,
             time.monotonic() - t0))
    # every node ended
    assert all(("end " + m) in lines for m in graph), [m for m in graph if "end " + m not in lines]
    # no job started before its prerequisites had ended
    seen_end = set()
    for l in lines:
        kind, m = l.split()
        if kind == "start":
            missing = [q for q in graph[m] if q not in seen_end]
            assert not missing, (m, missing)
        else:
            seen_end.add(m)
    # a job the journal recorded ok never started again (resumed is no start)
    first_ok = {}
    again = {}
    for i, f in enumerate(recs):
        if f[1] == "end" and f[4] == "ok":
            first_ok.setdefault(f[2], i)
        elif f[1] == "start" and f[2] in first_ok:
            again[f[2]] = again.get(f[2], 0) + 1
    assert again == {}, again
    assert set(first_ok) == set(graph)
    # a job ran to its end more than once only if it was in flight at a kill
    assert all(extra[m] <= 1 + inflight[m] for m in extra), \
        {m: (extra[m], inflight[m]) for m in extra if extra[m] > 1 + inflight[m]}
    # the last run: every job ok, most of them taken from earlier runs
    last = runs(recs)[-1]
    assert last[-1][1:3] == ["done", "0"], last[-1]
    took = resumed(last)
    assert set(took) | set(started(last)) == set(graph)
    assert set(ends(last).values()) <= {"ok"}
    summary(summary_out, "200 jobs: 200 ok (%d of them by an earlier run)" % len(took))
    # and no job ran beside a copy of itself (the next run ends the jobs the
    # killed run left running before it starts anything)
    assert violations == [], (violations, "copies without a start record:", unrecorded)


def test_job_started_just_before_dagrun_died_unrecorded_never_runs_twice(dr, reaper):
    """strace holds every write of dagrun for a second: the job is started,
    its start record not written yet, when dagrun is killed. The next run
    must not start a second copy beside the first."""
    strace = shutil.which("strace")
    if not strace or conftest.WRAP:
        pytest.skip("needs strace (and no wrapper) to hold dagrun between a start and its record")
    dr.write("[node a]\ncmd = trap 'rmdir lk 2>/dev/null; exit 143' TERM; "
             "mkdir lk 2>/dev/null || echo CONCURRENT >> violations; echo $$ >> a.pids; i=0; "
             "while [ ! -e go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; "
             "rmdir lk 2>/dev/null; true\n")
    p = subprocess.Popen([strace, "-o", "/dev/null", "-e", "trace=write",
                          "-e", "inject=write:delay_enter=1000000", conftest.BIN, "-q"],
                         cwd=dr.path, env=traced_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pids = lambda: [int(x) for x in (dr.path / "a.pids").read_text().split()] \
        if (dr.path / "a.pids").exists() else []
    q = None
    try:
        dr.wait_for(lambda: pids() or p.poll() is not None, what="the first copy of a")
        kids = [int(d) for d in os.listdir("/proc") if d.isdigit() and
                os.path.exists("/proc/%s/stat" % d) and
                open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()[1] == str(p.pid)]
        assert len(kids) == 1, kids
        # the premise: a runs, and the journal does not say so yet
        assert "a" not in started(last_run(dr)), "dagrun wrote the record before the kill"
        os.kill(kids[0], signal.SIGKILL)
        p.wait(timeout=10)
        first = pids()[0]   # the guard, or the next run, ends it: never beside a copy
        q = dr.popen("-r")
        end = time.monotonic() + 5 * SLOW
        while (len(pids()) < 2 and not (dr.path / "violations").exists() and q.poll() is None
               and time.monotonic() < end):
            time.sleep(0.01)
        (dr.path / "go").touch()
        out, err = q.communicate(timeout=30 * SLOW)
        assert not (dr.path / "violations").exists(), "a second copy of a ran beside the first"
        assert q.returncode == 0, err
        assert len(pids()) == 2 and gone(first)
        assert ends(last_run(dr)) == {"a": "ok"}
    finally:
        (dr.path / "go").touch()
        if p.poll() is None:
            p.kill()
            p.wait()
        if q is not None:
            stop(q)
        for pid in pids():
            killgroup(pid)
