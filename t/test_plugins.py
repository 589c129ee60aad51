"""Plugins: the [run] capacity command and [probe NAME] commands.

A plugin prints one number; dagrun runs it every so often beside the jobs
and holds launches while the capacity is used up or a probe's value is
outside its min/max.  The tests give the plugins files to read that the
test rewrites while the run goes (the value, or how to misbehave), and the
jobs wait for files the test creates or for lines a plugin appends (so the
run lasts exactly as many plugin readings as the test needs).  Nothing
depends on how fast the machine is: every wait is bounded and waits for an
event, never for a fixed time."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import conftest
from conftest import clean_env, gone

PY = sys.executable
SLOW = conftest.SLOW

# The jobs' helper.
#   --log F       append "start JOB t" first and "end JOB t" last (O_APPEND)
#   --barrier N   after "start", wait (bounded) until N jobs have started in F
#   --wait F      wait (bounded) for file F; exit 9 if it never comes
#   --lines F:N   wait (bounded) until file F has N lines; exit 9 if not
#   --reaped F    wait (bounded) until the process whose PID is the last line
#                 of F is gone for good (not even a zombie): its parent reaped it
#   --exit N      exit status
JOB = r'''
import os, sys, time
a = sys.argv[1:]
opt = dict(zip(a[::2], a[1::2]))
job = os.environ.get("DAGRUN_JOB", "?")

def put(path, s):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.write(fd, s.encode())
    os.close(fd)

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""

def until(pred, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()

def nlines(path):
    return sum(1 for l in read(path).splitlines(True) if l.endswith("\n"))

def reaped(path):
    pids = read(path).split()
    return bool(pids) and not os.path.exists("/proc/" + pids[-1])

log = opt.get("--log")
if log:
    put(log, "start %s %.6f\n" % (job, time.time()))
status = int(opt.get("--exit", 0))
if "--barrier" in opt:
    n = int(opt["--barrier"])
    until(lambda: read(log).count("start ") >= n, 15)
if "--wait" in opt and not until(lambda: os.path.exists(opt["--wait"]), 30):
    status = 9
if "--lines" in opt:
    f, n = opt["--lines"].rsplit(":", 1)
    if not until(lambda: nlines(f) >= int(n), 30):
        status = 9
if "--reaped" in opt and not until(lambda: reaped(opt["--reaped"]), 30):
    status = 9
if log:
    put(log, "end %s %.6f\n" % (job, time.time()))
sys.exit(status)
'''


def setup_job(dr):
    (dr.path / "job.py").write_text(JOB)
    return "%s job.py" % PY


# ------------------------------------------------------------------ helpers

def journal(dr, state_dir=".dagrun"):
    p = dr.path / state_dir / "journal"
    return dr.journal(state_dir) if p.exists() else []


def started(dr, state_dir=".dagrun"):
    return [f[1] for f in journal(dr, state_dir) if f[0] == "start"]


def ended(dr):
    return [f[1] for f in journal(dr) if f[0] == "end"]


def states(dr):
    return {f[1]: f[3] for f in journal(dr) if f[0] == "end"}


def logtext(dr, name, state_dir=".dagrun"):
    p = dr.path / state_dir / name
    return p.read_text() if p.exists() else ""


def lines(dr, name="main.log", level=None, state_dir=".dagrun"):
    """The message texts of main.log or error.log (time and level dropped)."""
    out = []
    for l in logtext(dr, name, state_dir).splitlines():
        f = l.split("\t", 2)
        if len(f) == 3 and (level is None or f[1] == level):
            out.append(f[2])
    return out


def waits(dr):
    p = "waiting for resources: "
    return [l[len(p):] for l in lines(dr) if l.startswith(p)]


def nlines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


def ledger(dr, name="ledger"):
    """[(kind, job)] of a --log file, in file order."""
    p = dr.path / name
    return [tuple(l.split()[:2]) for l in p.read_text().splitlines()] if p.exists() else []


def max_in_flight(ev):
    n = top = 0
    for kind, _ in ev:
        n += 1 if kind == "start" else -1
        top = max(top, n)
    return top


def journal_in_flight(dr):
    """The most jobs in flight by the journal's start and end records."""
    ev, live = [], set()
    for f in journal(dr):
        if f[0] == "start":
            live.add(f[1])
            ev.append(("start", f[1]))
        elif f[0] == "end" and f[1] in live:
            live.discard(f[1])
            ev.append(("end", f[1]))
    return max_in_flight(ev)


def finish(p, timeout=40):
    try:
        out, err = p.communicate(timeout=timeout * SLOW)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=30)
        raise AssertionError("dagrun did not end: " + out + err)
    return out, err


def stop(p):
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)


