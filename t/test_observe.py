"""Watching a run: -s (during a run, after it, after a crash), the metrics
file (parsed as Prometheus text) and the -t timeline (SVG parsed as XML,
Chrome trace JSON), plus seed 002's example tree drawn by headless Chromium.
Jobs are held on fifos and files the test controls, never on sleeps."""
import errno
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zlib

import pytest

import conftest
from conftest import gone

PY = sys.executable
SLOW = conftest.SLOW
STATES = ["waiting", "ready", "calibrating", "running", "suspended", "ok", "failed",
          "timeout", "cancelled", "skipped"]

# The jobs' helper.
#   --log F        append "start JOB t" first and "end JOB t" last (O_APPEND)
#   --peak N       after "start", wait (bounded) until the log has shown N jobs in flight
#   --ended A,B    wait (bounded) until the journal has end records for A and B
#   --ok A,B       wait (bounded) until A and B have ended ok
#   --min S        take at least S seconds (so that a bar is wide enough to see)
#   --exit N       exit status
JOB = r'''
import os, sys, time
a = sys.argv[1:]
opt = {}
while a:
    k = a.pop(0)
    opt[k] = a.pop(0)
t0 = time.monotonic()
job = os.environ.get("DAGRUN_JOB", "?")
journal = os.path.join(os.environ["DAGRUN_STATE_DIR"], "journal")

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

def ended(names, state=None):
    recs = [l.split("\t")[1:] for l in read(journal).splitlines()]
    return all(any(r[0] == "end" and r[1] == n and (state is None or r[3] == state)
                   for r in recs) for n in names)

def until(pred, limit=15):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()

def peak(text):
    n = top = 0
    for line in text.splitlines():
        n += 1 if line.startswith("start ") else -1
        top = max(top, n)
    return top

ok = True
log = opt.get("--log")
if log:
    put(log, "start %s %.6f\n" % (job, time.time()))
if "--peak" in opt:
    ok = until(lambda: peak(read(log)) >= int(opt["--peak"])) and ok
if "--ended" in opt:
    ok = until(lambda: ended(opt["--ended"].split(","))) and ok
if "--ok" in opt:
    ok = until(lambda: ended(opt["--ok"].split(","), "ok")) and ok
if "--min" in opt:
    left = float(opt["--min"]) - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
if log:
    put(log, "end %s %.6f\n" % (job, time.time()))
sys.exit(int(opt.get("--exit", 0)) if ok else 9)
'''


def prepare(dr):
    (dr.path / "job.py").write_text(JOB)
    return "[vars]\ntool = %s %s\n" % (PY, dr.path / "job.py")


def records(dr, state_dir=".dagrun"):
    """Journal records as (time, [fields]) in file order."""
    out = []
    for line in (dr.path / state_dir / "journal").read_text().splitlines():
        f = line.split("\t")
        out.append((float(f[0]), f[1:]))
    return out


def attempts(dr, state_dir=".dagrun"):
    """[(job, attempt, state, status, seconds, end time)] of the attempts that ran."""
    return [(f[1], int(f[2]), f[3], int(f[4]), float(f[5]), t)
            for t, f in records(dr, state_dir) if f[0] == "end" and int(f[2]) > 0]


def states(dr, state_dir=".dagrun"):
    return {f[1]: f[3] for _, f in records(dr, state_dir) if f[0] == "end"}


def status(dr, *args, **kw):
    return dr.run("-s", *args, **kw)


def stop(p):
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)


def mkfifo(dr, name="hold.fifo"):
    os.mkfifo(dr.path / name)
    return dr.path / name


def release(dr, fifo):
    """Let the job blocked reading fifo go: open it for writing once a reader
    is there (bounded), write a line, close."""
    end = time.monotonic() + 20 * SLOW
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            if e.errno != errno.ENXIO or time.monotonic() > end:
                raise
            time.sleep(0.01)
    os.write(fd, b"go\n")
    os.close(fd)


