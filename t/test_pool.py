"""Timeouts, retries, pools and the notify command: what a user sees in the
journal, the logs and on the console. Every test drives the real binary;
jobs meet through files the test controls, never through sleeps."""
import os
import re
import signal
import sys

import pytest

import conftest
from conftest import gone

PY = sys.executable
SLOW = conftest.SLOW

# The jobs' helper.
#   --log F        append "start JOB ATTEMPT t" first and "end JOB ATTEMPT t"
#                  last (O_APPEND: one write per line, so lines never mix)
#   --peak N       after "start", wait (bounded) until the log has shown N jobs
#                  in flight at once (with --prefix P: only jobs named P...)
#   --started A,B  wait (bounded) until jobs A and B have started
#   --wait F       wait (bounded) for file F
#   --exit N       exit status
# A bounded wait that runs out makes the job exit 9, so it shows as a failure.
JOB = r'''
import os, sys, time
a = sys.argv[1:]
opt = {}
while a:
    k = a.pop(0)
    opt[k] = a.pop(0)
job = os.environ.get("DAGRUN_JOB", "?")
attempt = os.environ.get("DAGRUN_ATTEMPT", "?")

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

def until(pred, limit=10):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()

def peak(text, prefix):
    n = top = 0
    for line in text.splitlines():
        kind, name = line.split()[:2]
        if name.startswith(prefix):
            n += 1 if kind == "start" else -1
            top = max(top, n)
    return top

log = opt.get("--log")
ok = True
if log:
    put(log, "start %s %s %.6f\n" % (job, attempt, time.time()))
if "--peak" in opt:
    n, prefix = int(opt["--peak"]), opt.get("--prefix", "")
    ok = until(lambda: peak(read(log), prefix) >= n) and ok
if "--started" in opt:
    names = opt["--started"].split(",")
    ok = until(lambda: all("start %s " % n in read(log) for n in names)) and ok
if "--wait" in opt:
    ok = until(lambda: os.path.exists(opt["--wait"]), 30) and ok
if log:
    put(log, "end %s %s %.6f\n" % (job, attempt, time.time()))
sys.exit(int(opt.get("--exit", 0)) if ok else 9)
'''


def setup_job(dr):
    (dr.path / "job.py").write_text(JOB)
    return "%s job.py" % PY


def records(dr, state_dir=".dagrun"):
    """Journal records as (time, [fields]) in file order."""
    out = []
    for line in (dr.path / state_dir / "journal").read_text().splitlines():
        f = line.split("\t")
        out.append((float(f[0]), f[1:]))
    return out


def ends(dr):
    """[(job, attempt, state, status, seconds)] of the end records, in order."""
    return [(f[1], int(f[2]), f[3], int(f[4]), float(f[5]))
            for _, f in records(dr) if f[0] == "end"]


def states(dr):
    """job -> state of its last end record."""
    return {e[0]: e[2] for e in ends(dr)}


def own(stderr):
    """dagrun's own stderr, without a wrapper's (valgrind's) report lines."""
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


def text(dr, name):
    p = dr.path / ".dagrun" / name
    return p.read_text() if p.exists() else ""


def pidof(dr, name):
    p = dr.path / name
    return int(p.read_text()) if p.exists() and p.read_text().strip() else None


def kill_leftovers(dr, *pidfiles):
    """Whatever a test left behind (only processes it started), ended."""
    for name in pidfiles:
        for line in ((dr.path / name).read_text().split() if (dr.path / name).exists() else []):
            pid = int(line)
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"sleep" not in f.read():
                        continue
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


def in_flight_from_journal(dr, names):
    """The most jobs among names between their start and end records."""
    n = top = 0
    for _, f in records(dr):
        if f[0] in ("start", "end") and f[1] in names and (f[0] == "start" or int(f[2]) > 0):
            n += 1 if f[0] == "start" else -1
            top = max(top, n)
    return top


def ledger(dr, name="ledger"):
    return [l.split() for l in (dr.path / name).read_text().splitlines()]


def peak(lines, names):
    n = top = 0
    for kind, job, *_ in lines:
        if job in names:
            n += 1 if kind == "start" else -1
            top = max(top, n)
    return top


def stop(p):
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)


# ------------------------------------------------------------------ timeouts

