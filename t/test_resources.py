"""Resource-aware launching: the [resources] gates (cpu_percent, memory_percent,
disk_free, load_avg_1m and -l, cpu_pressure, memory_pressure), declared cpus
and mem, memory_suspend_percent, poll, wait_timeout and [run] deadline.

Most tests point DAGRUN_SYSROOT at a directory of fixture files (proc/meminfo,
proc/stat, proc/loadavg, proc/pressure/*, proc/self/cgroup and
sys/fs/cgroup/...) and rewrite them, atomically, while the run goes: a gate
is shown holding a second job while the first runs, then releasing it, or
timing out.  The jobs wait for files the test creates, so nothing depends on
how fast the machine is.  A few tests use the real machine: a tmpfs for
disk_free, a busy loop for -l, SIGSTOP of a real job, strace for wake-ups."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import conftest
from conftest import clean_env

PY = sys.executable
SLOW = conftest.SLOW

# The jobs' helper.
#   --pid F      write our PID to F (atomically)
#   --marker F   create F once started
#   --wait F     wait (bounded) for file F; exit 9 if it never comes
#   --burn F     spin on the CPU until file F exists (bounded)
JOB = r'''
import os, sys, time
a = sys.argv[1:]
opt = dict(zip(a[::2], a[1::2]))
if "--pid" in opt:
    with open(opt["--pid"] + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(opt["--pid"] + ".tmp", opt["--pid"])
if "--marker" in opt:
    open(opt["--marker"], "w").close()
status = 0
if "--burn" in opt:
    end = time.monotonic() + 30
    while not os.path.exists(opt["--burn"]) and time.monotonic() < end:
        pass
if "--wait" in opt:
    end = time.monotonic() + 30
    while not os.path.exists(opt["--wait"]) and time.monotonic() < end:
        time.sleep(0.005)
    status = 0 if os.path.exists(opt["--wait"]) else 9
sys.exit(status)
'''


def setup_job(dr):
    (dr.path / "job.py").write_text(JOB)
    return "%s job.py" % PY


def waiter(job, name, extra=""):
    """A node that records its PID and waits for go_NAME."""
    return "[node %s]\ncmd = %s --pid pid_%s --wait go_%s%s\n" % (name, job, name, name, extra)


class Sysroot:
    """Fixture files under a fake / for DAGRUN_SYSROOT, written atomically
    (a reader sees the old file or the new one, never half of one)."""

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

    def stat(self, busy, idle):
        # user nice system idle iowait irq softirq steal
        self.put("proc/stat", "cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\n"
                 "intr 0\nctxt 0\n" % (busy, idle, busy, idle))

    def loadavg(self, l1, runnable=1):
        self.put("proc/loadavg", "%s 0.00 0.00 %d/100 4242\n" % (l1, runnable))

    def pressure(self, what, avg10):
        self.put("proc/pressure/" + what,
                 "some avg10=%.2f avg60=0.00 avg300=0.00 total=1000\n"
                 "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n" % avg10)

    def cgroup(self, path, **files):
        """/proc/self/cgroup naming PATH, and files of that cgroup
        (memory_max=..., memory_current=..., cpu_max=...)."""
        self.put("proc/self/cgroup", "0::%s\n" % path)
        for k, v in files.items():
            self.put("sys/fs/cgroup%s/%s" % (path, k.replace("_", ".")), "%s\n" % v)

    def env(self, **extra):
        return clean_env(DAGRUN_SYSROOT=self.path, **extra)


@pytest.fixture
def root(tmp_path):
    return Sysroot(tmp_path / "sysroot")


def status(rc):
    return 128 - rc if rc < 0 else rc


def journal(dr):
    p = dr.path / ".dagrun/journal"
    return dr.journal() if p.exists() else []


def started(dr):
    """Names of the jobs that started, in order."""
    return [f[1] for f in journal(dr) if f[0] == "start"]


def ended(dr):
    return [f[1] for f in journal(dr) if f[0] == "end"]


def states(dr):
    return {f[1]: f[3] for f in journal(dr) if f[0] == "end"}


def events(dr):
    """(kind, job) of every journal record that names a job, in order."""
    return [(f[0], f[1]) for f in journal(dr) if f[0] in ("start", "end", "suspend", "resume")]


def mainlog(dr):
    p = dr.path / ".dagrun/main.log"
    return p.read_text() if p.exists() else ""


def waits(dr):
    """The 'waiting for resources' lines of main.log: [(time, text)]."""
    out = []
    for line in mainlog(dr).splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\tINFO\twaiting for resources: (.*)$",
                     line)
        if m:
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            out.append((t, m.group(3)))
    return out


def go(dr, *names):
    for n in names:
        (dr.path / ("go_" + n)).touch()


def pid(dr, name):
    p = dr.path / ("pid_" + name)
    return int(p.read_text()) if p.exists() else None


def jpid(dr, name):
    """The PID the journal's start record gives for job NAME."""
    return [int(f[3]) for f in journal(dr) if f[0] == "start" and f[1] == name][-1]