def pids_in(path):
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def all_gone(dr, pids):
    """Whether every PID is gone, allowing a moment for a SIGKILL sent just
    before dagrun exited to take effect (a process not killed stays)."""
    try:
        dr.wait_for(lambda: all(gone(pid) for pid in pids), 5, "the processes to die")
    except AssertionError:
        pass
    return [pid for pid in pids if not gone(pid)] == []


def kill_leftovers(pids):
    """Clean up processes a plugin of this test left behind (by PID)."""
    for pid in pids:
        if not gone(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def put(path, text):
    """Rewrite a file the plugins read, atomically."""
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


# ------------------------------------------------------------ capacity holds

def nodes(job, n, args, prefix="n"):
    return "".join("[node %s%d]\ncmd = %s %s\n" % (prefix, i, job, args) for i in range(n))


def test_capacity_bounds_the_jobs_in_flight_and_raising_it_lets_more_run(dr):
    job = setup_job(dr)
    cap = dr.path / "cap"
    put(cap, "2\n")
    ini = ("[run]\ncapacity = echo r >> readings; cat cap\ncapacity_every = 20ms\n"
           "[resources]\npoll = 100ms\n" + nodes(job, 6, "--log ledger --wait go"))
    p = dr.popen("-j", "6", ini=ini)
    try:
        dr.wait_for(lambda: "capacity: 2 running, the plugin allows 2" in waits(dr), 20,
                    "the capacity wait at 2 running")
        assert len(started(dr)) == 2
        n = nlines(dr.path / "readings")
        dr.wait_for(lambda: nlines(dr.path / "readings") >= n + 3, 20, "three more readings")
        assert len(started(dr)) == 2, started(dr)
        assert "capacity: 2" in lines(dr) and "capacity: 2: launching held" in lines(dr)
        put(cap, "4\n")
        dr.wait_for(lambda: len(started(dr)) == 4, 20, "two more jobs under capacity 4")
        dr.wait_for(lambda: "capacity: 4 running, the plugin allows 4" in waits(dr), 20,
                    "the capacity wait at 4 running")
        assert len(started(dr)) == 4 and ended(dr) == []
        (dr.path / "go").touch()
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert max_in_flight(ledger(dr)) == 4
    assert journal_in_flight(dr) == 4
    assert sorted(states(dr).values()) == ["ok"] * 6
    # a reading that did not change is not logged again
    assert lines(dr).count("capacity: 2") == 1


def test_capacity_0_holds_everything_even_with_nothing_running_until_it_changes(dr):
    job = setup_job(dr)
    cap = dr.path / "cap"
    put(cap, "0\n")
    ini = ("[run]\ncapacity = cat cap\ncapacity_every = 20ms\n[resources]\npoll = 100ms\n"
           + nodes(job, 3, "--log ledger --wait go"))
    p = dr.popen("-j", "3", ini=ini)
    try:
        dr.wait_for(lambda: waits(dr).count("capacity: 0 running, the plugin allows 0") >= 3,
                    20, "three capacity waits with nothing running")
        assert started(dr) == [] and ledger(dr) == []
        assert "capacity: 0: launching held" in lines(dr)
        put(cap, "1\n")
        dr.wait_for(lambda: len(started(dr)) == 1, 20, "one job under capacity 1")
        dr.wait_for(lambda: "capacity: 1 running, the plugin allows 1" in waits(dr), 20,
                    "the capacity wait at 1 running")
        assert len(started(dr)) == 1
        (dr.path / "go").touch()
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert max_in_flight(ledger(dr)) == 1
    assert sorted(states(dr).values()) == ["ok"] * 3
    held = lines(dr).index("capacity: 0: launching held")
    assert "capacity: 1" not in lines(dr)[:held]


@pytest.mark.parametrize("j,cap,most", [(2, 5, 2), (4, 2, 2)])
def test_capacity_and_j_together_the_smaller_wins(dr, j, cap, most):
    """Each job waits until `most` jobs have started: the first ones meet,
    so the limit is reached; the ledger shows it is never passed."""
    job = setup_job(dr)
    ini = ("[run]\ncapacity = echo %d\ncapacity_every = 20ms\n" % cap
           + nodes(job, 6, "--log ledger --barrier %d" % most))
    r = dr.run("-j", j, ini=ini)
    assert r.returncode == 0, r.stderr
    assert max_in_flight(ledger(dr)) == most, ledger(dr)


def test_launching_waits_for_the_first_capacity_reading(dr):
    job = setup_job(dr)
    ini = ("[run]\ncapacity = i=0; while [ ! -e answer ] && [ $i -lt 3000 ]; do sleep 0.01; "
           "i=$((i+1)); done; cat answer\ncapacity_timeout = 60s\n[resources]\npoll = 100ms\n"
           "[node a]\ncmd = %s --log ledger\n" % job)
    p = dr.popen(ini=ini)
    try:
        dr.wait_for(lambda: waits(dr).count("capacity: no reading yet") >= 3, 20,
                    "three 'capacity: no reading yet' waits")
        assert started(dr) == []
        put(dr.path / "answer", "1\n")
        out, err = finish(p)
    finally:
        (dr.path / "answer").touch()
        stop(p)
    assert p.returncode == 0, err
    assert states(dr) == {"a": "ok"}
    assert "capacity: 1" in lines(dr)


def test_launching_waits_for_the_first_probe_reading(dr):
    job = setup_job(dr)
    ini = ("[probe slow]\ncmd = i=0; while [ ! -e answer ] && [ $i -lt 3000 ]; do sleep 0.01; "
           "i=$((i+1)); done; cat answer\nmax = 5\ntimeout = 60s\n[resources]\npoll = 100ms\n"
           "[node a]\ncmd = %s --log ledger\n" % job)
    p = dr.popen(ini=ini)
    try:
        dr.wait_for(lambda: waits(dr).count("probe slow: no reading yet") >= 3, 20,
                    "three 'probe slow: no reading yet' waits")
        assert started(dr) == []
        put(dr.path / "answer", "1\n")
        out, err = finish(p)
    finally:
        (dr.path / "answer").touch()
        stop(p)
    assert p.returncode == 0, err
    assert states(dr) == {"a": "ok"}
    assert "slow: 1" in lines(dr)
    assert set(waits(dr)) == {"probe slow: no reading yet"}, waits(dr)


# ------------------------------------------------------- the plugins' env

ENVCMD = "env > env.$$; echo --- >> env.$$; cat env.$$ >> envlog; rm -f env.$$; "

ENV_GRAPH = """
[node ok_a]
cmd = %(job)s
[node bad_b]
cmd = %(job)s --exit 3
[node hold_c]
cmd = %(job)s --wait go
[node after_c]
after = hold_c
cmd = %(job)s
"""


def env_records(dr):
    p = dr.path / "envlog"
    if not p.exists():
        return []
    recs = []
    for chunk in p.read_text().split("---\n")[:-1]:
        recs.append(dict(l.split("=", 1) for l in chunk.splitlines() if "=" in l))
    return recs


COUNTS = ("DAGRUN_RUNNING", "DAGRUN_WAITING", "DAGRUN_DONE", "DAGRUN_FAILED", "DAGRUN_OK",
          "DAGRUN_JOBS")


@pytest.mark.parametrize("kind", ["capacity", "probe"])
def test_plugin_environment_has_consistent_counts_and_no_job_variables(dr, kind):
    job = setup_job(dr)
    if kind == "capacity":
        head = "[run]\ncapacity = %secho 3\ncapacity_every = 20ms\n" % ENVCMD
    else:
        head = "[probe env]\ncmd = %secho 0\nmax = 1\nevery = 20ms\n" % ENVCMD
    env = clean_env(PLUGTEST="yes", DAGRUN_NODE="leak", DAGRUN_JOB="leak",
                    DAGRUN_INPUT="leak", DAGRUN_ATTEMPT="leak")
    p = dr.popen("-k", "-j", "3", ini=head + ENV_GRAPH % {"job": job}, env=env)
    want = {"DAGRUN_RUNNING": "1", "DAGRUN_WAITING": "1", "DAGRUN_DONE": "2",
            "DAGRUN_FAILED": "1", "DAGRUN_OK": "1", "DAGRUN_JOBS": "3"}
    try:
        dr.wait_for(lambda: any(all(r.get(k) == v for k, v in want.items())
                                for r in env_records(dr)), 20,
                    "a reading while hold_c runs after ok_a and bad_b ended")
        (dr.path / "go").touch()
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 1, err
    assert states(dr) == {"ok_a": "ok", "bad_b": "failed", "hold_c": "ok", "after_c": "ok"}
    recs = env_records(dr)
    # the first reading comes before anything may launch
    assert {k: recs[0][k] for k in COUNTS} == {
        "DAGRUN_RUNNING": "0", "DAGRUN_WAITING": "4", "DAGRUN_DONE": "0",
        "DAGRUN_FAILED": "0", "DAGRUN_OK": "0", "DAGRUN_JOBS": "3"}
    for r in recs:
        c = {k: int(r[k]) for k in COUNTS}
        assert c["DAGRUN_RUNNING"] + c["DAGRUN_WAITING"] + c["DAGRUN_DONE"] == 4, r
        assert c["DAGRUN_OK"] + c["DAGRUN_FAILED"] <= c["DAGRUN_DONE"], r
        assert 0 <= c["DAGRUN_RUNNING"] <= 3 and c["DAGRUN_JOBS"] == 3, r
        assert r["PLUGTEST"] == "yes"
        for k in ("DAGRUN_NODE", "DAGRUN_JOB", "DAGRUN_INPUT", "DAGRUN_OUTPUT",
                  "DAGRUN_ATTEMPT", "DAGRUN_STATE_DIR", "DAGRUN_SPAWN"):
            assert k not in r, (k, r)


def test_plugin_stdin_is_dev_null(dr):
    """dagrun's own stdin is an open pipe nobody writes: a plugin reading
    its stdin must see end of file at once, not hang until its timeout."""
    ini = ("[probe in]\ncmd = readlink /proc/$$/fd/0 > stdin_of; cat > /dev/null; echo 1\n"
           "max = 5\ntimeout = 30s\n[node a]\ncmd = touch ran\n")
    p = dr.popen(ini=ini, stdin=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=20 * SLOW)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert (dr.path / "ran").exists()
    assert (dr.path / "stdin_of").read_text().strip() == "/dev/null"
    assert "in: 1" in lines(dr)
    assert lines(dr, "error.log") == []


@pytest.mark.parametrize("shell", ["/bin/bash", "bash"])
def test_plugin_runs_with_the_run_shell(dr, shell):
    ini = ("[run]\nshell = %s\n[probe sh]\ncmd = echo \"$BASH_VERSION\" > bash_version; "
           "echo 1\nmax = 5\n[node a]\ncmd = echo \"$BASH_VERSION\" > job_bash_version\n"
           % shell)
    r = dr.run(ini=ini)
    assert r.returncode == 0, r.stderr
    assert (dr.path / "job_bash_version").read_text()[:1].isdigit()
    assert lines(dr, "error.log") == []
    assert (dr.path / "bash_version").read_text()[:1].isdigit()
    assert "sh: 1" in lines(dr)


# ------------------------------------------------------------ probes hold

PROBES = {
    # key lines, value that holds, value that releases, the wait text, name
    "max": ("max = 5", "10", "3", "probe load: 10 > max 5"),
    "min": ("min = 5", "1", "7", "probe load: 1 < min 5"),
    "negative-decimal-min": ("min = -2.5", "-3.5", "0.25", "probe load: -3.5 < min -2.5"),
    "between": ("min = 1\nmax = 2", "2.5", "1.5", "probe load: 2.5 > max 2"),
}


@pytest.mark.parametrize("case", list(PROBES))
def test_probe_holds_launches_while_outside_and_releases_them(dr, case):
    bounds, hold, release, text = PROBES[case]
    job = setup_job(dr)
    val = dr.path / "val"
    put(val, hold + "\n")
    ini = ("[resources]\npoll = 100ms\n[probe load]\ncmd = cat val\n%s\nevery = 20ms\n"
           % bounds + nodes(job, 2, "--log ledger"))
    p = dr.popen("-j", "2", ini=ini)
    try:
        dr.wait_for(lambda: waits(dr).count(text) >= 3, 20, "three waits: " + text)
        assert started(dr) == [] and ledger(dr) == []
        put(val, release + "\n")
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert sorted(states(dr).values()) == ["ok", "ok"]
    mine = [l for l in lines(dr) if l.startswith("load: ")]
    # the first reading; held; allowed (a new good value is not logged itself)
    assert mine == ["load: %s" % hold, "load: %s: launching held" % hold,
                    "load: %s: launching allowed" % release], mine
    assert lines(dr, "error.log") == []


@pytest.mark.parametrize("bounds,value", [("max = 5", "5"), ("min = 5", "5"),
                                          ("min = -1\nmax = 1", "-1")])
def test_probe_value_on_its_bound_does_not_hold(dr, bounds, value):
    ini = "[probe p]\ncmd = echo %s\n%s\n[node a]\ncmd = touch ran\n" % (value, bounds)
    r = dr.run(ini=ini)
    assert r.returncode == 0, r.stderr
    assert (dr.path / "ran").exists()
    assert waits(dr) == [] or all("no reading yet" in w for w in waits(dr)), waits(dr)
    assert "p: %s" % value in lines(dr)
    assert not any("launching held" in l for l in lines(dr))


def test_a_probe_without_min_or_max_only_logs_its_reading(dr):
    r = dr.run(ini="[probe p]\ncmd = echo 1e6\n[node a]\ncmd = touch ran\n")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "ran").exists()
    assert "p: 1e+06" in lines(dr) or "p: 1000000" in lines(dr), lines(dr)
    assert not any("launching" in l for l in lines(dr))