def started(dr, *names):
    p = dr.path / ".dagrun/journal"
    if not p.exists():
        return False
    have = {f[1] for _, f in records(dr) if f[0] == "start"}
    return all(n in have for n in names)


def ended(dr, *names):
    p = dr.path / ".dagrun/journal"
    if not p.exists():
        return False
    have = {f[1] for _, f in records(dr) if f[0] == "end"}
    return all(n in have for n in names)


# ------------------------------------------------------------------------ -s

def test_status_while_a_run_goes_on_and_after_it_ended(dr):
    fifo = mkfifo(dr)
    p = dr.popen("-k", "-j", "3", ini="""
[node done1]
cmd = true
[node bad]
cmd = echo bad; exit 2
[node blocker]
cmd = cat %s
[node waiter]
after = blocker
cmd = true
""" % fifo.name)
    try:
        dr.wait_for(lambda: (started(dr, "blocker") and ended(dr, "done1", "bad"))
                    or p.poll() is not None, what="blocker running, done1 and bad ended")
        assert p.poll() is None, p.communicate()
        # the first dagrun holds the lock; -s takes none
        assert int((dr.path / ".dagrun/lock").read_text().split()[0]) == p.pid
        r = status(dr)
        assert r.returncode == 0 and r.stderr == "", r
        lines = r.stdout.splitlines()
        assert re.fullmatch(r"run %d running for \d+s" % p.pid, lines[0]), lines
        assert lines[1] == "4 jobs: 1 waiting, 1 running, 1 ok, 1 failed", lines
        assert len(lines) == 4, lines          # one line per running and per failed job
        assert any(re.fullmatch(r"  running +\d+\.\ds  blocker", l) for l in lines[2:]), lines
        assert "  failed      exit 2  bad (attempt 1)" in lines[2:], lines
        t = status(dr, "-q")
        assert t.returncode == 0 and t.stderr == "", t
        rows = [l.split("\t") for l in t.stdout.splitlines()]
        assert rows[0][:4] == ["run", str(p.pid), "running", "-1"] and rows[0][5] == "4", rows
        assert float(rows[0][4]) >= 0
        assert rows[1:11] == [["count", s, str({"waiting": 1, "running": 1, "ok": 1,
                                                "failed": 1}.get(s, 0))] for s in STATES]
        jobs = sorted(rows[11:])
        assert len(jobs) == 2, rows
        assert jobs[0][:5] == ["job", "bad", "failed", "1", "2"]
        assert jobs[1][:5] == ["job", "blocker", "running", "1", "-1"]
        assert float(jobs[1][5]) >= 0
        # the first run is undisturbed and still holds the lock
        assert dr.run().returncode == 3
        assert p.poll() is None
        release(dr, fifo)
        out, err = p.communicate(timeout=30 * SLOW)
        assert p.returncode == 1, err
    finally:
        stop(p)
    done = [f for _, f in records(dr) if f[0] == "done"][0]
    r = status(dr)
    assert r.returncode == 0, r
    assert r.stdout == ("run %d ended: exit 1 after %.2fs\n" % (p.pid, float(done[2])) +
                        "4 jobs: 3 ok, 1 failed\n"
                        "  failed      exit 2  bad (attempt 1)\n"), r.stdout
    t = status(dr, "-q")
    rows = [l.split("\t") for l in t.stdout.splitlines()]
    assert rows[0] == ["run", str(p.pid), "ended", "1", done[2], "4"], rows
    assert rows[1:11] == [["count", s, str({"ok": 3, "failed": 1}.get(s, 0))] for s in STATES]
    assert [r[:5] for r in rows[11:]] == [["job", "bad", "failed", "1", "2"]]