def proc_state(pid):
    """The state letter of /proc/PID/stat, or None once the process is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def finish(p, timeout=30):
    """Wait for a dagrun started with popen; kill it if it does not end."""
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


def own(stderr):
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


# ------------------------------------------------- a gate holds, then releases
#
# Each case: the [resources] lines (or -l), how to make the gate hold, how to
# release it, and the "waiting for resources:" text that names the metric.

def mem_hold(root):
    root.meminfo(1000000, 100000)          # 90% in use


def mem_release(root):
    root.meminfo(1000000, 900000)          # 10%


def cg_hold(root):
    # plenty of RAM, but the cgroup's limit is lower and nearly used up
    root.meminfo(16000000, 15000000)
    root.cgroup("/dagrun.slice/test", memory_max=1000000000, memory_current=900000000)


def cg_release(root):
    root.cgroup("/dagrun.slice/test", memory_max=1000000000, memory_current=100000000)


def load_hold(root):
    root.loadavg("0.00", runnable=5)       # runnable - 1 = 4


def load_release(root):
    root.loadavg("0.00", runnable=1)


GATES = {
    "memory_percent": ("memory_percent = 50", [], mem_hold, mem_release,
                       "memory_percent: 90% in use >= 50%"),
    "memory_percent-cgroup": ("memory_percent = 50", [], cg_hold, cg_release,
                              "memory_percent: 90% in use >= 50%"),
    "load_avg_1m-runnable": ("load_avg_1m = 1.5", [], load_hold, load_release,
                             "load_avg_1m: 4.00 >= 1.5"),
    "-l-runnable": ("", ["-l", "1.5"], load_hold, load_release, "load_avg_1m: 4.00 >= 1.5"),
    "cpu_pressure": ("cpu_pressure = 20", [], lambda r: r.pressure("cpu", 50),
                     lambda r: r.pressure("cpu", 1), "cpu_pressure: 50.0 >= 20"),
    "memory_pressure": ("memory_pressure = 20", [], lambda r: r.pressure("memory", 50),
                        lambda r: r.pressure("memory", 1), "memory_pressure: 50.0 >= 20"),
}


def gate_ini(job, res, extra=""):
    return "[resources]\n%s\npoll = 100ms\n%s\n%s\n%s" % (res, extra, waiter(job, "a"),
                                                         waiter(job, "b"))


@pytest.mark.parametrize("gate", list(GATES))
def test_gate_holds_the_second_job_while_the_first_runs_then_releases_it(dr, root, gate):
    res, args, hold, release, text = GATES[gate]
    job = setup_job(dr)
    hold(root)
    p = dr.popen("-j", "2", *args, ini=gate_ini(job, res), env=root.env())
    try:
        dr.wait_for(lambda: "waiting for resources: " + text in mainlog(dr), 20,
                    "main.log: waiting for resources: " + text)
        first = started(dr)
        assert len(first) == 1, first              # one job may always start
        other = "b" if first == ["a"] else "a"
        assert started(dr) == first and p.poll() is None
        release(root)
        dr.wait_for(lambda: other in started(dr), 20, "the held job to start")
        assert ended(dr) == [], "the second job must start while the first still runs"
        go(dr, "a", "b")
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert states(dr) == {"a": "ok", "b": "ok"}


@pytest.mark.parametrize("gate", list(GATES))
def test_gate_wait_timeout_ends_the_run_with_exit_4_naming_the_metric(dr, root, gate):
    res, args, hold, release, text = GATES[gate]
    job = setup_job(dr)
    hold(root)
    t0 = time.monotonic()
    r = dr.run("-j", "2", *args, ini=gate_ini(job, res, "wait_timeout = 500ms"),
               env=root.env(), timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 4, r.stderr
    assert "resource wait timed out: " + text in r.stderr
    assert "resource wait timed out: " + text in (dr.path / ".dagrun/error.log").read_text()
    assert len(started(dr)) == 1
    # the running job was terminated, the held one never ran
    assert sorted(states(dr).values()) == ["cancelled", "cancelled"], states(dr)
    assert took < 15 * SLOW          # the job alone would wait 30 s for its file


def test_cgroup_limit_above_ram_is_ignored_for_memory_percent(dr, root):
    """memory_percent goes against the cgroup only when its limit is lower
    than RAM: here the cgroup says 10% but the machine 90%."""
    job = setup_job(dr)
    root.meminfo(1000000, 100000)
    root.cgroup("/big", memory_max=100 * 1024 ** 3, memory_current=10 * 1024 ** 3)
    r = dr.run("-j", "2", ini=gate_ini(job, "memory_percent = 50", "wait_timeout = 300ms"),
               env=root.env())
    assert r.returncode == 4, r.stderr
    assert "resource wait timed out: memory_percent: 90% in use >= 50%" in r.stderr


def test_cgroup_without_a_memory_limit_falls_back_to_meminfo(dr, root):
    job = setup_job(dr)
    root.meminfo(1000000, 900000)                      # 10%: open
    root.cgroup("/nolimit", memory_max="max", memory_current=999999999999)
    (dr.path / "go_a").touch()
    (dr.path / "go_b").touch()
    r = dr.run("-j", "2", ini=gate_ini(job, "memory_percent = 50", "wait_timeout = 5s"),
               env=root.env())
    assert r.returncode == 0, r.stderr
    assert "waiting for resources" not in mainlog(dr)


def test_waiting_is_logged_about_once_per_poll_interval(dr, root):
    """-v wakes dagrun every 0.1 s to show live output: the wait is still
    logged only once per poll interval (200ms)."""
    job = setup_job(dr)
    mem_hold(root)
    ini = gate_ini(job, "memory_percent = 50").replace("poll = 100ms", "poll = 200ms")
    p = dr.popen("-v", "-j", "2", ini=ini, env=root.env())
    try:
        dr.wait_for(lambda: len(waits(dr)) >= 5, 20, "five 'waiting for resources' lines")
        mem_release(root)
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "the held job to start")
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0
    w = waits(dr)
    assert all(text == "memory_percent: 90% in use >= 50%" for _, text in w), w
    gaps = [b[0] - a[0] for a, b in zip(w, w[1:])]
    # never more often than the poll interval (1 ms of timestamp rounding)
    assert min(gaps) >= 0.2 - 0.002, gaps
    # and not once in a long while either: the wait is re-checked every poll
    assert sum(gaps) / len(gaps) < 1.0 * SLOW, gaps


# --------------------------------------------------------------- cpu_percent
#
# The busy % is the delta between two readings of /proc/stat at least 0.25 s
# apart, and a reading that has not moved keeps the last measurement.  Which
# readings dagrun takes, and when, is its own business: so b is first held by
# memory_percent, which makes dagrun re-read everything once per poll while
# it waits, and cpu_percent, checked before memory, shows in the wait line as
# soon as the busy delta has been measured.

CPU_INI = """[resources]
cpu_percent = 50
memory_percent = 50
poll = 100ms
%s
%s%s"""


def cpu_hold(dr, root, p):
    """b held by memory, then by a busy delta; memory released: cpu alone holds."""
    root.stat(busy=100, idle=900)
    root.meminfo(1000000, 100000)                          # 90%
    dr.wait_for(lambda: "waiting for resources: memory_percent: 90%" in mainlog(dr), 20,
                "b held by memory_percent")
    root.stat(busy=1000, idle=900)                         # +900 busy, +0 idle: 100%
    dr.wait_for(lambda: "waiting for resources: cpu_percent: 100% >= 50%" in mainlog(dr),
                20, "the busy delta to hold b")
    root.meminfo(1000000, 900000)                          # 10%: only the cpu holds b
    n = len(waits(dr))
    dr.wait_for(lambda: len(waits(dr)) >= n + 2 or p.poll() is not None, 20,
                "two more wait lines")
    assert all(t == "cpu_percent: 100% >= 50%" for _, t in waits(dr)[n:]), waits(dr)
    assert len(started(dr)) == 1


def test_cpu_percent_holds_on_a_busy_delta_and_releases_on_an_idle_one(dr, root):
    job = setup_job(dr)
    root.stat(busy=100, idle=900)
    root.meminfo(1000000, 100000)
    p = dr.popen("-j", "2", ini=CPU_INI % ("", waiter(job, "a"), waiter(job, "b")),
                 env=root.env())
    try:
        cpu_hold(dr, root, p)
        root.stat(busy=1000, idle=10900)                   # +0 busy, +10000 idle: 0%
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "b to start on an idle delta")
        assert ended(dr) == []
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0
    assert states(dr) == {"a": "ok", "b": "ok"}


@pytest.mark.heavy
def test_cpu_percent_wait_timeout_exit_4(dr, root):
    job = setup_job(dr)
    root.stat(busy=100, idle=900)
    root.meminfo(1000000, 100000)
    p = dr.popen("-j", "2", ini=CPU_INI % ("wait_timeout = 2s", waiter(job, "a"),
                                            waiter(job, "b")), env=root.env())
    try:
        cpu_hold(dr, root, p)
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 4, err
    assert "resource wait timed out: cpu_percent: 100% >= 50%" in err
    assert sorted(states(dr).values()) == ["cancelled", "cancelled"], states(dr)


# -------------------------------------------------------- load_avg_1m and -l

LOAD_INI = "[resources]\n%s\npoll = 100ms\n%s%s%s"


# 0.20: the first reading differs from "nothing seen yet", and must not make
# dagrun forget the job it started before that reading (commit 92b0ad4 did:
# all three started)
@pytest.mark.parametrize("l1", ["0.00", "0.20"])
@pytest.mark.parametrize("how", ["load_avg_1m", "-l"])
def test_load_counts_jobs_started_since_the_average_last_changed(dr, root, l1, how):
    """load1 below the limit and unchanging: estimate = load1 + jobs started
    since it changed, so with 1.5 at most two of -j 3 start; when load1
    moves, the count restarts and the third starts."""
    job = setup_job(dr)
    root.loadavg(l1)
    res, args = ("load_avg_1m = 1.5", []) if how == "load_avg_1m" else ("", ["-l", "1.5"])
    ini = LOAD_INI % (res, waiter(job, "a"), waiter(job, "b"), waiter(job, "c"))
    p = dr.popen("-j", "3", *args, ini=ini, env=root.env())
    try:
        dr.wait_for(lambda: "waiting for resources: load_avg_1m: " in mainlog(dr) or
                    len(started(dr)) == 3, 20, "the load gate to hold the third job")
        assert len(started(dr)) == 2, started(dr)
        text = waits(dr)[0][1]
        assert text == "load_avg_1m: %.2f >= 1.5" % (float(l1) + 2), text
        root.loadavg("0.30")                    # the kernel averaged again
        dr.wait_for(lambda: len(started(dr)) == 3, 20, "the third job to start")
        assert ended(dr) == []
        go(dr, "a", "b", "c")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


def test_l_option_overrides_load_avg_1m(dr, root):
    job = setup_job(dr)
    root.loadavg("0.00", runnable=3)            # estimate 2
    ini = LOAD_INI % ("load_avg_1m = 1.5", waiter(job, "a"), waiter(job, "b"), "")
    # with the key alone b would wait for a; -l 10 lets both run at once
    p = dr.popen("-j", "2", "-l", "10", ini=ini, env=root.env())
    try:
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "both jobs to start under -l 10")
        assert "waiting for resources" not in mainlog(dr)
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


@pytest.mark.heavy
def test_l_with_a_real_busy_loop_holds_the_second_job(dr):
    """-l 0.01 on the real machine: while a burns the CPU, the estimate is at
    least the runnable count less dagrun (the busy loop), or load1 plus the
    jobs started since it changed; either way >= 0.01.  b may start only when
    a has ended (then one job may always start)."""
    job = setup_job(dr)
    ini = ("[resources]\npoll = 100ms\n[node a]\ncmd = %s --pid pid_a --burn stop_a\n"
           "[node b]\ncmd = %s --marker b_started\n" % (job, job))
    p = dr.popen("-j", "2", "-l", "0.01", ini=ini)
    try:
        dr.wait_for(lambda: len(waits(dr)) >= 3, 20, "three 'waiting for resources' lines")
        assert all(t.startswith("load_avg_1m: ") for _, t in waits(dr)), waits(dr)
        assert started(dr) == ["a"]
        assert not (dr.path / "b_started").exists()
        (dr.path / "stop_a").touch()
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0
    assert events(dr) == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b")]


# ------------------------------------------------------------ declared cpus

def cpus_ini(job, a, b):
    return "%scpus = %s\n%scpus = %s\n" % (waiter(job, "a"), a, waiter(job, "b"), b)


def test_declared_cpus_hold_a_job_that_would_pass_the_cpu_count(dr, root):
    job = setup_job(dr)
    root.cgroup("/one", cpu_max="100000 100000")      # one CPU
    p = dr.popen("-j", "2", ini=cpus_ini(job, 1, 1), env=root.env())
    try:
        dr.wait_for(lambda: "waiting for resources: cpus: 1 running + 1 > 1" in mainlog(dr),
                    20, "the cpus wait")
        first = started(dr)
        assert len(first) == 1
        go(dr, first[0])
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "the second job to start")
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0
    ev = events(dr)
    assert ev.index(("end", first[0])) < ev.index(("start", "b" if first == ["a"] else "a")), ev


def test_declared_cpus_that_fit_run_together(dr, root):
    job = setup_job(dr)
    root.cgroup("/one", cpu_max="100000 100000")
    p = dr.popen("-j", "2", ini=cpus_ini(job, 0.5, 0.5), env=root.env())
    try:
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "both 0.5-cpu jobs to start")
        assert ended(dr) == []
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


def test_declared_cpus_above_the_count_still_run_alone(dr, root):
    """A gate never deadlocks: with nothing running, a 4-cpu job starts on one CPU."""
    job = setup_job(dr)
    root.cgroup("/one", cpu_max="100000 100000")
    go(dr, "a", "b")
    r = dr.run("-j", "2", ini=cpus_ini(job, 4, 4), env=root.env())
    assert r.returncode == 0, r.stderr
    ev = events(dr)
    assert ev.index(("end", "a")) < ev.index(("start", "b")) or \
        ev.index(("end", "b")) < ev.index(("start", "a")), ev


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs in our affinity")
@pytest.mark.parametrize("want,together", [(2, False), (1, True)])
def test_declared_cpus_against_a_two_cpu_quota(dr, root, want, together):
    job = setup_job(dr)
    root.cgroup("/a/b", cpu_max="200000 100000")
    root.put("sys/fs/cgroup/a/cpu.max", "max 100000\n")
    p = dr.popen("-j", "2", ini=cpus_ini(job, want, want) + "[resources]\npoll = 100ms\n",
                 env=root.env())
    try:
        if together:
            dr.wait_for(lambda: len(started(dr)) == 2, 20, "both jobs to start")
        else:
            dr.wait_for(lambda: "waiting for resources: cpus: 2 running + 2 > 2" in mainlog(dr),
                        20, "the cpus wait")
            assert len(started(dr)) == 1
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


# ------------------------------------------------------------- declared mem

def mem_ini(job, a="500M", b="500M", res=""):
    return "[resources]\npoll = 100ms\n%s\n%smem = %s\n%smem = %s\n" % (
        res, waiter(job, "a"), a, waiter(job, "b"), b)


def test_declared_mem_holds_a_job_that_would_pass_100_percent(dr, root):
    """MemTotal ~977M, 10% in use: a declares 500M (not yet used), so b's
    500M would pass 100%; more RAM releases it."""
    job = setup_job(dr)
    root.meminfo(1000000, 900000)
    p = dr.popen("-j", "2", ini=mem_ini(job), env=root.env())
    try:
        dr.wait_for(lambda: re.search(r"waiting for resources: (mem|memory_percent): 10% in use "
                                      r"\+ declared 1000\.0M >= 100%", mainlog(dr)),
                    20, "the declared-memory wait")
        assert len(started(dr)) == 1
        root.meminfo(4000000, 3900000)
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "the second job to start")
        assert ended(dr) == []
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


def test_declared_mem_that_fits_runs_together(dr, root):
    job = setup_job(dr)
    root.meminfo(1000000, 900000)
    p = dr.popen("-j", "2", ini=mem_ini(job, "300M", "300M"), env=root.env())
    try:
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "both jobs to start")
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0
    assert "waiting for resources" not in mainlog(dr)


def test_declared_mem_counts_against_memory_percent(dr, root):
    """10% in use + 300M declared by the running job + 300M = 72% >= 50%."""
    job = setup_job(dr)
    root.meminfo(1000000, 900000)
    r = dr.run("-j", "2", ini=mem_ini(job, "300M", "300M",
                                      "memory_percent = 50\nwait_timeout = 300ms"),
               env=root.env())
    assert r.returncode == 4, r.stderr
    assert "resource wait timed out: memory_percent: 10% in use + declared 600.0M >= 50%" \
        in r.stderr


def test_measured_rss_replaces_the_declaration_of_a_running_job(dr, root):
    """Once the running job's measured RSS (its /proc/PID/statm) reaches 400M
    of its 500M, only 100M of it is still to come: 10% + 100M + 500M < 100%."""
    job = setup_job(dr)
    root.meminfo(1000000, 900000)
    p = dr.popen("-j", "2", ini=mem_ini(job), env=root.env())
    try:
        dr.wait_for(lambda: "declared 1000.0M >= 100%" in mainlog(dr), 20,
                    "the declared-memory wait")
        (first,) = started(dr)
        dr.wait_for(lambda: pid(dr, first), 20, "the first job's PID")
        pages = 400 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
        root.put("proc/%d/statm" % pid(dr, first), "%d %d 0 0 0 0 0\n" % (pages, pages))
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "the second job to start")
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


# ------------------------------------------------------------------ disk_free

@pytest.fixture
def tmpfs(tmp_path):
    """A 1M tmpfs mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


