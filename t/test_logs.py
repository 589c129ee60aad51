"""What a run leaves behind and prints: the state directory (journal,
main.log, error.log, benchmarks.log, per-job logs), the failure tail, the
non-terminal console, state_dir, and the default job limit."""
import os
import re
import sys
import time

import pytest

import conftest

PY = sys.executable
NAME = "dagrun"   # the name dagrun gives itself in its messages

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"

# --log F: append "start JOB" / "end JOB" (O_APPEND); --overlap S: after
# starting, wait up to S seconds for another job to start
JOB = r'''
import os, sys, time
a = sys.argv[1:]
opt = dict(zip(a[::2], a[1::2]))
job = os.environ["DAGRUN_JOB"]
def put(s):
    fd = os.open(opt["--log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.write(fd, s.encode())
    os.close(fd)
put("start %s\n" % job)
end = time.monotonic() + float(opt.get("--overlap", 0))
while time.monotonic() < end:
    with open(opt["--log"]) as f:
        text = f.read()
    if text.count("start ") - text.count("end ") > 1:
        break
    time.sleep(0.005)
put("end %s\n" % job)
'''

BURN = r'''
import time
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
'''

HOG = r'''
x = b"a" * (50 << 20)
print(len(x))
'''


def own(stderr):
    """dagrun's own stderr, without a wrapper's (valgrind's) report lines."""
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


def raw_journal(dr, state_dir=".dagrun"):
    return [l.split("\t") for l in (dr.path / state_dir / "journal").read_text().splitlines()]


def lines(path):
    return path.read_text().splitlines()


def test_journal_records_run_start_end_and_done(dr):
    r = dr.run(ini="""
[node good]
cmd = true
[node bad]
after = good
cmd = sh -c 'exit 4'
[node child]
after = bad
cmd = true
""")
    assert r.returncode == 1
    raw = raw_journal(dr)
    times = [float(f[0]) for f in raw]
    assert times == sorted(times)
    assert abs(times[0] - time.time()) < 120
    recs = [f[1:] for f in raw]
    assert recs[0][0] == "run" and recs[0][2] == "3" and int(recs[0][1]) > 0
    starts = {f[1]: f for f in recs if f[0] == "start"}
    assert set(starts) == {"good", "bad"}
    for f in starts.values():
        assert f[2] == "1" and int(f[3]) > 0
    ends = {f[1]: f for f in recs if f[0] == "end"}
    assert ends["good"][2:5] == ["1", "ok", "0"]
    assert ends["bad"][2:5] == ["1", "failed", "4"]
    assert ends["child"][2:5] == ["0", "skipped", "-1"]
    for f in ends.values():
        float(f[5])
    # every start comes before its end; done is last
    flat = [(f[0], f[1]) for f in recs]
    for n in ("good", "bad"):
        assert flat.index(("start", n)) < flat.index(("end", n))
    assert recs[-1][0] == "done" and recs[-1][1] == "1"
    assert recs[-1][3] == "1 ok, 1 failed, 1 skipped"


def test_journal_is_appended_across_runs(dr):
    dr.run(ini="[node a]\ncmd = true\n")
    r = dr.run()
    assert r.returncode == 0
    kinds = [f[0] for f in dr.journal()]
    assert kinds == ["run", "start", "end", "done"] * 2


def test_main_log_has_info_lines(dr):
    r = dr.run("-j", "2", ini="[node a]\ncmd = true\n[node b]\ncmd = false\n")
    assert r.returncode == 1
    log = lines(dr.path / ".dagrun/main.log")
    for l in log:
        assert re.fullmatch(STAMP + r"\t(INFO|ERROR)\t.+", l), l
    text = "\n".join(log)
    assert re.search(r"\tINFO\trun started: 2 jobs, at most 2 at once, pid \d+$", text, re.M), text
    assert re.search(r"\tINFO\ta ok in [0-9.]+s$", text, re.M), text
    assert re.search(r"\tINFO\trun ended: exit 1: 1 ok, 1 failed in [0-9.]+s$", text, re.M), text


