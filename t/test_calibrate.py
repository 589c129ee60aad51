"""Calibration of fan-out nodes: `calibrate = yes | no | always`.

The first job of a calibrating node runs alone; from its CPU seconds per
wall second, peak RSS and output size dagrun sets how many of the node's
jobs may run at once: the fewest that fit calibrate_cpu_percent of the CPUs,
calibrate_memory_percent of the available memory (DAGRUN_SYSROOT's
proc/meminfo here) and calibrate_disk_percent of the output directory's free
space (a small tmpfs here).  The tests recompute the limits from what main.log
says was measured and from the fixture values, never from numbers written in
advance, then check from the journal and the jobs' own ledger that the limit
held.  The jobs coordinate through the ledger (see FJ), not through time."""
import math
import os
import re
import subprocess
import sys

import pytest

import conftest
from conftest import clean_env

PY = sys.executable
SLOW = conftest.SLOW
NCPU = len(os.sched_getaffinity(0))
GIB = 1024 ** 3
MIB = 1024 ** 2
# calibrate_cpu_percent of the measured nodes: 1.6 CPUs' worth whatever the
# machine, so a job busy 60% of its time gets a limit of about 2, not 2 * NCPU
CPU_PCT = "%g" % min(100.0, round(160.0 / NCPU, 3))
PCT = (float(CPU_PCT), 80, 80)

# The fan-out jobs' helper: python3 fj.py OPTIONS.
#   --ledger F     append "start JOB t" first and "end JOB t" last (O_APPEND)
#   --cal C        1: this run calibrates the node; 0: it takes an earlier
#                  run's measurement; -: the node does not calibrate
#   --pos P        main.log is read from byte P (where this run's lines begin)
#   --total T      the node has T jobs
#   --touch F      create F once started;  --wait F: wait (bounded) for F
#   --fail-first   the node's first job in the ledger exits 1
#   --meet N       wait (bounded) until N jobs of the node have started
# With --cal 1, a job that starts while no job of its node has ended ok in
# this run's journal (written as events happen) is the calibrating one: it
# does the work the test measures,
#   --cpu F --secs S   use the CPU a fraction F of S seconds (by its CPU time)
#   --mem M            allocate and touch M MiB
#   --sleep S          then sleep S seconds
# Every job writes --bytes B bytes to --out PATH.  Any other job (--cal 0 or
# 1) waits (bounded) for the node's calibration line in main.log (dagrun
# flushes main.log within half a second), reads N from it and then waits
# (bounded) until N jobs of its node are in flight by the ledger (N = 0: no
# limit), or all T have started: so the limit is reached whenever dagrun
# allows it, and a job beyond it would be seen in flight with the others.
FJ = r"""
import os, re, sys, time
a = sys.argv[1:]
opt, flags = {}, set()
while a:
    k = a.pop(0)
    if k == "--fail-first":
        flags.add(k)
    else:
        opt[k] = a.pop(0)
job = os.environ["DAGRUN_JOB"]
node = os.environ["DAGRUN_NODE"]
state = os.environ["DAGRUN_STATE_DIR"]
led = opt["--ledger"]

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

def mine():
    ev = [l.split()[:2] for l in read(led).splitlines()]
    ev = [e for e in ev if len(e) == 2 and e[1].startswith(node + ":")]
    s = sum(1 for e in ev if e[0] == "start")
    return s, s - sum(1 for e in ev if e[0] == "end")

def ended_ok():
    recs = [l.split("\t") for l in read(state + "/journal").splitlines()]
    runs = [i for i, f in enumerate(recs) if len(f) > 1 and f[1] == "run"]
    return any(len(f) > 4 and f[1] == "end" and f[2].startswith(node + ":") and f[4] == "ok"
               for f in recs[runs[-1] if runs else 0:])

def limit():
    text = read(state + "/main.log")[int(opt.get("--pos", 0)):]
    found = re.findall(r"\tcalibration %s: cpu .* at most (\d+) at once" % re.escape(node),
                       text)
    return int(found[-1]) if found else None

put(led, "start %s %.6f\n" % (job, time.time()))
if "--touch" in opt:
    open(opt["--touch"], "w").close()
status = 0
if "--wait" in opt and not until(lambda: os.path.exists(opt["--wait"]), 30):
    status = 9
if "--meet" in opt and not until(lambda: mine()[0] >= int(opt["--meet"]), 20):
    status = 9
cal = opt.get("--cal", "-")
calibrating = cal == "1" and not ended_ok()
if "--fail-first" in flags and mine()[0] == 1:
    status = 1
elif calibrating:
    if "--cpu" in opt:
        f, t0, c0 = float(opt["--cpu"]), time.monotonic(), time.process_time()
        while time.monotonic() < t0 + float(opt["--secs"]):
            if time.process_time() - c0 >= f * (time.monotonic() - t0):
                time.sleep(0.002)
    if "--mem" in opt:
        b = b"\x01" * (int(opt["--mem"]) << 20)
    if "--sleep" in opt:
        time.sleep(float(opt["--sleep"]))
if status == 0 and "--out" in opt:
    with open(opt["--out"], "wb") as f:
        f.write(b"\0" * int(opt.get("--bytes", 0)))
if status == 0 and cal != "-" and not calibrating:
    total = int(opt["--total"])
    if not until(lambda: limit() is not None, 20):
        status = 7
    else:
        n = limit() or total
        if not until(lambda: mine()[1] >= n or mine()[0] >= total, 20):
            status = 8
put(led, "end %s %.6f\n" % (job, time.time()))
sys.exit(status)
"""