DISK_INI = "[resources]\ndisk_free = 512K\ndisk_path = disk\npoll = 100ms\n%s\n%s%s"


def test_disk_free_on_a_real_tmpfs_holds_then_releases(dr, tmpfs):
    job = setup_job(dr)
    fill = tmpfs / "fill"
    fill.write_bytes(b"x" * (768 * 1024))                 # 256K left of 1M
    p = dr.popen("-j", "2", ini=DISK_INI % ("", waiter(job, "a"), waiter(job, "b")))
    try:
        dr.wait_for(lambda: re.search(r"waiting for resources: disk_free: [0-9.]+K < 512\.0K",
                                      mainlog(dr)), 20, "the disk_free wait")
        assert len(started(dr)) == 1
        fill.unlink()
        dr.wait_for(lambda: len(started(dr)) == 2, 20, "the second job to start")
        assert ended(dr) == []
        go(dr, "a", "b")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0


def test_disk_free_wait_timeout_exit_4(dr, tmpfs):
    job = setup_job(dr)
    (tmpfs / "fill").write_bytes(b"x" * (768 * 1024))
    r = dr.run("-j", "2", ini=DISK_INI % ("wait_timeout = 300ms", waiter(job, "a"),
                                          waiter(job, "b")))
    assert r.returncode == 4, r.stderr
    assert re.search(r"resource wait timed out: disk_free: [0-9.]+K < 512\.0K", r.stderr)