def test_error_log_names_the_failed_jobs_stderr_log(dr):
    r = dr.run("-k", ini="""
[node ok1]
cmd = true
[node bad]
cmd = sh -c 'echo why-it-failed >&2; exit 3'
""")
    assert r.returncode == 1
    log = lines(dr.path / ".dagrun/error.log")
    assert len(log) == 1, log
    m = re.fullmatch(STAMP + r"\tERROR\tbad failed: exit 3 after [0-9.]+s \(stderr: (.+)\)", log[0])
    assert m, log
    path = m.group(1)
    assert path.endswith("logs/bad.err")
    full = path if os.path.isabs(path) else dr.path / path
    assert open(full).read() == "why-it-failed\n"


def test_benchmarks_log_measures_each_job(dr):
    (dr.path / "burn.py").write_text(BURN)
    (dr.path / "hog.py").write_text(HOG)
    t0 = time.time()
    r = dr.run("-k", ini="""
[node burn]
cmd = %s burn.py
[node hog]
cmd = %s hog.py
[node quick]
cmd = true
[node bad]
cmd = sh -c 'exit 7'
""" % (PY, PY))
    t1 = time.time()
    assert r.returncode == 1, r.stderr
    rows = {}
    for l in lines(dr.path / ".dagrun/benchmarks.log"):
        f = l.split("\t")
        assert len(f) == 8, l
        rows[f[0]] = f
    assert set(rows) == {"burn", "hog", "quick", "bad"}
    for name, f in rows.items():
        _, attempt, start, end, dur, code, cpu, rss = f
        assert attempt == "1"
        start, end, dur = float(start), float(end), float(dur)
        assert t0 - 1 <= start <= end <= t1 + 1
        assert abs((end - start) - dur) < 0.01
        assert float(cpu) >= 0 and int(rss) >= 0
    assert rows["burn"][5] == "0" and rows["bad"][5] == "7"
    assert float(rows["burn"][6]) > 0.2
    assert float(rows["burn"][4]) > 0.2
    assert int(rows["hog"][7]) > 40000
    if not conftest.WRAP:    # valgrind's fork of itself counts in the child's peak
        assert int(rows["quick"][7]) < 40000      # per job, not the largest so far


def test_stdout_and_stderr_are_kept_apart_per_job(dr):
    r = dr.run(ini="""
[node one]
cmd = sh -c 'echo out-one; echo err-one >&2; echo out-one-2; echo err-one-2 >&2'
[node two]
cmd = sh -c 'echo out-two; echo err-two >&2'
[node big]
cmd = %s -c "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('y' * 100000)"
""" % PY)
    assert r.returncode == 0, r.stderr
    logs = dr.path / ".dagrun/logs"
    assert (logs / "one.out").read_text() == "out-one\nout-one-2\n"
    assert (logs / "one.err").read_text() == "err-one\nerr-one-2\n"
    assert (logs / "two.out").read_text() == "out-two\n"
    assert (logs / "two.err").read_text() == "err-two\n"
    assert (logs / "big.out").read_text() == "x" * 300000
    assert (logs / "big.err").read_text() == "y" * 100000
    # without -v the jobs' output is not on the console
    assert "out-one" not in r.stdout + r.stderr


def test_silent_job_leaves_no_log_file_and_stale_ones_are_removed(dr):
    ini = """
[node maybe]
cmd = sh -c 'if [ -e talk ]; then echo said; echo complained >&2; fi'
[node silent]
cmd = true
"""
    (dr.path / "talk").touch()
    r = dr.run(ini=ini)
    assert r.returncode == 0, r.stderr
    logs = dr.path / ".dagrun/logs"
    assert (logs / "maybe.out").read_text() == "said\n"
    assert (logs / "maybe.err").read_text() == "complained\n"
    assert not (logs / "silent.out").exists()
    assert not (logs / "silent.err").exists()
    (dr.path / "talk").unlink()
    r = dr.run()
    assert r.returncode == 0, r.stderr
    assert not (logs / "maybe.out").exists()
    assert not (logs / "maybe.err").exists()