def test_status_of_a_run_killed_with_sigkill_says_stopped(dr):
    fifo = mkfifo(dr)
    p = dr.popen(ini="[node ok1]\ncmd = true\n[node blocker]\ncmd = cat %s\n" % fifo.name)
    pid = None
    try:
        dr.wait_for(lambda: (started(dr, "blocker") and ended(dr, "ok1")) or p.poll() is not None,
                    what="blocker to start")
        assert p.poll() is None, p.communicate()
        pid = int([f for _, f in records(dr) if f[0] == "start" and f[1] == "blocker"][0][3])
        p.kill()
        p.wait(timeout=10)
        r = status(dr)
        assert r.returncode == 0, r
        lines = r.stdout.splitlines()
        assert re.fullmatch(r"run %d stopped without finishing, \d+s after its start \(killed\?\)"
                            % p.pid, lines[0]), lines
        assert lines[1].startswith("2 jobs: ") and "1 ok" in lines[1], lines
        assert not any(l.startswith("  running") for l in lines), lines
        t = status(dr, "-q")
        row = t.stdout.splitlines()[0].split("\t")
        assert row[:4] == ["run", str(p.pid), "stopped", "-1"] and row[5] == "2", row
    finally:
        stop(p)
        if pid and not gone(pid):
            try:
                os.killpg(pid, signal.SIGKILL)   # the orphaned job's own group
            except OSError:
                pass


@pytest.mark.parametrize("state_dir", [None, "st"])
def test_status_without_a_journal(dr, state_dir):
    ini = "[node a]\ncmd = true\n"
    if state_dir:
        ini = "[run]\nstate_dir = %s\n" % state_dir + ini
    dr.write(ini)
    sd = state_dir or ".dagrun"
    for args in (("-s",), ("-s", "-q")):
        r = dr.run(*args)
        assert r.returncode == 1, r
        assert r.stdout == ""
        assert r.stderr == "dagrun: %s/journal: no run recorded\n" % sd, r.stderr
    # a journal without a run record is no better
    (dr.path / sd).mkdir()
    (dr.path / sd / "journal").write_text("")
    r = dr.run("-s")
    assert (r.returncode, r.stderr) == (1, "dagrun: %s/journal: no run recorded\n" % sd)


def test_status_ignores_a_torn_last_line(dr):
    r = dr.run("-k", ini="[node a]\ncmd = true\n[node b]\ncmd = exit 5 && true\n")
    assert r.returncode == 1, r.stderr
    before = status(dr).stdout, status(dr, "-q").stdout
    assert "1 ok, 1 failed" in before[0]
    j = dr.path / ".dagrun/journal"
    stamp = j.read_text().split("\t", 1)[0]
    for torn in ("%s\tend\ta\t1\tfail" % stamp, "%s\trun\t99999\t7" % stamp, "%s\tdo" % stamp):
        with open(j, "a") as f:
            f.write(torn)
        assert (status(dr).stdout, status(dr, "-q").stdout) == before, torn
        j.write_text(j.read_text()[:-len(torn)])


# ------------------------------------------------------------------- metrics

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)(?: (-?\d+))?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prom(text):
    """Prometheus text format, strictly: {name: {"type", "help", "samples":
    [(labels dict, value)]}}; samples of a family together, after its TYPE."""
    assert text.endswith("\n"), repr(text[-50:])
    fams, order = {}, []
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                name = parts[2]
                f = fams.setdefault(name, {"type": None, "help": None, "samples": []})
                if parts[1] == "TYPE":
                    assert f["type"] is None and not f["samples"], line
                    assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                    f["type"] = parts[3]
                else:
                    assert f["help"] is None, line
                    f["help"] = parts[3] if len(parts) > 3 else ""
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labeltext, value = m.group(1), m.group(2), m.group(3)
        labels = {}
        if labeltext:
            pos = 0
            while pos < len(labeltext):
                lm = LABEL.match(labeltext, pos)
                assert lm, "bad labels in %r" % line
                assert lm.group(1) not in labels, line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        v = float(value)      # also NaN, +Inf
        assert name in fams and fams[name]["type"], "sample before its TYPE: %r" % line
        if order and order[-1] != name:
            assert name not in order, "family %s split up" % name
        if not order or order[-1] != name:
            order.append(name)
        fams[name]["samples"].append((labels, v))
    return fams