# ---------------------------------------------------- memory_suspend_percent

SUSPEND_INI = """[resources]
memory_percent = 80
memory_suspend_percent = 95
poll = 100ms
%s
[node x]
priority = 3
cmd = %s --pid pid_x --wait go_x
[node a]
priority = 2
cmd = %s --pid pid_a --wait go_a
[node b]
priority = 1
cmd = %s --pid pid_b --wait go_b
[node c]
after = x
cmd = %s --pid pid_c --wait go_c
"""


@pytest.mark.heavy
def test_memory_suspend_stops_the_newest_jobs_and_continues_them(dr, root):
    """x, a, b start in that order.  Above 95%: b (the newest), then a, get
    SIGSTOP, one per poll; never x, the last one running.  While any is
    suspended nothing new starts (c, ready once x ends).  Under 80% they are
    continued, then c starts.  Nothing fails, nothing is retried."""
    job = setup_job(dr)
    root.meminfo(1000000, 900000)                          # 10%
    p = dr.popen("-j", "4", ini=SUSPEND_INI % ("", job, job, job, job), env=root.env())
    try:
        dr.wait_for(lambda: started(dr) == ["x", "a", "b"], 20, "x, a, b to start")
        dr.wait_for(lambda: all(pid(dr, n) for n in "xab"), 20, "their PIDs")
        pids = {n: pid(dr, n) for n in "xab"}
        root.meminfo(1000000, 30000)                       # 97%
        dr.wait_for(lambda: ("suspend", "a") in events(dr), 20, "a to be suspended")
        ev = events(dr)
        assert ev.index(("suspend", "b")) < ev.index(("suspend", "a")), ev
        dr.wait_for(lambda: proc_state(pids["b"]) == "T" and proc_state(pids["a"]) == "T",
                    20, "a and b stopped (state T)")
        # x is the last job running: it is never stopped, whatever the memory
        time.sleep(0.5)                                    # five poll intervals
        assert proc_state(pids["x"]) not in ("T", None)
        assert ("suspend", "x") not in events(dr)
        go(dr, "x")
        dr.wait_for(lambda: "waiting for resources: memory_suspend_percent: a job is suspended" in mainlog(dr),
                    20, "c to wait while jobs are suspended")
        assert "c" not in started(dr)
        root.meminfo(1000000, 900000)                      # 10%
        dr.wait_for(lambda: "c" in started(dr), 20, "c to start after the resume")
        for n in "ab":
            assert proc_state(pids[n]) not in ("T", None), n
        go(dr, "a", "b", "c")
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    ev = events(dr)
    assert ev.index(("resume", "a")) < ev.index(("start", "c"))
    assert ev.index(("resume", "b")) < ev.index(("start", "c"))
    assert states(dr) == {"x": "ok", "a": "ok", "b": "ok", "c": "ok"}
    assert started(dr).count("b") == 1 and started(dr).count("a") == 1     # not retried
    assert "suspended b (memory 97%)" in out
    assert "suspended a (memory 97%)" in out
    assert "resumed b (memory 10%)" in out
    assert re.search(r"^resumed a \(memory \d+%\)$", out, re.M), out
    assert "suspended x" not in out