def test_a_plugin_never_runs_twice_at_once(dr):
    """Each run takes longer than `every`: the next starts only after it."""
    job = setup_job(dr)
    ini = ("[probe slow]\ncmd = echo start >> pl; sleep 0.1; echo end >> pl; echo 1\n"
           "every = 10ms\n[node a]\ncmd = %s --lines pl:8\n" % job)
    r = dr.run(ini=ini)
    assert r.returncode == 0, r.stderr
    ev = (dr.path / "pl").read_text().split()
    assert len(ev) >= 8
    done = ev if ev[-1] == "end" else ev[:-1]         # the last run may have been cut short
    assert done == ["start", "end"] * (len(done) // 2), ev


@pytest.mark.parametrize("args,ini,want", [(["-j", "0"], "", "0"), (["-j", "5"], "", "5"),
                                           ([], "[run]\njobs = 4\n", "4")])
def test_dagrun_jobs_is_the_job_limit(dr, args, ini, want):
    r = dr.run(*args, ini=ini + "[probe p]\ncmd = echo $DAGRUN_JOBS > seen; echo 1\n"
                                "[node a]\ncmd = true\n")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "seen").read_text() == want + "\n"


def test_probe_wait_timeout_exits_4_naming_the_probe(dr):
    ini = ("[resources]\nwait_timeout = 500ms\npoll = 100ms\n[probe conn]\ncmd = echo 10\n"
           "max = 5\nevery = 50ms\n[node a]\ncmd = touch ran\n[node b]\ncmd = touch ran_b\n")
    t0 = time.monotonic()
    r = dr.run("-j", "2", ini=ini)
    took = time.monotonic() - t0
    assert r.returncode == 4, r.stderr
    assert "resource wait timed out: probe conn: 10 > max 5" in r.stderr
    assert "resource wait timed out: probe conn: 10 > max 5" in lines(dr, "error.log")
    assert started(dr) == []
    assert not (dr.path / "ran").exists() and not (dr.path / "ran_b").exists()
    assert took < 15 * SLOW