def value(fams, name, **labels):
    got = [v for l, v in fams[name]["samples"] if l == labels]
    assert len(got) == 1, (name, labels, fams.get(name))
    return got[0]


def jobs_by_state(fams):
    f = fams["dagrun_jobs"]
    assert [l for l, _ in f["samples"]] == [{"state": s} for s in STATES]
    return {l["state"]: int(v) for l, v in f["samples"]}


def test_metrics_file_at_the_end_of_a_run(dr):
    conf = dr.path / "conf"
    (conf / "in").mkdir(parents=True)
    for x in "abc":
        (conf / "in" / (x + ".txt")).write_text(x + "\n")
    (conf / "dagrun.ini").write_text("""
[run]
metrics_file = run.prom
[probe conns]
cmd = echo 5
max = 100
[node good]
cmd = true
[node bad]
cmd = exit 3 && true
[node skipped_one]
after = bad
cmd = true
[node flaky]
retries = 1
cmd = test $DAGRUN_ATTEMPT -ge 2
[node slow]
timeout = 0.2s
cmd = sleep 300
[node fan]
inputs = in/*.txt
cmd = cat {input}
""")
    r = dr.run("-k", "-f", "conf/dagrun.ini")
    assert r.returncode == 1, r.stderr
    assert not (dr.path / "run.prom").exists()         # relative to the config's directory
    assert sorted(os.listdir(conf)) == [".dagrun", "dagrun.ini", "in", "run.prom"]
    fams = parse_prom((conf / "run.prom").read_text())
    for name in ("dagrun_jobs", "dagrun_running", "dagrun_waiting", "dagrun_attempts_total",
                 "dagrun_attempt_seconds_total", "dagrun_success_ratio",
                 "dagrun_elapsed_seconds", "dagrun_memory_used_bytes",
                 "dagrun_memory_limit_bytes", "dagrun_load1", "dagrun_node_seconds"):
        assert name in fams and fams[name]["samples"], name
    assert fams["dagrun_attempts_total"]["type"] == "counter"
    assert fams["dagrun_jobs"]["type"] == "gauge"
    helped = [n for n in fams if fams[n]["help"]]
    assert len(helped) * 2 > len(fams), helped
    st = states(dr, "conf/.dagrun")
    count = jobs_by_state(fams)
    assert sum(count.values()) == len(st) == 8
    assert {s: n for s, n in count.items() if n} == {"ok": 5, "failed": 1, "timeout": 1,
                                                      "skipped": 1}
    for s in STATES:
        assert count[s] == sum(1 for v in st.values() if v == s), s
    assert value(fams, "dagrun_running") == 0
    assert value(fams, "dagrun_waiting") == 0
    att = attempts(dr, "conf/.dagrun")
    assert value(fams, "dagrun_attempts_total") == len(att) == 8
    assert abs(value(fams, "dagrun_attempt_seconds_total") - sum(a[4] for a in att)) < 0.01
    assert abs(value(fams, "dagrun_success_ratio") - 5 / 7) < 0.001
    done = [f for _, f in records(dr, "conf/.dagrun") if f[0] == "done"][0]
    assert abs(value(fams, "dagrun_elapsed_seconds") - float(done[2])) < 0.05 * SLOW
    assert value(fams, "dagrun_memory_used_bytes") > 0
    assert value(fams, "dagrun_memory_limit_bytes") >= value(fams, "dagrun_memory_used_bytes")
    assert value(fams, "dagrun_load1") >= 0
    assert value(fams, "dagrun_plugin_value", plugin="conns") == 5
    if "dagrun_disk_free_bytes" in fams:
        assert value(fams, "dagrun_disk_free_bytes") > 0
    # node seconds: the last attempt, or the sum of a fan-out node's jobs
    node = {l["node"]: v for l, v in fams["dagrun_node_seconds"]["samples"]}
    last = {}
    for a in att:
        last[a[0]] = a[4]
    for n in ("good", "bad", "flaky", "slow"):
        assert abs(node[n] - last[n]) < 0.002, (n, node, last)
    assert abs(node["slow"] - 0.2) < 0.5
    fan = sum(v for k, v in last.items() if k.startswith("fan:"))
    assert len([k for k in last if k.startswith("fan:")]) == 3
    assert abs(node["fan"] - fan) < 0.004, (node, last)