def test_memory_suspend_never_stops_the_only_running_job(dr, root):
    job = setup_job(dr)
    root.meminfo(1000000, 30000)                           # 97% from the start
    ini = ("[resources]\nmemory_suspend_percent = 95\npoll = 50ms\n" + waiter(job, "a"))
    p = dr.popen("-j", "2", ini=ini, env=root.env())
    try:
        dr.wait_for(lambda: pid(dr, "a"), 20, "a's PID")
        time.sleep(0.5)                                    # ten poll intervals
        assert proc_state(pid(dr, "a")) not in ("T", None)
        go(dr, "a")
        finish(p)
    finally:
        stop(p)
    assert p.returncode == 0
    assert ("suspend", "a") not in events(dr)


@pytest.mark.heavy
def test_a_suspended_job_is_continued_when_it_is_the_only_one_left(dr, root):
    """Memory stays high, but once every other job has ended nothing is left
    to free it: leaving b stopped would leave nothing running, for ever
    (commit 92b0ad4 did)."""
    job = setup_job(dr)
    root.meminfo(1000000, 900000)
    ini = ("[run]\ndeadline = 20s\n[resources]\nmemory_suspend_percent = 95\npoll = 100ms\n"
           "%spriority = 2\n%spriority = 1\n" % (waiter(job, "a"), waiter(job, "b")))
    p = dr.popen("-j", "2", ini=ini, env=root.env())
    try:
        dr.wait_for(lambda: started(dr) == ["a", "b"] and pid(dr, "b"), 20, "a and b to start")
        root.meminfo(1000000, 30000)                       # 97%, and it stays there
        dr.wait_for(lambda: ("suspend", "b") in events(dr), 20, "b to be suspended")
        go(dr, "a", "b")
        dr.wait_for(lambda: "a" in ended(dr), 20, "a to end")
        # b is now the only job; leaving it stopped means nothing ever runs
        dr.wait_for(lambda: ("resume", "b") in events(dr), 3, "b to be continued")
        out, err = finish(p)
    finally:
        stop(p)
    assert p.returncode == 0, err
    assert states(dr) == {"a": "ok", "b": "ok"}
    assert events(dr).count(("suspend", "b")) == 1        # not stopped again, alone