def test_capacity_wait_timeout_exits_4_naming_the_capacity(dr):
    ini = ("[run]\ncapacity = echo 0\ncapacity_every = 50ms\n"
           "[resources]\nwait_timeout = 500ms\npoll = 100ms\n[node a]\ncmd = touch ran\n")
    r = dr.run(ini=ini)
    assert r.returncode == 4, r.stderr
    assert "resource wait timed out: capacity: 0 running, the plugin allows 0" in r.stderr
    assert not (dr.path / "ran").exists()


def test_two_probes_each_hold_on_their_own(dr):
    job = setup_job(dr)
    put(dr.path / "va", "10\n")
    put(dr.path / "vb", "10\n")
    ini = ("[resources]\npoll = 100ms\n"
           "[probe pa]\ncmd = cat va\nmax = 5\nevery = 20ms\n"
           "[probe pb]\ncmd = cat vb\nmax = 5\nevery = 20ms\n"
           "[node a]\ncmd = %s\n" % job)
    p = dr.popen(ini=ini)
    try:
        dr.wait_for(lambda: "pa: 10: launching held" in lines(dr), 20, "pa to hold")
        put(dr.path / "va", "1\n")
        dr.wait_for(lambda: "pa: 1: launching allowed" in lines(dr), 20, "pa to allow")
        dr.wait_for(lambda: waits(dr)[-1:] == ["probe pb: 10 > max 5"] and
                    waits(dr).count("probe pb: 10 > max 5") >= 2, 20, "pb alone to hold")
        assert started(dr) == []
        put(dr.path / "vb", "2\n")
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert states(dr) == {"a": "ok"}