def test_timeout_ends_the_job_and_its_grandchild(dr):
    r = dr.run(ini="""
[node slow]
timeout = 0.5s
cmd = sleep 300 & echo $! > gc.pid; echo $$ > sh.pid; wait
[node after_slow]
after = slow
cmd = touch after-ran
""")
    try:
        assert r.returncode == 1, r.stderr
        assert states(dr) == {"slow": "timeout", "after_slow": "skipped"}
        end = [e for e in ends(dr) if e[0] == "slow"][0]
        assert end[3] == 143                       # what the process ended with: SIGTERM
        assert 0.5 <= end[4] < 0.5 + 3 * SLOW, end
        assert re.search(r"^TIMEOUT exit 143 [0-9.]+s slow$", r.stderr, re.M), r.stderr
        assert re.search(r"\tslow: timeout after 0\.5s: SIGTERM$", text(dr, "main.log"), re.M)
        start = [f for _, f in records(dr) if f[0] == "start" and f[1] == "slow"][0]
        assert int(start[3]) == pidof(dr, "sh.pid")   # the journal names the leader
        for name in ("sh.pid", "gc.pid"):
            pid = pidof(dr, name)
            dr.wait_for(lambda: gone(pid), timeout=5, what="%s %d to be gone" % (name, pid))
        assert not (dr.path / "after-ran").exists()
        assert re.search(r"^dagrun: 2 jobs: 0 ok, 1 timeout, 1 skipped in [0-9.]+s$",
                         r.stdout, re.M), r.stdout
    finally:
        kill_leftovers(dr, "gc.pid")


def test_job_ignoring_sigterm_is_killed_after_kill_grace(dr):
    # SIGTERM kills the loop's sleep and runs the trap; only SIGKILL ends the shell
    r = dr.run(ini="""
[run]
kill_grace = 0.5s
[node stubborn]
timeout = 0.3s
cmd = trap 'touch got-term' TERM; echo $$ > s.pid; while :; do sleep 0.05; done
""")
    assert r.returncode == 1, r.stderr
    assert (dr.path / "got-term").exists()             # SIGTERM came first ...
    (job, attempt, state, st, secs), = ends(dr)
    assert (state, st) == ("timeout", 128 + signal.SIGKILL)
    assert 0.8 - 0.002 <= secs < 0.8 + 3 * SLOW, secs     # ... SIGKILL kill_grace later
    assert re.search(r"^TIMEOUT exit 137 [0-9.]+s stubborn$", r.stderr, re.M), r.stderr
    pid = pidof(dr, "s.pid")
    dr.wait_for(lambda: gone(pid), timeout=5, what="the stubborn shell to be gone")


def test_processes_left_in_the_group_are_killed_when_the_grace_ends(dr):
    # the leader dies of SIGTERM; its child ignores SIGTERM and stays in the group
    r = dr.run(ini="""
[run]
kill_grace = 0.5s
[node leaver]
timeout = 0.3s
cmd = (trap '' TERM; exec sleep 300) & echo $! > gc.pid; wait
""")
    try:
        assert r.returncode == 1, r.stderr
        assert states(dr) == {"leaver": "timeout"}
        pid = pidof(dr, "gc.pid")
        dr.wait_for(lambda: gone(pid), timeout=3, what="the grandchild ignoring SIGTERM")
    finally:
        kill_leftovers(dr, "gc.pid")


def test_allow_failure_with_a_timeout_exits_0_and_dependents_run(dr):
    r = dr.run(ini="""
[node tolerated]
timeout = 0.2s
allow_failure = yes
cmd = sleep 300
[node next]
after = tolerated
cmd = touch next-ran
""")
    assert r.returncode == 0, r.stderr
    assert states(dr) == {"tolerated": "timeout", "next": "ok"}
    assert (dr.path / "next-ran").exists()
    assert re.search(r"^TIMEOUT exit 143 [0-9.]+s tolerated \(allowed\)$", r.stderr, re.M), r.stderr


# ------------------------------------------------------------------- retries