CAL = re.compile(r"calibration (\S+): cpu (\d+\.\d{3}) rss (\d+) output (\d+); "
                 r"limits cpu (\d+|-) memory (\d+|-) disk (\d+|-); "
                 r"at most (\d+) at once \((cpu|memory|disk|no limit)\)$")


MEASURED = "calibrate_cpu_percent = ${cpupct}\n"


class Sysroot:
    """A fake / for DAGRUN_SYSROOT with a proc/meminfo the test chooses
    (as in test_resources.py)."""

    def __init__(self, path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def put(self, rel, text):
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.parent / (p.name + ".tmp")
        tmp.write_text(text)
        os.rename(tmp, p)

    def meminfo(self, total_kb, avail_kb):
        self.put("proc/meminfo", "MemTotal:       %d kB\nMemFree:        %d kB\n"
                 "MemAvailable:   %d kB\nBuffers:        0 kB\nCached:         0 kB\n"
                 % (total_kb, avail_kb, avail_kb))
        self.avail = avail_kb * 1024

    def env(self, **extra):
        return clean_env(DAGRUN_SYSROOT=self.path, **extra)


@pytest.fixture
def root(tmp_path):
    r = Sysroot(tmp_path / "sysroot")
    r.meminfo(128 * GIB // 1024, 64 * GIB // 1024)
    return r


@pytest.fixture
def tmpfs(tmp_path):
    """An 8M tmpfs mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("the disk limit is measured on a tmpfs the test mounts: needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ------------------------------------------------------------------ helpers

def make_inputs(dr, n=7, ext="dat"):
    (dr.path / "fj.py").write_text(FJ)
    d = dr.path / "in"
    d.mkdir(exist_ok=True)
    for i in range(n):
        (d / ("%02d.%s" % (i, ext))).write_text("input %d\n" % i)
    return ["enc:in/%02d.%s" % (i, ext) for i in range(n)]


def fj(total, *args):
    return "%s fj.py --ledger ${ledger} --cal ${cal} --pos ${pos} --total %d %s" % (
        PY, total, " ".join(args))


def run(dr, *args, env, cal, ledger="ledger", **kw):
    """Run to the end, telling the jobs their ledger, whether this run
    calibrates and where this run's main.log lines begin."""
    log = dr.path / ".dagrun/main.log"
    pos = log.stat().st_size if log.exists() else 0
    r = dr.run("-j", "16", "-D", "ledger=" + ledger, "-D", "pos=%d" % pos, "-D", "cal=" + cal,
               "-D", "cpupct=" + CPU_PCT, *args, env=env, **kw)
    r.log = log.read_text()[pos:].splitlines() if log.exists() else []
    r.texts = [l.split("\t", 2)[2] for l in r.log if l.count("\t") >= 2]
    r.jnl = run_journal(dr)
    r.ledger = ledger
    return r


def run_journal(dr):
    """This run's journal records (from its last `run` record), time dropped."""
    recs = dr.journal() if (dr.path / ".dagrun/journal").exists() else []
    last = max([i for i, f in enumerate(recs) if f[0] == "run"], default=0)
    return recs[last:]


def cal_line(r, node="enc"):
    found = [CAL.match(t) for t in r.texts if t.startswith("calibration %s: cpu" % node)]
    assert len(found) == 1 and found[0], r.texts
    m = found[0]
    return {"node": m.group(1), "cpu": float(m.group(2)), "rss": int(m.group(3)),
            "out": int(m.group(4)),
            "lim": [None if x == "-" else int(x) for x in m.group(5, 6, 7)],
            "n": int(m.group(8)), "which": m.group(9), "text": m.group(0)}


def expected(c, avail, free=None, pct=PCT):
    """The limits dagrun should set from the logged measurement c: each as
    a set of candidates (the logged cpu is rounded to 3 decimals)."""
    exp = [None, None, None]
    if c["cpu"] > 0:
        lo, hi = max(c["cpu"] - 0.0005, 1e-9), c["cpu"] + 0.0005
        exp[0] = {math.floor(pct[0] / 100 * NCPU / x) for x in (lo, c["cpu"], hi)}
    if c["rss"] > 0 and avail is not None:
        exp[1] = {math.floor(pct[1] / 100 * avail / c["rss"])}
    if c["out"] > 0 and free is not None:
        exp[2] = {math.floor(pct[2] / 100 * free / c["out"])}
    return exp


def check_limits(c, avail, free=None, pct=PCT):
    exp = expected(c, avail, free, pct)
    for what, got, want in zip(("cpu", "memory", "disk"), c["lim"], exp):
        if want is None:
            assert got is None, (what, c["text"])
        else:
            assert got in want, (what, got, want, c["text"])
    have = [(x, i) for i, x in enumerate(c["lim"]) if x is not None]
    if not have:
        assert (c["n"], c["which"]) == (0, "no limit"), c["text"]
        return
    best, i = min(have)
    assert c["n"] == max(1, best), c["text"]
    assert c["which"] == ("cpu", "memory", "disk")[i], c["text"]


def se(r, kind, job):
    """Index of job's start or end record in this run's journal."""
    return [i for i, f in enumerate(r.jnl) if f[0] == kind and f[1] == job][0]


def starts(r, prefix="enc:"):
    return [f[1] for f in r.jnl if f[0] == "start" and f[1].startswith(prefix)]


def in_flight(r, prefix="enc:"):
    n = top = 0
    for f in r.jnl:
        if f[0] in ("start", "end") and f[1].startswith(prefix):
            if f[0] == "end" and f[4] == "-1":
                continue                          # never started
            n += 1 if f[0] == "start" else -1
            top = max(top, n)
    return top


def ledger(dr, name="ledger", prefix="enc:"):
    p = dr.path / name
    return [l.split()[:2] for l in p.read_text().splitlines()
            if l.split()[1].startswith(prefix)] if p.exists() else []


def ledger_in_flight(ev):
    n = top = 0
    for kind, _ in ev:
        n += 1 if kind == "start" else -1
        top = max(top, n)
    return top


def alone_first(r, first):
    """The first job started first and ended before any other of its node started."""
    s = starts(r)
    assert s[0] == first, s
    assert se(r, "end", first) < se(r, "start", s[1]), r.jnl


def check_width(dr, r, n, total, first_alone=True):
    """After the first job, never more than n of the node at once, and n was reached."""
    rest = total - 1 if first_alone else total
    width = n or total
    assert in_flight(r) <= width, r.jnl
    ev = ledger(dr, r.ledger)
    assert ledger_in_flight(ev) == min(width, rest), ev
    if first_alone:
        assert ledger_in_flight(ev[2:]) == min(width, rest), ev


# ----------------------------------------------- each limit chosen in turn

LIMITS = {
    # workload of the calibrating job, meminfo (total, available kB), extra keys
    "cpu": (["--cpu", "0.6", "--secs", "0.8"], (128 * GIB // 1024, 64 * GIB // 1024), ""),
    "memory": (["--mem", "64", "--sleep", "0.4"], (GIB // 1024, 300 * MIB // 1024), ""),
    "disk": (["--sleep", "0.3", "--out", "{output}", "--bytes", str(MIB)],
             (128 * GIB // 1024, 64 * GIB // 1024),
             "output_dir = disk\ncalibrate_disk_percent = 50\n"),
}


@pytest.mark.parametrize("which", list(LIMITS))
def test_calibration_picks_the_tightest_limit(dr, root, which, request):
    work, (total_kb, avail_kb), extra = LIMITS[which]
    free = None
    if which == "disk":
        disk = request.getfixturevalue("tmpfs")
        st = os.statvfs(disk)
        # what is left when the first job's 1M output is in place
        free = st.f_bavail * st.f_frsize - (MIB + st.f_frsize - 1) // st.f_frsize * st.f_frsize
    jobs = make_inputs(dr, {"cpu": 9, "memory": 7, "disk": 6}[which])
    root.meminfo(total_kb, avail_kb)
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = yes\n%s%scmd = %s\n" % (MEASURED,
        extra, fj(len(jobs), *work))
    r = run(dr, ini=ini, env=root.env(), cal="1")
    assert r.returncode == 0, r.stderr
    c = cal_line(r)
    assert c["which"] == which, c["text"]
    pct = (PCT[0], 80, 50) if which == "disk" else PCT
    check_limits(c, root.avail, free, pct)
    assert c["out"] == (MIB if which == "disk" else 0)
    if which == "memory":
        assert c["rss"] >= 64 * MIB
    assert "calibrated enc: at most %d at once (%s)" % (c["n"], which) in r.stdout.splitlines()
    assert 1 <= c["n"] < len(jobs) - 1, c["text"]      # the limit shows below
    alone_first(r, jobs[0])
    check_width(dr, r, c["n"], len(jobs))
    assert sorted(f[3] for f in r.jnl if f[0] == "end") == ["ok"] * len(jobs)
    if which == "disk":
        assert sorted(os.listdir(disk)) == ["%02d.dat" % i for i in range(6)]


def test_the_first_job_runs_alone_while_other_nodes_run_beside_it(dr, root):
    """enc's first job and `other` wait for each other: other nodes' jobs
    run beside the calibrating job, the node's own do not."""
    jobs = make_inputs(dr, 4)
    ini = ("[node enc]\ninputs = in/*.dat\ncalibrate = yes\n" + MEASURED +
           "cmd = %s\n[node other]\ncmd = %s\n" % (
               fj(4, "--touch enc_started", "--wait other_started"),
               fj(1, "--touch other_started", "--wait enc_started")))
    r = run(dr, ini=ini, env=root.env(), cal="1")
    assert r.returncode == 0, r.stderr
    alone_first(r, jobs[0])
    assert se(r, "start", "other") < se(r, "end", jobs[0]), r.jnl
    assert se(r, "start", jobs[0]) < se(r, "end", "other"), r.jnl
    c = cal_line(r)
    check_limits(c, root.avail)
    out = r.stdout.splitlines()
    mine = [l for l in out if l.startswith("calibrated ")]
    assert mine == ["calibrated enc: at most %d at once (%s)" % (c["n"], c["which"])], out
    # the line comes when the first job has ended, before the rest end
    assert out.index(mine[0]) > [i for i, l in enumerate(out) if l.endswith(" " + jobs[0])][0]
    t = r.texts
    assert t.index(c["text"]) > t.index(next(x for x in t if x.startswith(jobs[0] + " ok in ")))


# ---------------------------------------------- the remembered measurement

def calfile(dr):
    p = dr.path / ".dagrun/calibration"
    return [l.split("\t") for l in p.read_text().splitlines()] if p.exists() else []


def test_measurement_is_kept_and_a_second_run_starts_at_full_width(dr, root):
    jobs = make_inputs(dr, 6)
    ini = ("[node enc]\ninputs = in/*.dat\ncalibrate = yes\n" + MEASURED + "cmd = %s\n"
           "[node enc2]\ninputs = in/0[01].dat\ncalibrate = yes\n" + MEASURED + "cmd = %s\n") % (
               fj(6, "--cpu", "0.5", "--secs", "0.5"), fj(2, "--sleep", "0.2"))
    r1 = run(dr, ini=ini, env=root.env(), cal="1")
    assert r1.returncode == 0, r1.stderr
    c1 = cal_line(r1)
    rows = {row[0]: row for row in calfile(dr)}
    assert sorted(rows) == ["enc", "enc2"]             # one line per node
    row = rows["enc"]
    assert len(row) == 4, row
    assert abs(float(row[1]) - c1["cpu"]) <= 0.0005 + 1e-9, (row, c1["text"])
    assert float(row[2]) == c1["rss"] and float(row[3]) == c1["out"] == 0
    assert "calibration enc: from an earlier run" not in r1.texts

    r2 = run(dr, ini=ini, env=root.env(), cal="0", ledger="ledger2")
    assert r2.returncode == 0, r2.stderr
    assert "calibration enc: from an earlier run" in r2.texts
    c2 = cal_line(r2)
    assert r2.texts.index("calibration enc: from an earlier run") + 1 == r2.texts.index(c2["text"])
    # the same measurement (the file keeps cpu to 4 decimals, the log shows 3)
    assert abs(c2["cpu"] - c1["cpu"]) <= 0.001 + 1e-9, (c1["text"], c2["text"])
    assert (c2["rss"], c2["out"]) == (c1["rss"], c1["out"])
    check_limits(c2, root.avail)
    assert c2["n"] >= 2, c2["text"]
    # no lone first job: the first n start before any of them ends
    s = starts(r2)
    first_end = min(i for i, f in enumerate(r2.jnl) if f[0] == "end" and f[1].startswith("enc:"))
    assert all(se(r2, "start", j) < first_end for j in s[:c2["n"]]), r2.jnl
    check_width(dr, r2, c2["n"], len(jobs), first_alone=False)
    assert {x[0] for x in calfile(dr)} == {"enc", "enc2"}


def test_calibrate_always_measures_every_run(dr, root):
    jobs = make_inputs(dr, 4)
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = always\n%scmd = %s\n" % (MEASURED, fj(
        4, "--mem", "${mem}", "--sleep", "0.2"))
    r1 = run(dr, "-D", "mem=16", ini=ini, env=root.env(), cal="1")
    assert r1.returncode == 0, r1.stderr
    c1 = cal_line(r1)
    r2 = run(dr, "-D", "mem=96", env=root.env(), cal="1", ledger="ledger2")
    assert r2.returncode == 0, r2.stderr
    assert not any("from an earlier run" in t for t in r2.texts), r2.texts
    c2 = cal_line(r2)
    alone_first(r2, jobs[0])
    # measured again: 80 MiB more asked; allow for what the allocator and the
    # interpreter make of it
    assert c2["rss"] >= c1["rss"] + 40 * MIB, (c1["text"], c2["text"])
    check_limits(c2, root.avail)
    assert "calibrated enc: at most %d at once (%s)" % (c2["n"], c2["which"]) in r2.stdout
    (row,) = calfile(dr)
    assert row[0] == "enc" and float(row[2]) == c2["rss"]


def write_calfile(dr, *rows):
    d = dr.path / ".dagrun"
    d.mkdir(exist_ok=True)
    (d / "calibration").write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))


def test_a_measurement_from_an_earlier_run_sets_the_width_exactly(dr, root):
    """A measurement file as a previous run writes it: cpu 0.5 per second,
    100M RSS, no output; 1G available."""
    jobs = make_inputs(dr, 8)
    root.meminfo(2 * GIB // 1024, GIB // 1024)
    write_calfile(dr, ("zz", "0.1", "1", "1"), ("enc", "0.5", 100 * MIB, "0"))
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = yes\ncmd = %s\n" % fj(8)
    r = run(dr, ini=ini, env=root.env(), cal="0")
    assert r.returncode == 0, r.stderr
    assert "calibration enc: from an earlier run" in r.texts
    c = cal_line(r)
    assert (c["cpu"], c["rss"], c["out"]) == (0.5, 100 * MIB, 0)
    a, b = math.floor(0.8 * NCPU / 0.5), math.floor(0.8 * GIB / (100 * MIB))
    assert c["lim"] == [a, b, None], c["text"]
    assert c["n"] == min(a, b) and c["which"] == ("cpu" if a <= b else "memory")
    assert "calibrated enc: at most %d at once (%s)" % (c["n"], c["which"]) in r.stdout
    check_width(dr, r, c["n"], len(jobs), first_alone=False)
    # nothing was measured: the file is as it was
    assert calfile(dr) == [["zz", "0.1", "1", "1"], ["enc", "0.5", str(100 * MIB), "0"]]


def test_zero_measurements_set_no_limit(dr, root):
    jobs = make_inputs(dr, 5)
    write_calfile(dr, ("enc", "0", "0", "0"))
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = yes\ncmd = %s\n" % fj(5)
    r = run(dr, ini=ini, env=root.env(), cal="0")
    assert r.returncode == 0, r.stderr
    assert ("calibration enc: cpu 0.000 rss 0 output 0; limits cpu - memory - disk -; "
            "at most 0 at once (no limit)") in r.texts
    assert "calibrated enc: no limit" in r.stdout.splitlines()
    check_width(dr, r, 0, len(jobs), first_alone=False)


def test_a_limit_below_one_still_lets_one_job_run(dr, root):
    jobs = make_inputs(dr, 3)
    write_calfile(dr, ("enc", "100", "0", "0"))
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = yes\ncmd = %s\n" % fj(3)
    r = run(dr, ini=ini, env=root.env(), cal="0")
    assert r.returncode == 0, r.stderr
    assert ("calibration enc: cpu 100.000 rss 0 output 0; limits cpu 0 memory - disk -; "
            "at most 1 at once (cpu)") in r.texts
    assert "calibrated enc: at most 1 at once (cpu)" in r.stdout.splitlines()
    check_width(dr, r, 1, len(jobs), first_alone=False)


def test_quiet_prints_no_calibrated_line(dr, root):
    make_inputs(dr, 2)
    write_calfile(dr, ("enc", "0.5", MIB, "0"))
    r = run(dr, "-q", ini="[node enc]\ninputs = in/*.dat\ncalibrate = yes\ncmd = %s\n" % fj(2),
            env=root.env(), cal="0")
    assert r.returncode == 0, r.stderr
    assert "calibrated" not in r.stdout
    cal_line(r)                                         # main.log still has it


def test_calibrate_no_runs_at_full_width_and_measures_nothing(dr, root):
    make_inputs(dr, 3)
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = no\ncmd = %s\n" % fj(3, "--meet 3")
    r = run(dr, ini=ini, env=root.env(), cal="-")
    assert r.returncode == 0, r.stderr          # the three met: all ran at once
    assert not any(t.startswith("calibration") for t in r.texts), r.texts
    assert "calibrated" not in r.stdout
    assert not (dr.path / ".dagrun/calibration").exists()


# -------------------------------------------------- a calibrating job fails

def test_a_failed_calibrating_job_lets_the_next_job_calibrate(dr, root):
    jobs = make_inputs(dr, 6)
    ini = "[node enc]\ninputs = in/*.dat\ncalibrate = yes\n%scmd = %s\n" % (MEASURED, fj(
        6, "--fail-first", "--cpu", "0.5", "--secs", "0.5"))
    r = run(dr, "-k", ini=ini, env=root.env(), cal="1")
    assert r.returncode == 1, r.stderr
    st = {f[1]: f[3] for f in r.jnl if f[0] == "end"}
    assert st == dict([(jobs[0], "failed")] + [(j, "ok") for j in jobs[1:]]), st
    s = starts(r)
    assert s[:2] == jobs[:2], s
    # the first failed alone; the second then ran alone and calibrated
    assert se(r, "end", jobs[0]) < se(r, "start", jobs[1]) < se(r, "end", jobs[1]) \
        < se(r, "start", s[2]), r.jnl
    c = cal_line(r)
    check_limits(c, root.avail)
    t = r.texts
    assert t.index(c["text"]) > t.index(next(x for x in t if x.startswith(jobs[1] + " ok")))
    assert c["cpu"] > 0.2                          # the second job's busy loop, measured
    ev = ledger(dr)
    assert ledger_in_flight(ev[4:]) == min(c["n"], 4), ev
    assert in_flight(r) <= c["n"]


# ------------------------------------------------- inputs found late, disk

def test_a_node_whose_inputs_come_from_a_prerequisite_calibrates_too(dr, root):
    """enc's inputs exist only once mk has run: its jobs are made then, and
    the first of them still runs alone and calibrates."""
    (dr.path / "fj.py").write_text(FJ)
    ini = ("[node mk]\ncmd = sh -c 'mkdir gen && for i in 0 1 2 3 4; do echo $i > gen/$i.dat; done'\n"
           "[node enc]\nafter = mk\ninputs = gen/*.dat\ncalibrate = yes\n" + MEASURED +
           "cmd = %s\n" % fj(5, "--cpu", "0.5", "--secs", "0.5"))
    r = run(dr, ini=ini, env=root.env(), cal="1")
    assert r.returncode == 0, r.stderr
    jobs = ["enc:gen/%d.dat" % i for i in range(5)]
    assert se(r, "end", "mk") < se(r, "start", jobs[0])
    alone_first(r, jobs[0])
    c = cal_line(r)
    check_limits(c, root.avail)
    check_width(dr, r, c["n"], len(jobs))
    assert sorted(f[3] for f in r.jnl if f[0] == "end") == ["ok"] * 6


def test_an_earlier_measurement_limits_by_disk_before_the_output_dir_exists(dr, root, tmpfs):
    """The outputs go to disk/new on an 8M tmpfs, made when the first job
    starts: 1M outputs, half the free space: at most 4 at once."""
    make_inputs(dr, 6)
    write_calfile(dr, ("enc", "0.01", "1000", MIB))
    st = os.statvfs(tmpfs)
    free = st.f_bavail * st.f_frsize
    ini = ("[node enc]\ninputs = in/*.dat\noutput_dir = disk/new\ncalibrate = yes\n"
           "calibrate_disk_percent = 50\ncmd = %s\n" % fj(6, "--out {output}", "--bytes %d" % MIB))
    r = run(dr, ini=ini, env=root.env(), cal="0")
    assert r.returncode == 0, r.stderr
    c = cal_line(r)
    assert c["lim"][2] == math.floor(0.5 * free / MIB), c["text"]
    assert c["which"] == "disk" and c["n"] == c["lim"][2], c["text"]


# ------------------------------------------------------------ config errors

@pytest.mark.parametrize("keys,message", [
    ("cmd = true\ncalibrate = yes\n", "3: calibrate needs inputs or input_list"),
    ("cmd = true\ncalibrate = always\n", "3: calibrate needs inputs or input_list"),
    ("cmd = true\noutput = o.txt\ncalibrate = yes\n", "3: calibrate needs inputs or input_list"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate = maybe\n",
     "4: calibrate: expected yes, no or always, got 'maybe'"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate = true\n",
     "4: calibrate: expected yes, no or always, got 'true'"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate = yes\ncalibrate = no\n",
     "5: duplicate key 'calibrate' in [node enc]"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate_cpu_percent = 0\n",
     "4: calibrate_cpu_percent: expected a percentage above 0 and up to 100"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate_cpu_percent = 101\n",
     "4: calibrate_cpu_percent: expected a percentage above 0 and up to 100"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate_memory_percent = -5\n",
     "4: calibrate_memory_percent: expected a percentage above 0 and up to 100"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate_memory_percent = 50%\n",
     "4: calibrate_memory_percent: expected a percentage above 0 and up to 100"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate_disk_percent = lots\n",
     "4: calibrate_disk_percent: expected a percentage above 0 and up to 100"),
    ("inputs = in/*.dat\ncmd = true\ncalibrate_disk_percent =\n",
     "4: calibrate_disk_percent: expected a percentage above 0 and up to 100"),
], ids=["plain-yes", "plain-always", "plain-with-output", "bad-value", "true", "duplicate",
        "cpu-0", "cpu-101", "memory-negative", "memory-percent-sign", "disk-text", "disk-empty"])
def test_calibrate_config_errors(dr, keys, message):
    make_inputs(dr, 1)
    r = dr.run(ini="[node first]\ncmd = touch ran\n[node enc]\n" + keys)
    # line numbers above count from [node enc], the third line
    line, text = message.split(": ", 1)
    want = "dagrun.ini:%d: %s" % (int(line) + 2, text)
    assert r.returncode == 2, r.stderr
    assert want in r.stderr, r.stderr
    assert r.stderr.startswith(want), r.stderr
    assert not (dr.path / "ran").exists()


def test_good_calibrate_keys_pass_the_check(dr):
    make_inputs(dr, 1)
    (dr.path / "list").write_text("in/00.dat\n")
    r = dr.run("-c", ini="[node enc]\ninputs = in/*.dat\ncmd = true\ncalibrate = always\n"
                         "calibrate_cpu_percent = 100\ncalibrate_memory_percent = 0.5\n"
                         "calibrate_disk_percent = 99.9\n"
                         "[node enc2]\ninput_list = list\ncmd = true\ncalibrate = yes\n"
                         "[node enc3]\ninputs = in/*.dat\ncmd = true\ncalibrate = no\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dagrun.ini: ok, 3 nodes\n"


# ------------------------------------------------------------ the journal

def test_journal_records_the_expansion_of_a_calibrating_node(dr, root):
    make_inputs(dr, 3)
    r = run(dr, ini="[node enc]\ninputs = in/*.dat\ncalibrate = yes\ncmd = %s\n" % fj(3),
            env=root.env(), cal="1")
    assert r.returncode == 0, r.stderr
    assert ["expand", "enc", "3"] in r.jnl, r.jnl