# ------------------------------------------------------------ broken plugins

BROKEN = {
    # kind, the plugin's command (after counting its run), the logged message
    "capacity-exit": ("capacity", "echo complaint >&2; exit 3",
                      "capacity: exit 3, limits unchanged (stderr: .dagrun/logs/~capacity.err)"),
    "capacity-text": ("capacity", "echo lots",
                      "capacity: expected a whole number from 0, got 'lots': limits unchanged"),
    "capacity-empty": ("capacity", "true",
                       "capacity: expected a whole number from 0, got '': limits unchanged"),
    "capacity-negative": ("capacity", "echo -1",
                          "capacity: expected a whole number from 0, got '-1': limits unchanged"),
    "capacity-fraction": ("capacity", "echo 1.5",
                          "capacity: expected a whole number from 0, got '1.5': limits unchanged"),
    "capacity-two-numbers": ("capacity", "echo 1 2",
                             "capacity: expected a whole number from 0, got '1 2': limits unchanged"),
    "probe-exit": ("probe", "exit 7",
                   "pr: exit 7, limits unchanged (stderr: .dagrun/logs/~probe.pr.err)"),
    "probe-not-found": ("probe", "no-such-command-xyz",
                        "pr: exit 127, limits unchanged (stderr: .dagrun/logs/~probe.pr.err)"),
    "probe-text": ("probe", "echo xx", "pr: expected a number, got 'xx': limits unchanged"),
    "probe-empty": ("probe", "true", "pr: expected a number, got '': limits unchanged"),
    "probe-trailing": ("probe", "echo 12abc",
                       "pr: expected a number, got '12abc': limits unchanged"),
}