def test_metrics_file_is_rewritten_while_a_run_goes_on(dr):
    fifo = mkfifo(dr)
    p = dr.popen(ini="""
[run]
metrics_file = run.prom
[node quick]
cmd = true
[node blocker]
cmd = cat %s
""" % fifo.name)
    prom = dr.path / "run.prom"
    seen = []          # every distinct version read while blocker runs

    def look():
        if not prom.exists():
            return False
        txt = prom.read_text()      # whole, never half-written: it is renamed into place
        fams = parse_prom(txt)
        if not seen or seen[-1][0] != txt:
            seen.append((txt, fams))
        c = jobs_by_state(fams)
        return c["ok"] == 1 and value(fams, "dagrun_running") == 1

    try:
        dr.wait_for(lambda: look() or p.poll() is not None, timeout=10,
                    what="the metrics to show quick ok and blocker running")
        assert p.poll() is None, p.communicate()
        assert ended(dr, "quick") and not ended(dr, "blocker")
        # the first version (written at the start) had nothing ended yet
        assert jobs_by_state(seen[0][1])["ok"] == 0, seen[0][0]
        assert len(seen) >= 2
        # rewritten at most once a second
        el = [value(f, "dagrun_elapsed_seconds") for _, f in seen]
        for a, b in zip(el, el[1:]):
            assert b - a >= 0.95, el
        release(dr, fifo)
        out, err = p.communicate(timeout=30 * SLOW)
        assert p.returncode == 0, err
    finally:
        stop(p)
    fams = parse_prom(prom.read_text())
    assert {s: n for s, n in jobs_by_state(fams).items() if n} == {"ok": 2}
    assert value(fams, "dagrun_running") == 0 and value(fams, "dagrun_waiting") == 0
    assert value(fams, "dagrun_success_ratio") == 1
    assert set(os.listdir(dr.path)) == {"run.prom", "dagrun.ini", ".dagrun", "hold.fifo"}


# ------------------------------------------------------------------ timeline

SVGNS = "{http://www.w3.org/2000/svg}"
TITLE = re.compile(r"^(.+): (\w+), exit (-?\d+), (\d+\.\d{3})s, attempt (\d+)$")


def bars(svg_path):
    """The bars of an SVG timeline: [dict(name, state, exit, secs, attempt,
    classes, x, y, w, fill)], and the parsed root."""
    root = ET.parse(svg_path).getroot()
    assert root.tag == SVGNS + "svg"
    out = []
    for rect in root.iter(SVGNS + "rect"):
        cls = rect.get("class")
        if not cls or not cls.split()[0] == "bar":
            continue
        title = rect.find(SVGNS + "title")
        m = TITLE.match(title.text)
        assert m, title.text
        out.append(dict(name=m.group(1), state=m.group(2), exit=int(m.group(3)),
                        secs=float(m.group(4)), attempt=int(m.group(5)),
                        classes=cls.split(), x=float(rect.get("x")), y=float(rect.get("y")),
                        w=float(rect.get("width")), fill=rect.get("fill")))
    return out, root


def rgb(fill):
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", fill), fill
    return tuple(int(fill[i:i + 2], 16) for i in (1, 3, 5))


def hue_ok(state, fill):
    r, g, b = rgb(fill)
    if state == "ok":
        return g > r + 40 and g > b + 40                 # green
    if state == "failed":
        return r > g + 80 and r > b + 80                 # red
    if state == "timeout":
        return r > 200 and b < 100 and 80 < g < r - 40   # orange
    return abs(r - g) < 16 and abs(g - b) < 16           # grey


def ticks(root):
    out = []
    for t in root.iter(SVGNS + "text"):
        if t.text and re.fullmatch(r"\d+(\.\d+)?s", t.text):
            out.append((float(t.get("x")), float(t.text[:-1])))
    return out