def test_retries_fail_twice_then_succeed_with_doubling_delays(dr):
    r = dr.run(ini="""
[node flaky]
retries = 3
retry_delay = 0.2s
cmd = echo "env=$DAGRUN_ATTEMPT tpl={attempt}" >> attempts; echo "out of attempt {attempt}"; test $DAGRUN_ATTEMPT -ge 3
""")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "attempts").read_text() == "".join(
        "env=%d tpl=%d\n" % (k, k) for k in (1, 2, 3))
    rec = [(t, f) for t, f in records(dr) if f[0] in ("start", "end", "retry")]
    kinds = [(f[0], f[2]) for _, f in rec]
    assert kinds == [("start", "1"), ("end", "1"), ("retry", "2"),
                     ("start", "2"), ("end", "2"), ("retry", "3"),
                     ("start", "3"), ("end", "3")], rec
    assert [e[2:4] for e in ends(dr)] == [("failed", 1), ("failed", 1), ("ok", 0)]
    assert [float(f[3]) for _, f in rec if f[0] == "retry"] == [0.2, 0.4]
    t = {(f[0], f[2]): tt for tt, f in rec}
    # journal times have millisecond resolution: allow for rounding
    first = t[("start", "2")] - t[("end", "1")]
    second = t[("start", "3")] - t[("end", "2")]
    assert 0.2 - 0.002 <= first < 0.2 + 1.5 * SLOW, first
    assert 0.4 - 0.002 <= second < 0.4 + 1.5 * SLOW, second
    assert second >= 2 * 0.2 - 0.002
    out = r.stdout
    assert re.search(r"^retry flaky: failed exit 1 [0-9.]+s, attempt 2 in 0\.2s$", out, re.M), out
    assert re.search(r"^retry flaky: failed exit 1 [0-9.]+s, attempt 3 in 0\.4s$", out, re.M), out
    assert re.search(r"^ok [0-9.]+s flaky$", out, re.M), out
    assert re.search(r"^dagrun: 1 jobs?: 1 ok in [0-9.]+s$", out, re.M), out
    assert "FAILED" not in r.stderr
    # the logs hold the last attempt's output
    assert (dr.path / ".dagrun/logs/flaky.out").read_text() == "out of attempt 3\n"


def test_retries_quiet_keeps_retry_lines_off_stdout(dr):
    r = dr.run("-q", ini="[node f]\nretries = 1\ncmd = test $DAGRUN_ATTEMPT -ge 2\n")
    assert r.returncode == 0, r.stderr
    assert "retry" not in r.stdout
    assert [e[1:3] for e in ends(dr)] == [(1, "failed"), (2, "ok")]


def test_retries_exhausted_fail_the_job(dr):
    r = dr.run(ini="""
[node doomed]
retries = 2
cmd = echo "try {attempt}" >&2; exit 3
[node child]
after = doomed
cmd = touch child-ran
""")
    assert r.returncode == 1, r.stderr
    assert [e[:4] for e in ends(dr)] == [("doomed", 1, "failed", 3), ("doomed", 2, "failed", 3),
                                         ("doomed", 3, "failed", 3), ("child", 0, "skipped", -1)]
    assert [f[1:] for _, f in records(dr) if f[0] == "retry"] == [
        ["doomed", "2", "0.000"], ["doomed", "3", "0.000"]]
    assert not (dr.path / "child-ran").exists()
    assert re.search(r"^FAILED exit 3 [0-9.]+s doomed$", r.stderr, re.M), r.stderr
    assert len(re.findall(r"^FAILED ", r.stderr, re.M)) == 1, r.stderr   # only the last counts
    assert re.search(r"^doomed\| try 3$", r.stderr, re.M), r.stderr
    assert (dr.path / ".dagrun/logs/doomed.err").read_text() == "try 3\n"
    assert re.search(r"^dagrun: 2 jobs: 0 ok, 1 failed, 1 skipped in", r.stdout, re.M), r.stdout


def test_a_timed_out_attempt_is_retried(dr):
    r = dr.run(ini="""
[node hangs_once]
timeout = 0.3s
retries = 1
cmd = if [ "$DAGRUN_ATTEMPT" = 1 ]; then exec sleep 300; fi; echo done
""")
    assert r.returncode == 0, r.stderr
    assert [e[:4] for e in ends(dr)] == [("hangs_once", 1, "timeout", 143),
                                         ("hangs_once", 2, "ok", 0)]
    assert [f[1:3] for _, f in records(dr) if f[0] == "retry"] == [["hangs_once", "2"]]
    assert "TIMEOUT" not in r.stderr
    assert re.search(r"^retry hangs_once: timeout exit 143 [0-9.]+s, attempt 2 in 0s$",
                     r.stdout, re.M), r.stdout


# --------------------------------------------------------------------- pools