def broken_ini(kind, cmd, job, extra="", runs=3):
    """The plugin counts its runs in `count`; the job waits for `runs` of
    them, so the run sees the failure repeated."""
    cmd = "echo r >> count; " + cmd
    if kind == "capacity":
        head = "[run]\ncapacity = %s\ncapacity_every = 20ms\n%s" % (cmd, extra)
    else:
        # a value that held (10 > max 1) is what a broken probe must not invent
        head = "[probe pr]\ncmd = %s\nmax = 1\nevery = 20ms\n%s" % (cmd, extra)
    return head + "[node a]\ncmd = %s --lines count:%d\n" % (job, runs)


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_plugin_is_logged_once_changes_nothing_and_blocks_nothing(dr, case):
    kind, cmd, message = BROKEN[case]
    job = setup_job(dr)
    r = dr.run(ini=broken_ini(kind, cmd, job))
    assert r.returncode == 0, r.stderr
    assert states(dr) == {"a": "ok"}
    assert nlines(dr.path / "count") >= 3
    errs = lines(dr, "error.log")
    assert errs == [message], errs                    # once, however often it failed
    assert lines(dr, "main.log", "ERROR") == [message]
    assert not any("launching held" in l for l in lines(dr))
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr


def test_a_hung_plugin_is_killed_with_its_process_group_after_its_timeout(dr):
    """The plugin's shell starts a sleep and waits: at the timeout both get
    SIGKILL (the group), the failure changes nothing, the run goes on."""
    job = setup_job(dr)
    cmd = "echo $$ >> shpids; sleep 30 & echo $! >> sleeppids; wait"
    ini = ("[probe hang]\ncmd = %s\nmax = 1\ntimeout = 300ms\nevery = 20ms\n"
           "[node a]\ncmd = %s --lines sleeppids:2\n" % (cmd, job))
    t0 = time.monotonic()
    try:
        r = dr.run(ini=ini)
    finally:
        kill_leftovers(pids_in(dr.path / "sleeppids") + pids_in(dr.path / "shpids"))
    took = time.monotonic() - t0
    pids = pids_in(dr.path / "shpids") + pids_in(dr.path / "sleeppids")
    assert r.returncode == 0, r.stderr
    assert states(dr) == {"a": "ok"}
    assert "hang: no answer after 0.3s: killed, limits unchanged" in lines(dr, "error.log")
    assert "hang: no answer after 0.3s: killed, limits unchanged" in lines(dr, "main.log", "ERROR")
    assert len(pids) >= 4
    assert all_gone(dr, pids), [pid for pid in pids if not gone(pid)]
    assert took < 20 * SLOW


@pytest.mark.parametrize("kind", ["capacity", "probe"])
def test_repeated_timeouts_are_logged_once(dr, kind):
    job = setup_job(dr)
    extra = "capacity_timeout = 200ms\n" if kind == "capacity" else "timeout = 200ms\n"
    r = dr.run(ini=broken_ini(kind, "sleep 30", job, extra))
    assert r.returncode == 0, r.stderr
    name = "capacity" if kind == "capacity" else "pr"
    assert lines(dr, "error.log") == ["%s: no answer after 0.2s: killed, limits unchanged" % name]


def test_a_background_child_holding_stdout_open_is_bounded_by_the_timeout(dr):
    """The plugin's shell prints a value and exits, but a child it left in
    the background keeps the pipe open: the answer is not complete until
    the timeout, then the group is killed and the reading counts as none."""
    job = setup_job(dr)
    ini = ("[probe bg]\ncmd = sleep 30 & echo $! >> bgpids; echo 7\nmax = 5\ntimeout = 500ms\n"
           "[node a]\ncmd = %s --log ledger\n" % job)
    t0 = time.monotonic()
    try:
        r = dr.run(ini=ini)
    finally:
        kill_leftovers(pids_in(dr.path / "bgpids"))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert states(dr) == {"a": "ok"}
    assert took < 15 * SLOW                       # not the 30 s of the sleep
    assert "bg: no answer after 0.5s: killed, limits unchanged" in lines(dr, "error.log")
    assert "bg: 7" not in lines(dr)
    assert not any("launching held" in l for l in lines(dr))
    assert all_gone(dr, pids_in(dr.path / "bgpids"))