TIMELINE = """
[node root]
cmd = ${tool} --min 0.05
[node left]
after = root
cmd = ${tool} --min 0.05
[node flaky]
after = root
retries = 1
cmd = test $DAGRUN_ATTEMPT -ge 2
[node right]
after = root
cmd = ${tool} --ok left,flaky
[node join]
after = left right flaky
cmd = ${tool} --ended bad,slow --min 0.05
[node bad]
cmd = exit 3 && true
[node slow]
timeout = 0.3s
cmd = sleep 300
"""


def test_svg_timeline_one_bar_per_attempt_with_the_critical_path(dr):
    r = dr.run("-k", "-j", "2", "-t", "timeline.svg", ini=prepare(dr) + TIMELINE)
    assert r.returncode == 1, r.stderr
    assert not (dr.path / "timeline.svg.tmp").exists()
    got, root = bars(dr.path / "timeline.svg")
    att = attempts(dr)
    assert len(got) == len(att) == 8
    # the bars are the journal's attempts, and each class names its state
    assert sorted((b["name"], b["attempt"], b["state"], b["exit"]) for b in got) == \
        sorted(a[:4] for a in att)
    for b in got:
        assert b["classes"][1] == b["state"], b
        assert set(b["classes"][2:]) <= {"critical"}, b
        assert hue_ok(b["state"], b["fill"]), b
        j = [a for a in att if a[:2] == (b["name"], b["attempt"])][0]
        # the bar spans the journal's start and end records: within spawn latency
        assert abs(b["secs"] - j[4]) < 0.05 * SLOW, (b, j)
    assert {b["state"] for b in got} == {"ok", "failed", "timeout"}
    # the critical path: back from join, which ended last, through the
    # prerequisite that ended last, to root
    last = max(att, key=lambda a: a[5])
    assert last[0] == "join"
    crit = sorted(b["name"] for b in got if "critical" in b["classes"])
    end = {a[0]: a[5] for a in att}
    middle = max(("left", "right", "flaky"), key=lambda n: end[n])
    assert crit == sorted(["root", middle, "join"]), crit
    assert [b["attempt"] for b in got if b["name"] == "flaky" and "critical" in b["classes"]] \
        in ([], [2])
    # worker lanes: at most -j rows, and bars that overlap are on different rows
    assert len({b["y"] for b in got}) <= 2
    for i, a in enumerate(got):
        for b in got[i + 1:]:
            if a["x"] + a["w"] - 1.5 > b["x"] and b["x"] + b["w"] - 1.5 > a["x"]:
                assert a["y"] != b["y"], (a, b)
    # an axis: ticks in seconds, from 0, evenly spaced, left to right
    tk = ticks(root)
    assert len(tk) >= 2 and tk[0][1] == 0, tk
    assert [t for _, t in tk] == sorted(t for _, t in tk)
    assert [x for x, _ in tk] == sorted(x for x, _ in tk)
    steps = {round(b - a, 6) for (_, a), (_, b) in zip(tk, tk[1:])}
    assert len(steps) == 1, tk
    # the background: the first rect, without a class
    first = next(root.iter(SVGNS + "rect"))
    assert first.get("class") is None and first.get("width") == "100%"


def test_critical_path_starts_at_the_job_that_ended_last_even_if_it_failed(dr):
    r = dr.run("-t", "t.svg", ini="[node a]\ncmd = true\n[node b]\nafter = a\n"
               "cmd = sleep 0.05; exit 4\n")
    assert r.returncode == 1, r.stderr
    got, _ = bars(dr.path / "t.svg")
    assert sorted(b["name"] for b in got if "critical" in b["classes"]) == ["a", "b"]