def test_pool_of_two_never_runs_more_than_two_while_others_run_beside(dr):
    job = setup_job(dr)
    pooled = ["p%d" % i for i in range(6)]
    free = ["f0", "f1"]
    ini = "[pool p]\nsize = 2\n"
    for n in pooled:
        # the first two meet the free jobs: had the full pool held those up,
        # these would wait in vain; all four are in flight when the last starts
        ini += "[node %s]\npool = p\ncmd = %s --log ledger --peak 2 --prefix p --started f0,f1\n" % (
            n, job)
    for n in free:
        ini += "[node %s]\ncmd = %s --log ledger --peak 2 --prefix p --started f0,f1\n" % (n, job)
    r = dr.run("-j", "6", ini=ini)
    assert r.returncode == 0, r.stderr
    assert set(states(dr).values()) == {"ok"} and len(states(dr)) == 8
    ev = ledger(dr)
    assert peak(ev, pooled) == 2, ev
    assert peak(ev, pooled + free) == 4, ev       # two pooled and both free ones at once
    assert in_flight_from_journal(dr, pooled) == 2
    assert in_flight_from_journal(dr, pooled + free) == 4


def test_two_pools_each_hold_their_own_limit(dr):
    job = setup_job(dr)
    a = ["a%d" % i for i in range(3)]
    b = ["b%d" % i for i in range(4)]
    ini = "[pool one]\nsize = 1\n[pool two]\nsize = 2\n"
    for n in a:
        ini += "[node %s]\npool = one\ncmd = %s --log ledger --peak 3\n" % (n, job)
    for n in b:
        ini += "[node %s]\npool = two\ncmd = %s --log ledger --peak 3\n" % (n, job)
    r = dr.run("-j", "8", ini=ini)
    assert r.returncode == 0, r.stderr
    assert set(states(dr).values()) == {"ok"} and len(states(dr)) == 7
    ev = ledger(dr)
    assert peak(ev, a) == 1, ev
    assert peak(ev, b) == 2, ev
    assert peak(ev, a + b) == 3, ev
    assert in_flight_from_journal(dr, a) == 1
    assert in_flight_from_journal(dr, b) == 2


POOL_ERRORS = [
    ("unknown_pool", ["[node a]", "cmd = true", "pool = x"], "3: unknown pool 'x'"),
    ("no_size", ["[pool x]", "[node a]", "cmd = true", "pool = x"], "1: pool 'x' has no size"),
    ("duplicate", ["[pool x]", "size = 1", "[pool x]", "size = 2"],
     "3: duplicate pool 'x' (first at line 1)"),
    ("bad_name", ["[pool a b]", "size = 1"],
     "1: bad pool name 'a b' (letters, digits and ._-+@)"),
    ("no_name", ["[pool]", "size = 1"], "1: pool needs a name: [pool NAME]"),
    ("size_0", ["[pool x]", "size = 0"],
     "2: size: expected a whole number from 1 to 2147483647, got '0'"),
    ("size_too_big", ["[pool x]", "size = 2147483648"],
     "2: size: expected a whole number from 1 to 2147483647, got '2147483648'"),
    ("unknown_key", ["[pool x]", "size = 1", "colour = red"], "3: unknown key 'colour' in [pool x]"),
    ("timeout_0", ["[node a]", "cmd = true", "timeout = 0"], "3: timeout: expected a duration above 0"),
    ("retries_x", ["[node a]", "cmd = true", "retries = x"],
     "3: retries: expected a whole number from 0 to 1000, got 'x'"),
    ("retries_1001", ["[node a]", "cmd = true", "retries = 1001"],
     "3: retries: expected a whole number from 0 to 1000, got '1001'"),
]


def _param(name, lines, msg, bug=None):
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(lines, msg, id=name, marks=marks)


@pytest.mark.parametrize("lines,msg", [_param(*e) for e in POOL_ERRORS])
def test_pool_timeout_and_retries_config_errors(dr, lines, msg):
    dr.write("\n".join(lines + ["[node made]", "cmd = touch made"]) + "\n")
    for opt in ("-c", None):
        r = dr.run(*([opt] if opt else []))
        assert r.returncode == 2, (opt, r)
        assert own(r.stderr) == "dagrun.ini:" + msg + "\n", opt
        assert not (dr.path / "made").exists()


def test_retries_1000_and_pool_names_with_punctuation_are_accepted(dr):
    r = dr.run("-c", ini="[pool db.1-a+b@c_d]\nsize = 2147483647\n"
               "[node a]\ncmd = true\nretries = 1000\nretry_delay = 0.1\npool = db.1-a+b@c_d\n")
    assert r.returncode == 0, r.stderr


# -------------------------------------------------------------------- notify