def test_a_failure_keeps_the_previous_reading_and_a_good_one_is_logged_again(dr):
    job = setup_job(dr)
    mode = dr.path / "mode"
    put(mode, "10\n")
    ini = ("[resources]\npoll = 100ms\n[probe pr]\n"
           "cmd = echo r >> count; m=$(cat mode); if [ \"$m\" = fail ]; then exit 3; fi; "
           "echo \"$m\"\nmax = 5\nevery = 20ms\n[node a]\ncmd = %s --log ledger\n" % job)
    p = dr.popen(ini=ini)
    try:
        dr.wait_for(lambda: "pr: 10: launching held" in lines(dr), 20, "the probe to hold")
        put(mode, "fail\n")
        dr.wait_for(lambda: lines(dr, "error.log"), 20, "the failure to be logged")
        n = nlines(dr.path / "count")
        dr.wait_for(lambda: nlines(dr.path / "count") >= n + 3, 20, "three more failing runs")
        n = len(waits(dr))
        dr.wait_for(lambda: len(waits(dr)) >= n + 2, 20, "two more waits")
        assert started(dr) == []                  # 10 still holds
        assert waits(dr)[-1] == "probe pr: 10 > max 5"
        put(mode, "1\n")
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert states(dr) == {"a": "ok"}
    assert lines(dr, "error.log") == [
        "pr: exit 3, limits unchanged (stderr: .dagrun/logs/~probe.pr.err)"]
    mine = [l for l in lines(dr) if l.startswith("pr: ")]
    assert mine == ["pr: 10", "pr: 10: launching held",
                    "pr: exit 3, limits unchanged (stderr: .dagrun/logs/~probe.pr.err)",
                    "pr: 1", "pr: 1: launching allowed"], mine


# --------------------------------------------------------- plugin stderr

def test_plugin_stderr_goes_to_its_file_in_the_state_dirs_logs(dr):
    ini = ("[run]\nstate_dir = st\ncapacity = echo cap-said-this >&2; echo 4\n"
           "[probe pr]\ncmd = echo probe-said-this >&2; echo 1\nmax = 5\n"
           "[probe bad]\ncmd = echo bad-said-this >&2; exit 2\n"
           "[node a]\ncmd = touch ran\n")
    r = dr.run(ini=ini)
    assert r.returncode == 0, r.stderr
    logs = dr.path / "st/logs"
    assert (logs / "~capacity.err").read_text() == "cap-said-this\n"
    assert (logs / "~probe.pr.err").read_text() == "probe-said-this\n"
    assert (logs / "~probe.bad.err").read_text() == "bad-said-this\n"
    assert lines(dr, "error.log", state_dir="st") == [
        "bad: exit 2, limits unchanged (stderr: st/logs/~probe.bad.err)"]
    assert "said-this" not in r.stdout + r.stderr
    assert not (dr.path / ".dagrun").exists()


# ----------------------------------------------- no plugin outlives the run

@pytest.mark.parametrize("how", ["end", "failure", "sigterm"])
def test_a_plugin_still_running_when_the_run_ends_is_killed(dr, how):
    """The second run of the probe waits; the run ends under it (its jobs
    finish, one fails, or dagrun gets SIGTERM): the shell and its sleep are gone."""
    job = setup_job(dr)
    cmd = ("if [ -e first ]; then echo $$ >> pids; sleep 30 & echo $! >> pids; wait; fi; "
           "touch first; echo 1")
    exit_ = " --exit 3" if how == "failure" else ""
    wait = " --wait never" if how == "sigterm" else ""
    ini = ("[probe p]\ncmd = %s\nmax = 5\nevery = 20ms\ntimeout = 60s\n"
           "[node a]\ncmd = %s --lines pids:2%s%s\n" % (cmd, job, exit_, wait))
    p = dr.popen(ini=ini)
    try:
        if how == "sigterm":
            dr.wait_for(lambda: started(dr) == ["a"] and nlines(dr.path / "pids") >= 2, 20,
                        "a to run beside the probe's second run")
            p.send_signal(signal.SIGTERM)
        out, err = finish(p)
        ok = all_gone(dr, pids_in(dr.path / "pids"))
    finally:
        stop(p)
        kill_leftovers(pids_in(dr.path / "pids"))
    pids = pids_in(dr.path / "pids")
    rc = 128 - p.returncode if p.returncode < 0 else p.returncode
    assert rc == {"end": 0, "failure": 1, "sigterm": 128 + 15}[how], err
    assert len(pids) >= 2
    assert ok, [pid for pid in pids if not gone(pid)]


def test_a_plugins_background_child_does_not_outlive_the_run(dr):
    """The probe's second run leaves `sleep 30` holding its stdout and its
    shell exits (dagrun reaps it: the job waits for that).  The run then
    ends before the plugin's timeout: the sleep must not be left behind."""
    job = setup_job(dr)
    cmd = ("if [ -e first ]; then sleep 30 & echo $! >> bgpids; echo $$ >> shpids; fi; "
           "touch first; echo 1")
    ini = ("[probe p]\ncmd = %s\nmax = 5\nevery = 20ms\ntimeout = 60s\n"
           "[node a]\ncmd = %s --lines bgpids:1 --reaped shpids\n" % (cmd, job))
    try:
        r = dr.run(ini=ini)
        ok = all_gone(dr, pids_in(dr.path / "bgpids"))
    finally:
        kill_leftovers(pids_in(dr.path / "bgpids"))
    assert r.returncode == 0, r.stderr
    assert states(dr) == {"a": "ok"}
    assert len(pids_in(dr.path / "bgpids")) == 1
    assert ok, "the plugin's sleep outlived the run"