@pytest.mark.heavy
def test_deadline_ends_a_suspended_job_too(dr, root):
    """A stopped job must see the SIGTERM: it gets SIGCONT with it."""
    job = setup_job(dr)
    root.meminfo(1000000, 30000)                           # 97% from the start
    ini = ("[run]\ndeadline = 1500ms\nkill_grace = 30s\n[resources]\n"
           "memory_suspend_percent = 95\npoll = 100ms\n"
           "%spriority = 2\n%spriority = 1\n" % (waiter(job, "a"), waiter(job, "b")))
    t0 = time.monotonic()
    p = dr.popen("-j", "2", ini=ini, env=root.env())
    try:
        dr.wait_for(lambda: ("suspend", "b") in events(dr), 20, "b to be suspended")
        out, err = finish(p)
    finally:
        stop(p)
    took = time.monotonic() - t0
    assert p.returncode == 4, err
    assert "deadline passed" in err
    assert states(dr) == {"a": "cancelled", "b": "cancelled"}
    assert took < 15 * SLOW                     # not kill_grace, not the 30 s wait
    assert proc_state(jpid(dr, "b")) is None


# ---------------------------------------------------------------- deadline

def test_deadline_terminates_running_jobs_starts_nothing_new_exit_4(dr):
    job = setup_job(dr)
    ini = ("[run]\ndeadline = 500ms\n%s%s[node after_a]\nafter = a\ncmd = %s --marker ran\n"
           % (waiter(job, "a"), waiter(job, "b"), job))
    t0 = time.monotonic()
    r = dr.run("-j", "1", ini=ini, timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 4, r.stderr
    assert "deadline passed (0.5s after the start)" in r.stderr
    assert "deadline passed" in (dr.path / ".dagrun/error.log").read_text()
    assert len(started(dr)) == 1                # -j 1: the other never started
    st = states(dr)
    assert st[started(dr)[0]] == "cancelled"
    assert all(s != "ok" for s in st.values()), st
    assert set(st) == {"a", "b", "after_a"}
    assert not (dr.path / "ran").exists()
    assert took < 15 * SLOW
    assert proc_state(jpid(dr, started(dr)[0])) is None


def test_a_run_that_ends_before_its_deadline_exits_0(dr):
    r = dr.run(ini="[run]\ndeadline = 1h\n[node a]\ncmd = true\n")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------- unreadable gates

@pytest.mark.parametrize("res,args,key", [
    ("[resources]\ncpu_percent = 50\n", [], "cpu_percent"),
    ("[resources]\nmemory_percent = 50\n", [], "memory_percent"),
    ("[resources]\nload_avg_1m = 2\n", [], "load_avg_1m"),
    ("", ["-l", "2"], "load_avg_1m"),
    ("[resources]\ncpu_pressure = 10\n", [], "cpu_pressure"),
    ("[resources]\nmemory_pressure = 10\n", [], "memory_pressure"),
    ("[resources]\nmemory_suspend_percent = 90\n", [], "memory_suspend_percent"),
    ("[resources]\ndisk_free = 1K\ndisk_path = no/such/dir\n", [], "disk_free"),
], ids=["cpu_percent", "memory_percent", "load_avg_1m", "-l", "cpu_pressure",
        "memory_pressure", "memory_suspend_percent", "disk_free"])
def test_a_gate_that_cannot_be_read_is_an_error_and_nothing_runs(dr, root, res, args, key):
    r = dr.run(*args, ini=res + "[node a]\ncmd = touch ran\n", env=root.env())
    assert r.returncode == 2, r.stderr
    assert key + ":" in own(r.stderr)
    assert not (dr.path / "ran").exists()
    assert started(dr) == []


def test_declared_mem_without_meminfo_is_an_error(dr, root):
    r = dr.run(ini="[node a]\ncmd = touch ran\nmem = 1M\n", env=root.env())
    assert r.returncode == 2, r.stderr
    assert "mem:" in own(r.stderr)
    assert not (dr.path / "ran").exists()


def test_declared_mem_on_a_node_not_selected_needs_no_meminfo(dr, root):
    r = dr.run("a", ini="[node a]\ncmd = touch ran\n[node b]\ncmd = true\nmem = 1M\n",
               env=root.env())
    assert r.returncode == 0, r.stderr
    assert (dr.path / "ran").exists()


# ------------------------------------------------------------ config errors

@pytest.mark.parametrize("section,line,message", [
    ("resources", "cpu_percent = 0", "cpu_percent: expected a percentage above 0 and up to 100"),
    ("resources", "cpu_percent = 101", "cpu_percent: expected a percentage"),
    ("resources", "memory_percent = -5", "memory_percent: expected a percentage"),
    ("resources", "memory_percent = 50%", "memory_percent: expected a percentage"),
    ("resources", "memory_suspend_percent = 100.5", "memory_suspend_percent: expected"),
    ("resources", "cpu_pressure = many", "cpu_pressure: expected a percentage"),
    ("resources", "memory_pressure = 0", "memory_pressure: expected a percentage"),
    ("resources", "disk_free = 1X", "disk_free: expected a size"),
    ("resources", "disk_free = G", "disk_free: expected a size"),
    ("resources", "disk_path =", "disk_path: expected a path"),
    ("resources", "load_avg_1m = 0", "load_avg_1m: expected a number above 0"),
    ("resources", "load_avg_1m = high", "load_avg_1m: expected a number above 0"),
    ("resources", "poll = 1x", "poll: expected a duration"),
    ("resources", "poll = 5ms", "poll: expected at least 10ms"),
    ("resources", "wait_timeout = soon", "wait_timeout: expected a duration"),
    ("resources", "frobnicate = 1", "unknown key 'frobnicate' in [resources]"),
    ("resources", "cpus = 1", "unknown key 'cpus' in [resources]"),
    ("run", "deadline = 0", "deadline: expected a duration above 0"),
    ("run", "deadline = 2 hours", "deadline: expected a duration"),
    ("node a", "cpus = 0", "cpus: expected a number above 0"),
    ("node a", "cpus = -1", "cpus: expected a number above 0"),
    ("node a", "mem = 0", "mem: expected a size above 0"),
    ("node a", "mem = 1X", "mem: expected a size"),
])
def test_bad_values_are_config_errors_with_file_and_line(dr, section, line, message):
    ini = "[node a]\ncmd = touch ran\n[%s]\n%s\n" % (section, line)
    if section == "node a":
        ini = "[node a]\ncmd = touch ran\n%s\n" % line
    r = dr.run(ini=ini)
    assert r.returncode == 2, r.stderr
    lineno = 3 if section == "node a" else 4
    assert "dagrun.ini:%d: %s" % (lineno, message) in r.stderr, r.stderr
    assert not (dr.path / "ran").exists()


def test_duplicate_key_in_resources_is_an_error(dr):
    r = dr.run(ini="[resources]\ncpu_percent = 50\npoll = 1s\ncpu_percent = 60\n"
                   "[node a]\ncmd = touch ran\n")
    assert r.returncode == 2
    assert "dagrun.ini:4: duplicate key 'cpu_percent' in [resources]" in r.stderr
    assert not (dr.path / "ran").exists()


@pytest.mark.parametrize("value", ["0", "abc", "-1", "1x"])
def test_bad_l_value_is_a_usage_error(dr, value):
    r = dr.run("-l", value, ini="[node a]\ncmd = touch ran\n")
    assert r.returncode == 2
    assert "-l: expected a load average above 0" in r.stderr
    assert not (dr.path / "ran").exists()


def test_good_resources_section_passes_the_check(dr):
    r = dr.run("-c", ini="[run]\ndeadline = 2h\n[resources]\ncpu_percent = 80\n"
                         "memory_percent = 75.5\ndisk_free = 1.5G\ndisk_path = .\n"
                         "load_avg_1m = 4.0\nmemory_suspend_percent = 95\npoll = 250ms\n"
                         "wait_timeout = 30m\ncpu_pressure = 40\nmemory_pressure = 20\n"
                         "[node a]\ncmd = true\ncpus = 0.5\nmem = 1G\n")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------- wake-ups

def strace_polls(dr, args, env, tmp_path):
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    trace = tmp_path / "trace"
    env = dict(env)     # LeakSanitizer cannot run under ptrace
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    r = subprocess.run(["strace", "-f", "-e", "trace=poll,ppoll", "-o", str(trace)] +
                       conftest.argv(*args), cwd=dr.path, env=env, capture_output=True,
                       text=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
    if r.returncode != 0 and "ptrace" in r.stderr:
        pytest.skip("strace cannot trace here: " + r.stderr.strip())
    me = [f for f in dr.journal() if f[0] == "run"][0][1]
    calls = [l for l in trace.read_text().splitlines()
             if re.match(r"%s\s+p?poll\(" % me, l)]
    return r, calls


@pytest.mark.heavy
def test_no_periodic_wake_ups_without_gates(dr, tmp_path):
    dr.write("[node a]\ncmd = sleep 1.5\n")
    r, calls = strace_polls(dr, ["-j", "2"], clean_env(), tmp_path)
    assert r.returncode == 0, r.stderr
    assert 1 <= len(calls) <= 5, calls


@pytest.mark.heavy
def test_a_held_gate_wakes_once_per_poll_interval_not_more(dr, root, tmp_path):
    """a runs 1.5 s; b waits on memory_percent with poll = 100ms, and starts
    when a ends: about 15 wake-ups, not a busy loop and not none."""
    mem_hold(root)
    dr.write("[resources]\nmemory_percent = 50\npoll = 100ms\n"
             "[node a]\ncmd = sleep 1.5\n[node b]\ncmd = true\n")
    t0 = time.monotonic()
    r, calls = strace_polls(dr, ["-j", "2"], root.env(), tmp_path)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert len(calls) <= took / 0.1 + 10, (took, calls)
    assert len(calls) >= 5, calls


def test_load_estimate_counts_only_jobs_still_running(dr, root):
    """Jobs that already ended add nothing to the load estimate: 12 short jobs
    two at a time under a limit of 2 never wait, however many have started
    since the (fixed) load average last moved."""
    root.loadavg("0.00")
    ini = "[resources]\nload_avg_1m = 2\npoll = 50ms\n" + "".join(
        "[node j%d]\ncmd = true\n" % i for i in range(12))
    r = dr.run("-j", "2", ini=ini, env=root.env())
    assert r.returncode == 0, r.stderr
    assert "waiting for resources" not in (dr.path / ".dagrun/main.log").read_text()