# One line per notification.
NOTIFY = r"""printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
  "$DAGRUN_EVENT" "$DAGRUN_JOB" "$DAGRUN_NODE" "$DAGRUN_STATE" "$DAGRUN_EXIT" \
  "$DAGRUN_ATTEMPT" "$DAGRUN_DURATION" "${DAGRUN_RETRY_IN-none}" "$DAGRUN_RUNNING" \
  "$DAGRUN_WAITING" "$DAGRUN_DONE" "$DAGRUN_FAILED" "$DAGRUN_OK" >> "$1"
"""
FIELDS = ("event job node state exit attempt duration retry_in "
          "running waiting done failed ok").split()


def notes(path):
    return [dict(zip(FIELDS, l.split("\t"))) for l in path.read_text().splitlines()]


def test_notify_hears_every_event_exactly_once_in_order(dr):
    (dr.path / "notify.sh").write_text(NOTIFY)
    r = dr.run("-k", "-j", "2", ini="""
[run]
notify = sh %s %s
[node good]
cmd = true
[node bad]
cmd = echo bad >&2; exit 3
[node child]
after = bad
cmd = touch child-ran
[node flaky]
retries = 1
retry_delay = 0.1s
cmd = test $DAGRUN_ATTEMPT -ge 2
[node slow]
timeout = 0.2s
cmd = sleep 300
[node last]
after = good flaky
cmd = true
""" % (dr.path / "notify.sh", dr.path / "notes"))
    assert r.returncode == 1, r.stderr
    got = notes(dr.path / "notes")
    total = 6
    # exactly one `done`, the last one, with the run's exit code
    assert [n["event"] for n in got].count("done") == 1, got
    assert got[-1]["event"] == "done", got
    d = got[-1]
    assert (d["job"], d["node"], d["state"], d["exit"], d["attempt"]) == ("", "", "failed", "1", "0")
    done_rec = [f for _, f in records(dr) if f[0] == "done"][0]
    assert abs(float(d["duration"]) - float(done_rec[2])) < 0.05
    st = states(dr)
    assert (d["running"], d["waiting"], d["done"]) == ("0", "0", str(total))
    assert int(d["ok"]) == sum(1 for s in st.values() if s == "ok") == 3
    assert int(d["failed"]) == sum(1 for s in st.values() if s in ("failed", "timeout")) == 2
    # one `end` per journal end record (every attempt, the skipped job too), in order
    jend = ends(dr)
    nend = [n for n in got if n["event"] == "end"]
    assert [(n["job"], int(n["attempt"]), n["state"], int(n["exit"])) for n in nend] == \
        [e[:4] for e in jend]
    assert all(n["node"] == n["job"] for n in nend)
    for n, e in zip(nend, jend):
        assert abs(float(n["duration"]) - e[4]) < 0.01, (n, e)
    skipped = [n for n in nend if n["job"] == "child"]
    assert [(n["state"], n["attempt"], n["exit"]) for n in skipped] == [("skipped", "0", "-1")]
    # DAGRUN_RETRY_IN only on the attempt that will be retried
    assert [(n["job"], n["attempt"], n["retry_in"]) for n in nend if n["retry_in"] != "none"] == \
        [("flaky", "1", "0.1")]
    # the counts after each event: finished jobs go up one by one
    finals = ok = failed = 0
    for n in nend:
        if n["retry_in"] == "none":
            finals += 1
            ok += n["state"] == "ok"
            failed += n["state"] in ("failed", "timeout")
        assert int(n["done"]) == finals, n
        assert (int(n["ok"]), int(n["failed"])) == (ok, failed), n
        assert int(n["running"]) + int(n["waiting"]) + int(n["done"]) == total, n
        assert int(n["running"]) >= 0 and int(n["waiting"]) >= 0
    assert finals == total
    assert "notify" not in text(dr, "error.log")


def test_a_notify_running_when_the_jobs_end_is_not_run_again(dr):
    # b ends once the notify of a's end has spoken; that notify is still busy
    (dr.path / "notes").touch()
    r = dr.run(ini="""
[run]
notify = echo "$DAGRUN_EVENT $DAGRUN_JOB" >> notes; sleep 0.4
[node a]
cmd = true
[node b]
cmd = i=0; until grep -q 'end a' notes || [ $i -ge 1000 ]; do sleep 0.01; i=$((i+1)); done
""")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "notes").read_text() == "end a\nend b\ndone \n"