def test_critical_path_when_the_last_job_ends_in_the_same_millisecond(dr):
    dr.write("[node a]\ncmd = true\n[node b]\nafter = a\ncmd = true\n")
    for _ in range(60):
        r = dr.run("-q", "-t", "t.svg")
        assert r.returncode == 0, r.stderr
        rec = records(dr)
        last = max(i for i, (_, f) in enumerate(rec) if f[0] == "run")
        end = {f[1]: t for t, f in rec[last:] if f[0] == "end"}
        if end["a"] == end["b"]:      # b's end is the later record all the same
            got, _ = bars(dr.path / "t.svg")
            assert sorted(b["name"] for b in got if "critical" in b["classes"]) == ["a", "b"]
            return
    pytest.skip("no run had a and b end in the same millisecond")


def test_json_trace_one_complete_event_per_attempt(dr):
    ini = prepare(dr) + """
[node root]
cmd = true
[node l]
after = root
cmd = ${tool} --min 0.05
[node r]
after = root
retries = 1
cmd = test $DAGRUN_ATTEMPT -ge 2
[node join]
after = l r
cmd = ${tool} --ok l,r
"""
    r = dr.run("-j", "2", "-t", "trace.json", ini=ini)
    assert r.returncode == 0, r.stderr
    assert not (dr.path / "trace.json.tmp").exists()
    with open(dr.path / "trace.json") as f:
        trace = json.load(f)
    assert trace["displayTimeUnit"] == "ms"
    ev = trace["traceEvents"]
    att = attempts(dr)
    assert len(ev) == len(att) == 5
    assert sorted((e["name"], e["args"]["attempt"], e["args"]["state"], e["args"]["exit"])
                  for e in ev) == sorted(a[:4] for a in att)
    done = [f for _, f in records(dr) if f[0] == "done"][0]
    for e in ev:
        assert e["ph"] == "X" and e["pid"] == 1, e
        assert isinstance(e["tid"], int) and 1 <= e["tid"] <= 2, e
        assert e["ts"] >= 0 and e["dur"] >= 0, e
        assert e["ts"] + e["dur"] <= float(done[2]) * 1e6 + 5000, e
        assert isinstance(e["args"]["critical"], bool)
        j = [a for a in att if (a[0], a[1]) == (e["name"], e["args"]["attempt"])][0]
        assert abs(e["dur"] / 1e6 - j[4]) < 0.05 * SLOW, (e, j)
    crit = {(e["name"], e["args"]["attempt"]) for e in ev if e["args"]["critical"]}
    assert ("join", 1) in crit and ("root", 1) in crit
    assert ("r", 1) not in crit
    # events on one lane never overlap
    for i, a in enumerate(ev):
        for b in ev[i + 1:]:
            if a["tid"] == b["tid"]:
                assert a["ts"] + a["dur"] <= b["ts"] + 2000 or b["ts"] + b["dur"] <= a["ts"] + 2000


def test_relative_timeline_path_is_taken_from_where_dagrun_runs_not_the_config_dir(dr):
    sub = dr.path / "sub"
    (sub / "conf").mkdir(parents=True)
    (sub / "out").mkdir()
    (sub / "conf" / "dagrun.ini").write_text("[node a]\ncmd = true\n")
    r = dr.run("-C", "sub", "-f", "conf/dagrun.ini", "-t", "out/tl.svg")
    assert r.returncode == 0, r.stderr
    assert (sub / "out" / "tl.svg").exists()
    assert not (sub / "conf" / "out").exists()
    assert sorted(os.listdir(sub / "out")) == ["tl.svg"]
    ET.parse(sub / "out" / "tl.svg")
    # and -t before -C means the same
    r = dr.run("-t", "out/tl.json", "-C", "sub", "-f", "conf/dagrun.ini")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(sub / "out")) == ["tl.json", "tl.svg"]
    json.loads((sub / "out" / "tl.json").read_text())


def test_timeline_into_a_missing_directory_is_an_error(dr):
    r = dr.run("-t", "nowhere/tl.svg", ini="[node a]\ncmd = true\n")
    assert r.returncode == 1
    assert "nowhere/tl.svg" in r.stderr
    assert states(dr) == {"a": "ok"}


# ------------------------------------------------- seed 002 with Chromium