def test_check_and_dry_run_run_no_plugin(dr):
    ini = ("[run]\ncapacity = touch cap_ran; echo 1\n[probe p]\ncmd = touch probe_ran; echo 1\n"
           "max = 5\n[node a]\ncmd = touch ran\n")
    for args in (["-c"], ["-n"]):
        r = dr.run(*args, ini=ini)
        assert r.returncode == 0, r.stderr
    assert not (dr.path / "cap_ran").exists()
    assert not (dr.path / "probe_ran").exists()
    assert not (dr.path / "ran").exists()


# ------------------------------------------------------------ config errors

@pytest.mark.parametrize("text,message", [
    ("[probe x]\nmax = 5\n", "1: probe 'x' has no cmd"),
    ("[probe x]\ncmd = echo 1\nmin = 5\nmax = 1\n", "1: probe 'x': min is above max"),
    ("[probe x]\ncmd = echo 1\n[probe y]\ncmd = echo 2\n[probe x]\ncmd = echo 3\n",
     "5: duplicate probe 'x' (first at line 1)"),
    ("[probe a/b]\ncmd = echo 1\n", "1: bad probe name 'a/b' (letters, digits and ._-+@)"),
    ("[probe a:b]\ncmd = echo 1\n", "1: bad probe name 'a:b' (letters, digits and ._-+@)"),
    ("[probe]\ncmd = echo 1\n", "1: probe needs a name: [probe NAME]"),
    ("[run]\ncapacity_every = 1s\n", "2: capacity_every or capacity_timeout without capacity"),
    ("[run]\njobs = 2\ncapacity_timeout = 1s\n",
     "3: capacity_every or capacity_timeout without capacity"),
    ("[run]\ncapacity =\n", "2: capacity: expected a command"),
    ("[run]\ncapacity = echo 1\ncapacity_every = 5ms\n", "3: capacity_every: expected at least 10ms"),
    ("[probe x]\ncmd = echo 1\nevery = 5ms\n", "3: every: expected at least 10ms"),
    ("[probe x]\ncmd = echo 1\nmin = x\n", "3: min: expected a number, got 'x'"),
    ("[probe x]\ncmd = echo 1\nmax = 1.2.3\n", "3: max: expected a number, got '1.2.3'"),
    ("[probe x]\ncmd = echo 1\nmax =\n", "3: max: expected a number, got ''"),
    ("[probe x]\ncmd = echo 1\nfrob = 1\n", "3: unknown key 'frob' in [probe x]"),
    ("[probe x]\ncmd = echo 1\nmax = 1\nmax = 2\n", "4: duplicate key 'max' in [probe x]"),
], ids=["no-cmd", "min-above-max", "duplicate", "slash", "colon", "no-name", "every-alone",
        "timeout-alone", "empty-capacity", "capacity-every-5ms", "every-5ms", "min-x",
        "max-1.2.3", "max-empty", "unknown-key", "duplicate-key"])
def test_plugin_config_errors(dr, text, message):
    r = dr.run(ini=text + "[node a]\ncmd = touch ran\n")
    assert r.returncode == 2, r.stderr
    assert "dagrun.ini:%s\n" % message in r.stderr, r.stderr
    assert not (dr.path / "ran").exists()
    assert not (dr.path / ".dagrun/journal").exists()


def test_a_blank_in_a_probe_name_is_a_bad_probe_name(dr):
    r = dr.run(ini="[probe a b]\ncmd = echo 1\n[node a]\ncmd = touch ran\n")
    assert r.returncode == 2, r.stderr
    assert "dagrun.ini:1: bad probe name 'a b' (letters, digits and ._-+@)\n" in r.stderr


def test_good_plugin_config_passes_the_check(dr):
    r = dr.run("-c", ini="[run]\ncapacity = echo 2\ncapacity_every = 10ms\n"
                         "capacity_timeout = 1m\n[probe a.b-c+d@e_1]\ncmd = echo 1\n"
                         "min = -1.5\nmax = 1e3\nevery = 2s\ntimeout = 500ms\n"
                         "[probe eq]\ncmd = echo 1\nmin = 3\nmax = 3\n[node a]\ncmd = true\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dagrun.ini: ok, 1 node\n" or r.stdout.startswith("dagrun.ini: ok, 1 node")