def test_slow_notify_is_killed_and_does_not_hold_up_launches(dr):
    r = dr.run(ini="""
[run]
notify = echo $$ >> notify.pids; exec sleep 30
notify_timeout = 0.6s
[node c1]
cmd = true
[node c2]
after = c1
cmd = true
[node c3]
after = c2
cmd = true
""")
    try:
        assert r.returncode == 0, r.stderr
        start = {f[1]: t for t, f in records(dr) if f[0] == "start"}
        # had each launch waited for the notify of the end before it, this took 1.2s
        assert start["c3"] - start["c1"] < 0.5 * SLOW, start
        killed = re.findall(r"\tERROR\tnotify: no answer after 0\.6s\b(.*): killed\b(.*)$",
                            text(dr, "error.log"), re.M)
        # three ends and the run's end, each let run for notify_timeout
        assert len(killed) == 4, text(dr, "error.log")
        pids = [int(x) for x in (dr.path / "notify.pids").read_text().split()]
        assert len(pids) == 4, pids                     # each event's command ran once
        for pid in pids:
            dr.wait_for(lambda: gone(pid), timeout=5, what="notify %d to be gone" % pid)
    finally:
        kill_leftovers(dr, "notify.pids")


def test_notify_timeout_holds_while_a_long_job_runs(dr):
    job = setup_job(dr)
    p = dr.popen(ini="""
[run]
notify = echo $$ >> notify.pids; if [ "$DAGRUN_JOB" = quick ]; then exec sleep 30; fi
notify_timeout = 1.2s
[node quick]
cmd = true
[node long]
cmd = %s --wait go
""" % job)
    try:
        dr.wait_for(lambda: (dr.path / "notify.pids").exists() or p.poll() is not None,
                    what="the notify of quick's end")
        assert p.poll() is None
        # the notify sleeps, `long` runs on: the notify must be killed 1.2s in
        dr.wait_for(lambda: "no answer" in text(dr, "error.log"), timeout=3.5,
                    what="the hung notify to be killed while `long` runs")
        assert "long" not in [e[0] for e in ends(dr)]
    finally:
        (dr.path / "go").touch()
        try:
            p.communicate(timeout=20 * SLOW)
        finally:
            stop(p)
            kill_leftovers(dr, "notify.pids")


def test_second_sigint_cuts_the_wait_for_notifications_short(dr):
    job = setup_job(dr)
    p = dr.popen(ini="""
[run]
notify = echo $$ >> notify.pids; exec sleep 30
notify_timeout = 60s
[node a]
cmd = %s --wait never
""" % job, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        dr.wait_for(lambda: (dr.path / ".dagrun/journal").exists() and
                    any(f[0] == "start" for _, f in records(dr)) or p.poll() is not None,
                    what="a to start")
        p.send_signal(signal.SIGINT)
        # a is cancelled, the run is over; the notify of a's end hangs
        dr.wait_for(lambda: ((dr.path / "notify.pids").exists()
                             and any(f[0] == "done" for _, f in records(dr))) or p.poll() is not None,
                    what="the run's end and the notify of a's end")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10 * SLOW)       # not the 60s notify_timeout
        assert p.returncode in (-signal.SIGINT, 128 + signal.SIGINT), p.returncode
        assert states(dr) == {"a": "cancelled"}
        for pid in [int(x) for x in (dr.path / "notify.pids").read_text().split()]:
            dr.wait_for(lambda: gone(pid), timeout=5, what="notify %d to be gone" % pid)
    finally:
        stop(p)
        kill_leftovers(dr, "notify.pids")


@pytest.mark.parametrize("job_cmd,code", [("true", 0), ("false", 1)])
def test_failing_notify_is_logged_and_leaves_the_exit_status_alone(dr, job_cmd, code):
    r = dr.run(ini="""
[run]
notify = echo "notified $DAGRUN_EVENT $DAGRUN_JOB"; echo "to stderr" >&2; exit 4
[node j]
cmd = %s
""" % job_cmd)
    assert r.returncode == code, r.stderr
    err = text(dr, "error.log")
    lines = re.findall(r"\tERROR\tnotify: exit 4 \(output: (\S+)\)$", err, re.M)
    assert len(lines) == 2, err                # j's end and the run's end
    assert all(l.endswith("logs/~notify.log") for l in lines), lines
    assert (dr.path / ".dagrun/logs/~notify.log").read_text() == (
        "notified end j\nto stderr\nnotified done \nto stderr\n")


def test_notify_runs_with_the_run_shell(dr):
    r = dr.run(ini="""
[run]
shell = bash
notify = echo "bash $BASH_VERSION" >> shells && true
[node j]
cmd = true
""")
    assert r.returncode == 0, r.stderr
    lines = (dr.path / "shells").read_text().splitlines()
    assert len(lines) == 2 and all(re.match(r"bash \d", l) for l in lines), lines