def test_failed_job_shows_its_last_10_stderr_lines(dr):
    r = dr.run(ini="""
[node bad]
cmd = sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo "line $i" >&2; echo "stdout $i"; done; exit 3'
""")
    assert r.returncode == 1
    tagged = [l for l in r.stderr.splitlines() if l.startswith("bad| ")]
    assert tagged == ["bad| line %d" % i for i in range(6, 16)], r.stderr
    assert "stdout" not in r.stderr
    fl = r.stderr.splitlines()
    assert re.fullmatch(r"FAILED exit 3 [0-9.]+s bad", fl[fl.index("bad| line 6") - 1]), r.stderr


def test_console_when_not_a_terminal(dr):
    r = dr.run("-k", ini="""
[node a]
cmd = true
[node b]
after = a
cmd = true
[node bad]
cmd = sh -c 'exit 3'
[node c]
after = bad
cmd = true
""")
    assert r.returncode == 1
    for stream in (r.stdout, r.stderr):
        assert "\r" not in stream and "\x1b" not in stream
        assert all(ch == "\n" or ch >= " " for ch in stream)
    out = r.stdout.splitlines()
    assert re.fullmatch(r"ok \d+\.\d\ds a", out[out.index(next(l for l in out if l.endswith(" a")))])
    assert any(re.fullmatch(r"ok \d+\.\d\ds b", l) for l in out), out
    assert "skipped c" in out
    assert not any("FAILED" in l for l in out)
    assert re.search(r"^FAILED exit 3 \d+\.\d\ds bad$", r.stderr, re.M), r.stderr
    assert re.fullmatch(r"%s: 4 jobs: 2 ok, 1 failed, 1 skipped in \d+\.\d\ds" % re.escape(NAME),
                        out[-1]), out


def test_console_all_ok_prints_nothing_on_stderr(dr):
    r = dr.run(ini="[node a]\ncmd = true\n[node b]\ncmd = true\n")
    assert r.returncode == 0
    assert own(r.stderr) == ""
    assert sorted(l.split()[-1] for l in r.stdout.splitlines()[:-1]) == ["a", "b"]


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_state_dir_key_moves_everything(dr, where):
    sd = "st/inner" if where == "relative" else str(dr.path / "abs" / "st")
    (dr.path / "env.sh").write_text('printf %s "$DAGRUN_STATE_DIR" > statedir.txt\n')
    r = dr.run(ini="""
[run]
state_dir = %s
[node a]
cmd = sh -c 'echo out; echo err >&2; sh env.sh'
[node bad]
cmd = false
""" % sd)
    assert r.returncode == 1
    base = dr.path / sd
    for name in ("lock", "journal", "main.log", "error.log", "benchmarks.log",
                 "logs/a.out", "logs/a.err"):
        assert (base / name).exists(), name
    assert not (dr.path / ".dagrun").exists()
    assert [f[0] for f in dr.journal(sd)][0] == "run"
    assert "logs/bad.err" in (base / "error.log").read_text()
    got = (dr.path / "statedir.txt").read_text()
    assert os.path.isabs(got) and os.path.realpath(got) == os.path.realpath(base)


@pytest.mark.parametrize("quota,want", [("100000 100000", 1), ("max 100000", None)],
                         ids=["one-cpu-quota", "no-quota"])
def test_default_jobs_follows_the_cgroup_cpu_quota(dr, quota, want):
    root = dr.path / "sysroot"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("0::/t\n")
    (root / "sys/fs/cgroup/t").mkdir(parents=True)
    (root / "sys/fs/cgroup/t/cpu.max").write_text(quota + "\n")
    (dr.path / "job.py").write_text(JOB)
    if want is None:
        want = len(os.sched_getaffinity(0))
    # each job waits a moment for another to start beside it
    ini = "".join("[node n%d]\ncmd = %s job.py --log conc --overlap 0.15\n" % (i, PY)
                  for i in range(4))
    r = dr.run(ini=ini, env=conftest.clean_env(DAGRUN_SYSROOT=root))
    assert r.returncode == 0, r.stderr
    assert re.search(r"run started: 4 jobs, at most %d at once" % want,
                     (dr.path / ".dagrun/main.log").read_text())
    n = top = 0
    for l in lines(dr.path / "conc"):
        n += 1 if l.startswith("start") else -1
        top = max(top, n)
    if want == 1:
        assert top == 1
    else:
        assert 1 <= top <= want