SEED_002 = """
[node Root]
cmd = ${tool} --log ledger --min 0.1
[node Child1]
after = Root
cmd = ${tool} --log ledger --peak 2 --min 0.1
[node Child2]
after = Root
cmd = ${tool} --log ledger --peak 2 --min 0.1
[node Grandchild1]
after = Child1
cmd = ${tool} --log ledger --min 0.1
[node Grandchild2]
after = Child1
cmd = ${tool} --log ledger --min 0.1
[node Grandchild3]
after = Child2
cmd = ${tool} --log ledger --min 0.1
"""


def png_pixels(path):
    """Decode an 8-bit PNG (grey, RGB, grey+alpha or RGBA; not interlaced)
    with zlib and struct: (width, height, [pixel tuples])."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xffffffff == crc, kind
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and interlace == 0 and ctype in (0, 2, 4, 6), hdr
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = w * bpp
    assert len(raw) == h * (stride + 1)
    prev = bytearray(stride)
    pixels = []
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pr) & 255
            else:
                assert f == 0, f
        prev = line
        for x in range(0, stride, bpp):
            px = tuple(line[x:x + bpp])
            if ctype in (0, 4):
                px = (px[0],) * 3 + px[1:]
            pixels.append(px[:3])
    return w, h, pixels


def test_seed_002_tree_timeline_drawn_by_chromium(dr, tmp_path):
    svg = dr.path / "timeline.svg"
    r = dr.run("-j", "2", "-t", svg.name, ini=prepare(dr) + SEED_002)
    assert r.returncode == 0, r.stderr
    shutil.copyfile(svg, "/tmp/seed002-timeline.svg")
    pre = {"Root": [], "Child1": ["Root"], "Child2": ["Root"], "Grandchild1": ["Child1"],
           "Grandchild2": ["Child1"], "Grandchild3": ["Child2"]}
    ev = [tuple(l.split()[:2]) for l in (dr.path / "ledger").read_text().splitlines()]
    pos = {e: i for i, e in enumerate(ev)}
    for n, ps in pre.items():
        for p in ps:
            assert pos[("end", p)] < pos[("start", n)], (p, n, ev)
    # step 1: Root alone; step 2: Child1 and Child2 side by side; never more than 2
    assert ev[:2] == [("start", "Root"), ("end", "Root")]
    assert {e[0] for e in ev[2:4]} == {"start"} and {e[1] for e in ev[2:4]} == {"Child1", "Child2"}
    n = top = 0
    for kind, _ in ev:
        n += 1 if kind == "start" else -1
        top = max(top, n)
    assert top == 2
    got, root = bars(svg)
    assert sorted(b["name"] for b in got) == sorted(pre)
    assert all(b["state"] == "ok" for b in got)
    assert len({b["y"] for b in got}) == 2
    att = attempts(dr)
    last = max(att, key=lambda a: a[5])[0]
    crit = {b["name"] for b in got if "critical" in b["classes"]}
    assert last in crit and "Root" in crit, (last, crit)

    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chrome:
        pytest.skip("no chromium or chromium-browser on PATH: the SVG is not rendered")
    png = tmp_path / "out.png"
    env = conftest.clean_env(HOME=str(tmp_path))
    try:
        c = subprocess.run([chrome, "--headless", "--no-sandbox", "--disable-gpu",
                            "--user-data-dir=%s" % (tmp_path / "chrome-profile"),
                            "--screenshot=%s" % png, "--window-size=1100,400",
                            "file://" + str(svg)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium took more than 90s to draw the timeline")
    assert png.exists(), c.stderr[-3000:]
    w, h, pixels = png_pixels(png)
    assert (w, h) == (1100, 400)
    colours = set(pixels)
    assert len(colours) > 1, colours
    assert sum(1 for p in pixels if p != (255, 255, 255)) > 1000
    # the ok bars' green is there
    green = rgb([b["fill"] for b in got][0])
    assert any(all(abs(p[i] - green[i]) <= 8 for i in range(3)) for p in colours), green
