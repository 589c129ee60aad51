"""Running a graph: exit statuses, ordering, the job limit, how a job is
started (argv, environment, descriptors, stdin, working directory) and the
failure policies. Every test drives the real binary."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import conftest
from conftest import gone

PY = sys.executable
NAME = "dagrun"   # the name dagrun gives itself in its messages

# One helper for the jobs, written into each test's directory.
#   --log F       append "start JOB t" first and "end JOB t" last (O_APPEND)
#   --barrier N   after "start", wait (bounded) until N jobs have started
#   --wait F      wait (bounded) for file F; exit 9 if it never comes
#   --pid F       write our PID to F
#   --exit N      exit status
JOB = r'''
import os, sys, time
a = sys.argv[1:]
job = os.environ.get("DAGRUN_JOB", "?")
opt = {}
while a:
    k = a.pop(0)
    opt[k] = a.pop(0)

def put(path, s):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.write(fd, s.encode())
    os.close(fd)

def until(pred, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""

if "--pid" in opt:     # atomically: whoever sees the file can read the PID
    put(opt["--pid"] + ".tmp", "%d\n" % os.getpid())
    os.rename(opt["--pid"] + ".tmp", opt["--pid"])
log = opt.get("--log")
if log:
    put(log, "start %s %.6f\n" % (job, time.time()))
if "--barrier" in opt:
    n = int(opt["--barrier"])
    until(lambda: read(log).count("start ") >= n, 15)
status = int(opt.get("--exit", 0))
if "--wait" in opt and not until(lambda: os.path.exists(opt["--wait"]), 30):
    status = 9
if log:
    put(log, "end %s %.6f\n" % (job, time.time()))
sys.exit(status)
'''


def setup_job(dr):
    (dr.path / "job.py").write_text(JOB)
    return "%s job.py" % PY


def status(rc):
    """The exit status as a shell's $? shows it (a death by signal N is 128+N)."""
    return 128 - rc if rc < 0 else rc


def own(stderr):
    """dagrun's own stderr, without a wrapper's (valgrind's) report lines."""
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


def states(dr, state_dir=".dagrun"):
    """job -> state of its last end record."""
    return {f[1]: f[3] for f in dr.journal(state_dir) if f[0] == "end"}


def run_pid(dr):
    return int([f for f in dr.journal() if f[0] == "run"][-1][1])


def summary(out, text):
    assert re.search(r"^%s: %s in [0-9.]+s$" % (re.escape(NAME), re.escape(text)), out, re.M), out


def events(path):
    """[(kind, job, time)] from a --log file, in file order."""
    out = []
    for line in path.read_text().splitlines():
        kind, job, t = line.split()
        out.append((kind, job, float(t)))
    return out


def max_in_flight(ev):
    n = top = 0
    for kind, _, _ in ev:
        n += 1 if kind == "start" else -1
        top = max(top, n)
    return top


def stop(p):
    """Clean up a dagrun started with popen, whatever state it is in."""
    if p.poll() is None:
        p.kill()
    if p.stdin:
        p.stdin.close()
        p.stdin = None
    p.communicate(timeout=30)


# ---------------------------------------------------------------- exit status

def test_exit_0_when_every_job_succeeds(dr):
    r = dr.run(ini="[node a]\ncmd = true\n[node b]\nafter = a\ncmd = true\n")
    assert r.returncode == 0, r.stderr
    assert own(r.stderr) == ""
    summary(r.stdout, "2 jobs: 2 ok")


def test_exit_1_when_a_job_fails_and_dependents_are_skipped(dr):
    r = dr.run(ini="""
[node bad]
cmd = false
[node child]
after = bad
cmd = touch child-ran
[node grandchild]
after = child
cmd = touch grandchild-ran
""")
    assert r.returncode == 1, r.stderr
    assert not (dr.path / "child-ran").exists()
    assert not (dr.path / "grandchild-ran").exists()
    assert states(dr) == {"bad": "failed", "child": "skipped", "grandchild": "skipped"}
    assert re.search(r"^FAILED exit 1 [0-9.]+s bad$", r.stderr, re.M), r.stderr
    summary(r.stdout, "3 jobs: 0 ok, 1 failed, 2 skipped")


def test_exit_2_on_a_config_error_and_nothing_runs(dr):
    r = dr.run(ini="[node a]\ncmd = touch ran\nbogus = 1\n")
    assert r.returncode == 2
    assert "dagrun.ini:3:" in r.stderr
    assert not (dr.path / "ran").exists()


def test_exit_3_when_another_dagrun_holds_the_lock(dr):
    job = setup_job(dr)
    p = dr.popen(ini="[node hold]\ncmd = %s --wait go\n" % job)
    try:
        dr.wait_for(lambda: (dr.path / ".dagrun/journal").exists()
                    and any(f[0] == "start" for f in dr.journal()), what="first run's job")
        holder = int((dr.path / ".dagrun/lock").read_text().split()[0])
        assert holder == p.pid
        r = dr.run()
        assert r.returncode == 3, r.stderr
        assert re.search(r"\b%d\b" % holder, r.stderr), r.stderr
        assert "lock" in r.stderr
        # the loser ran nothing and recorded nothing
        assert sum(1 for f in dr.journal() if f[0] == "run") == 1
        (dr.path / "go").touch()
        out, err = p.communicate(timeout=30 * conftest.SLOW)
        assert p.returncode == 0, err
    finally:
        stop(p)
    # released with the first run: a new run takes the lock at once
    r = dr.run()
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------- ordering

def test_no_job_starts_before_its_prerequisites_end(dr):
    job = setup_job(dr)
    graph = {
        "a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["c", "d"],
        "f": ["b"], "g": ["e", "f"], "h": [], "i": ["h", "g"],
    }
    ini = ""
    for n, pre in graph.items():
        ini += "[node %s]\ncmd = %s --log order\n" % (n, job)
        if pre:
            ini += "after = %s\n" % " ".join(pre)
    r = dr.run("-j", "4", ini=ini)
    assert r.returncode == 0, r.stderr
    ev = events(dr.path / "order")
    assert sorted(j for k, j, _ in ev if k == "start") == sorted(graph)
    pos = {(k, j): i for i, (k, j, _) in enumerate(ev)}
    when = {(k, j): t for k, j, t in ev}
    for n, pre in graph.items():
        for p in pre:
            assert pos[("end", p)] < pos[("start", n)], (p, n, ev)
            assert when[("end", p)] <= when[("start", n)], (p, n)
    # the journal agrees: every prerequisite ended before the dependent started
    recs = [(f[0], f[1]) for f in dr.journal() if f[0] in ("start", "end")]
    for n, pre in graph.items():
        for p in pre:
            assert recs.index(("end", p)) < recs.index(("start", n))


def test_after_may_be_given_more_than_once(dr):
    job = setup_job(dr)
    r = dr.run("-j", "3", ini="""
[node a]
cmd = %s --log order --barrier 2
[node b]
cmd = %s --log order --barrier 2
[node c]
after = a
after = b
cmd = %s --log order
""" % (job, job, job))
    assert r.returncode == 0, r.stderr
    ev = [(k, j) for k, j, _ in events(dr.path / "order")]
    assert ev.index(("start", "c")) > max(ev.index(("end", "a")), ev.index(("end", "b")))


@pytest.mark.parametrize("j", [1, 2, 3])
def test_never_more_than_j_jobs_in_flight(dr, j):
    job = setup_job(dr)
    # each job waits (bounded) until j jobs have started: the first j meet,
    # proving the limit is reached; the log shows it is never passed
    ini = "".join("[node n%d]\ncmd = %s --log conc --barrier %d\n" % (i, job, j)
                  for i in range(8))
    r = dr.run("-j", j, ini=ini)
    assert r.returncode == 0, r.stderr
    ev = events(dr.path / "conc")
    assert len(ev) == 16
    assert max_in_flight(ev) == j, ev


def test_jobs_key_in_run_section_limits_and_j_overrides_it(dr):
    job = setup_job(dr)
    nodes = "".join("[node n%d]\ncmd = %s --log conc --barrier ${meet}\n" % (i, job)
                    for i in range(6))
    r = dr.run("-D", "meet=1", ini="[run]\njobs = 1\n" + nodes)
    assert r.returncode == 0, r.stderr
    assert max_in_flight(events(dr.path / "conc")) == 1
    (dr.path / "conc").unlink()
    r = dr.run("-j", "2", "-D", "meet=2")
    assert r.returncode == 0, r.stderr
    assert max_in_flight(events(dr.path / "conc")) == 2


def test_seed_000_diamond(dr):
    """file1.py -> file2.py, file3.py -> file4.py, as in seed 000's config."""
    (dr.path / "process_files").mkdir()
    for i in range(1, 5):
        (dr.path / "process_files" / ("file%d.py" % i)).write_text(JOB)
    ini = ""
    pre = {1: "", 2: "file1.py", 3: "file1.py", 4: "file2.py file3.py"}
    for i in range(1, 5):
        # the middle two wait for each other: they must run side by side
        extra = " --barrier 3" if i in (2, 3) else ""
        ini += "[node file%d.py]\ncmd = %s process_files/file%d.py --log ran%s\n" % (i, PY, i, extra)
        if pre[i]:
            ini += "after = %s\n" % pre[i]
    r = dr.run("-j", "2", ini=ini)
    assert r.returncode == 0, r.stderr
    ev = [(k, j) for k, j, _ in events(dr.path / "ran")]
    assert ev[:2] == [("start", "file1.py"), ("end", "file1.py")]
    assert ev[-2:] == [("start", "file4.py"), ("end", "file4.py")]
    assert {e[0] for e in ev[2:4]} == {"start"}   # 2 and 3 both started before either ended
    assert max_in_flight(events(dr.path / "ran")) == 2
    summary(r.stdout, "4 jobs: 4 ok")


@pytest.mark.heavy
@pytest.mark.parametrize("jobs", ["0", "1025"])
def test_1025_jobs_in_flight_at_once(dr, jobs):
    n = 1025
    (dr.path / "m").mkdir()
    os.mkfifo(dr.path / "tick")     # opened read-write, never written: a sleep without fork
    (dr.path / "w.sh").write_text(
        'touch "m/$DAGRUN_JOB"\n'
        'exec 3<>tick\n'
        'i=0\n'
        'while [ ! -e go ] && [ $i -lt 900 ]; do read -t 0.1 -u 3 x; i=$((i+1)); done\n'
        '[ -e go ]\n')
    ini = "".join("[node j%d]\ncmd = bash w.sh\n" % i for i in range(n))
    p = dr.popen("-j", jobs, ini=ini)
    try:
        dr.wait_for(lambda: len(os.listdir(dr.path / "m")) == n or p.poll() is not None,
                    timeout=90, what="1025 markers")
        assert p.poll() is None, p.communicate()
        assert len(os.listdir(dr.path / "m")) == n
        (dr.path / "go").touch()
        out, err = p.communicate(timeout=90 * conftest.SLOW)
        assert p.returncode == 0, err[-2000:]
        summary(out, "%d jobs: %d ok" % (n, n))
    finally:
        (dr.path / "go").touch()
        stop(p)


# -------------------------------------------------- what a job starts with

FDS = "ls -l /proc/self/fd"


@pytest.mark.parametrize("how", ["direct", "shell", "dir"])
def test_job_inherits_only_descriptors_0_1_2(dr, how):
    (dr.path / "sub").mkdir()
    cmd = {"direct": FDS, "shell": FDS + " && true", "dir": FDS}[how]
    ini = "[node probe]\ncmd = %s\n" % cmd
    if how == "dir":
        ini += "dir = sub\n"
    r, w = os.pipe()
    extra = os.open(dr.path / "sub", os.O_RDONLY)
    try:
        os.set_inheritable(w, True)
        os.set_inheritable(extra, True)
        p = dr.popen(ini=ini, pass_fds=(w, extra))
        try:
            out, err = p.communicate(timeout=30 * conftest.SLOW)
        finally:
            stop(p)
    finally:
        os.close(r)
        os.close(w)
        os.close(extra)
    assert p.returncode == 0, err
    listing = (dr.path / ".dagrun/logs/probe.out").read_text()
    fds = dict(re.findall(r" (\d+) -> (.*)$", listing, re.M))
    own = [fd for fd, target in fds.items() if re.fullmatch(r"/proc/\d+/fd", target)]
    assert len(own) == 1, listing                     # the listing's own directory
    assert sorted(set(fds) - set(own), key=int) == ["0", "1", "2"], listing
    assert fds["0"] == "/dev/null"
    # output goes to the job's lane file in the logs directory, renamed when it ends
    assert "/.dagrun/logs/" in fds["1"] and "/.dagrun/logs/" in fds["2"], listing


def test_job_stdin_is_at_eof_even_when_dagruns_stdin_is_an_open_pipe(dr):
    p = dr.popen(ini="[node reader]\ncmd = cat\n[node shreader]\ncmd = cat; true\n",
                 stdin=subprocess.PIPE)
    try:
        # dagrun's stdin stays open and empty: a cat reading it would hang
        t0 = time.monotonic()
        p.wait(timeout=20 * conftest.SLOW)
        assert time.monotonic() - t0 < 10 * conftest.SLOW
        assert p.returncode == 0, p.stderr.read()
    finally:
        p.stdin.close()
        stop(p)
    assert states(dr) == {"reader": "ok", "shreader": "ok"}
    assert not (dr.path / ".dagrun/logs/reader.out").exists()
    assert not (dr.path / ".dagrun/logs/shreader.out").exists()


ARGV = r'''
import json, os, sys
ppid = os.getppid()
try:
    comm = open("/proc/%d/comm" % ppid).read().strip()
except OSError:
    comm = None
with open(os.environ["DAGRUN_JOB"] + ".json", "w") as f:
    json.dump({"argv": sys.argv[1:], "ppid": ppid, "comm": comm}, f)
'''


def argv_of(dr, job):
    return json.loads((dr.path / (job + ".json")).read_text())


def test_command_without_metacharacters_is_executed_directly(dr):
    (dr.path / "argv.py").write_text(ARGV)
    r = dr.run(ini="[node direct]\ncmd = %s argv.py one  two\tx=1 a,b %%s@+ {a,b} {} {node} {{lit}}\n" % PY)
    assert r.returncode == 0, r.stderr
    got = argv_of(dr, "direct")
    assert got["argv"] == ["one", "two", "x=1", "a,b", "%s@+", "{a,b}", "{}", "direct", "{lit}"]
    assert got["ppid"] == run_pid(dr)      # no shell in between


def test_command_with_metacharacters_runs_through_sh(dr):
    (dr.path / "argv.py").write_text(ARGV)
    r = dr.run(ini="""
[node viash]
env = V=val ue
cmd = %s argv.py 'two words' "dq $V" '$lit' a\\ b $((1+2)) "$${V}" '#not;comment' {node} "" ; true
""" % PY)
    assert r.returncode == 0, r.stderr
    got = argv_of(dr, "viash")
    assert got["argv"] == ["two words", "dq val ue", "$lit", "a b", "3", "val ue",
                           "#not;comment", "viash", ""]
    assert got["ppid"] != run_pid(dr)
    assert got["comm"] == "sh"


def test_run_shell_key_sets_the_interpreter(dr):
    (dr.path / "argv.py").write_text(ARGV)
    r = dr.run(ini="[run]\nshell = bash\n[node b]\ncmd = %s argv.py $BASH_VERSION && true\n" % PY)
    assert r.returncode == 0, r.stderr
    assert argv_of(dr, "b")["argv"][0][0].isdigit()      # bash set it; sh would not


def test_node_shell_python_runs_python_code_seed_004_eval_tasks(dr):
    r = dr.run("-k", ini="""
[node eval_ok]
shell = python3 -c
cmd = import os; open('eval_ok.txt', 'w').write(os.environ['DAGRUN_NODE'] + ':' + str(sum(range(5))))
[node eval_bad]
shell = python3 -c
cmd = raise ValueError('boom from eval')
[node exec_after_ok]
after = eval_ok
cmd = echo exec > exec.txt
[node after_bad]
after = eval_bad
cmd = touch after_bad.txt
""")
    assert r.returncode == 1, r.stderr
    assert (dr.path / "eval_ok.txt").read_text() == "eval_ok:10"
    assert (dr.path / "exec.txt").read_text() == "exec\n"
    assert not (dr.path / "after_bad.txt").exists()
    assert states(dr) == {"eval_ok": "ok", "eval_bad": "failed",
                          "exec_after_ok": "ok", "after_bad": "skipped"}
    assert re.search(r"^eval_bad\| ValueError: boom from eval$", r.stderr, re.M), r.stderr


@pytest.mark.parametrize("how", ["direct", "dir"])
def test_command_not_found_fails_with_127(dr, how):
    (dr.path / "sub").mkdir()
    ini = "[node nf]\ncmd = no-such-command-xyz arg\n" + ("dir = sub\n" if how == "dir" else "")
    r = dr.run(ini=ini)
    assert r.returncode == 1
    assert [f[4] for f in dr.journal() if f[0] == "end"] == ["127"]
    assert re.search(r"^FAILED exit 127 [0-9.]+s nf$", r.stderr, re.M), r.stderr
    tail = [l for l in r.stderr.splitlines() if l.startswith("nf| ")]
    assert len(tail) == 1 and re.search(r"no-such-command-xyz.*command not found", tail[0]), r.stderr


def test_command_not_found_on_the_shell_path_fails_with_127(dr):
    r = dr.run(ini="[node nf]\ncmd = no-such-command-xyz arg || exit $?\n")
    assert r.returncode == 1
    assert [f[4] for f in dr.journal() if f[0] == "end"] == ["127"]
    assert re.search(r"^nf\| .*no-such-command-xyz.*not found", r.stderr, re.M), r.stderr


@pytest.mark.parametrize("cmd", [
    # under valgrind posix_spawn cannot report an exec error: the child exits 127
    pytest.param("./noexec.sh", marks=pytest.mark.skipif(
        bool(conftest.WRAP), reason="valgrind's posix_spawn loses exec errors")),
    "noexec.sh", "./noexec.sh || exit $?", "../noexec.sh\ndir = sub",
    "noexec.sh\ndir = sub",
], ids=["direct-path", "direct-PATH", "shell", "dir-path", "dir-PATH"])
def test_non_executable_file_fails_with_126(dr, cmd):
    (dr.path / "sub").mkdir()
    s = dr.path / "noexec.sh"
    s.write_text("#!/bin/sh\nexit 0\n")
    s.chmod(0o644)
    env = conftest.clean_env(PATH="%s:%s" % (dr.path, os.environ["PATH"]))
    r = dr.run(ini="[node ne]\ncmd = %s\n" % cmd, env=env)
    assert r.returncode == 1, r.stderr
    assert [f[4] for f in dr.journal() if f[0] == "end"] == ["126"]
    assert re.search(r"^FAILED exit 126 [0-9.]+s ne$", r.stderr, re.M), r.stderr
    assert re.search(r"^ne\| .*[Pp]ermission denied", r.stderr, re.M), r.stderr


def test_dir_key_sets_the_working_directory(dr):
    (dr.path / "w1").mkdir()
    (dr.path / "w2").mkdir()
    r = dr.run(ini="""
[node plain]
cmd = pwd
[node direct]
dir = w1
cmd = pwd
[node viash]
dir = w2
cmd = pwd -P && true
[node abs]
dir = %s
cmd = pwd
""" % (dr.path / "w1"))
    assert r.returncode == 0, r.stderr
    out = lambda n: (dr.path / ".dagrun/logs" / (n + ".out")).read_text().strip()
    real = os.path.realpath(dr.path)
    assert os.path.realpath(out("plain")) == real
    assert os.path.realpath(out("direct")) == os.path.join(real, "w1")
    assert os.path.realpath(out("viash")) == os.path.join(real, "w2")
    assert os.path.realpath(out("abs")) == os.path.join(real, "w1")


def test_paths_are_relative_to_the_config_files_directory(dr):
    conf = dr.path / "conf"
    (conf / "w").mkdir(parents=True)
    (conf / "dagrun.ini").write_text("[node here]\ncmd = pwd\n[node there]\ndir = w\ncmd = pwd\n")
    r = dr.run("-f", "conf/dagrun.ini")
    assert r.returncode == 0, r.stderr
    real = os.path.realpath(conf)
    logs = conf / ".dagrun" / "logs"
    assert os.path.realpath((logs / "here.out").read_text().strip()) == real
    assert os.path.realpath((logs / "there.out").read_text().strip()) == os.path.join(real, "w")


def test_a_missing_dir_fails_the_job(dr):
    r = dr.run(ini="[node lost]\ndir = nowhere\ncmd = touch ran\n")
    assert r.returncode == 1
    assert not (dr.path / "ran").exists()
    assert not (dr.path / "nowhere").exists()
    assert re.search(r"^lost\| .*nowhere", r.stderr, re.M), r.stderr


ENV = r'''
import json, os
raw = open("/proc/self/environ", "rb").read().split(b"\0")
names = [e.split(b"=", 1)[0].decode() for e in raw if e]
with open(os.environ.get("DAGRUN_JOB", "nojob") + ".env.json", "w") as f:
    json.dump({"env": dict(os.environ), "names": names}, f)
'''


@pytest.mark.parametrize("how", ["direct", "shell", "dir"])
def test_job_environment(dr, how):
    (dr.path / "env.py").write_text(ENV)
    (dr.path / "sub").mkdir()
    cmd = "%s %senv.py" % (PY, "../" if how == "dir" else "")
    if how == "shell":
        cmd += " && true"
    ini = "[node envjob]\nenv = FOO=inner\nenv = NEW=a b=c\ncmd = %s\n" % cmd
    if how == "dir":
        ini += "dir = sub\n"
    env = conftest.clean_env(FOO="outer", KEEP="kept", DAGRUN_NODE="outer-node",
                             DAGRUN_JOB="outer-job", DAGRUN_ATTEMPT="7",
                             DAGRUN_STATE_DIR="/nonexistent")
    r = dr.run(ini=ini, env=env)
    assert r.returncode == 0, r.stderr
    where = dr.path / "sub" if how == "dir" else dr.path
    got = json.loads((where / "envjob.env.json").read_text())
    e = got["env"]
    assert e["FOO"] == "inner"
    assert e["NEW"] == "a b=c"
    assert e["KEEP"] == "kept"
    assert e["DAGRUN_NODE"] == "envjob"
    assert e["DAGRUN_JOB"] == "envjob"
    assert e["DAGRUN_ATTEMPT"] == "1"
    assert os.path.isabs(e["DAGRUN_STATE_DIR"])
    assert os.path.realpath(e["DAGRUN_STATE_DIR"]) == os.path.realpath(dr.path / ".dagrun")
    dup = [n for n in set(got["names"]) if got["names"].count(n) > 1]
    assert dup == [], dup


@pytest.mark.parametrize("how", [
    "direct",
    "shell",
])
def test_node_env_path_is_used_to_find_the_command(dr, how):
    (dr.path / "bin").mkdir()
    tool = dr.path / "bin" / "mytool"
    tool.write_text("#!/bin/sh\necho mytool-ran\n")
    tool.chmod(0o755)
    cmd = "mytool" if how == "direct" else "mytool && true"
    r = dr.run(ini="[node t]\nenv = PATH=%s:%s\ncmd = %s\n" % (dr.path / "bin", os.environ["PATH"], cmd))
    assert r.returncode == 0, r.stderr
    assert (dr.path / ".dagrun/logs/t.out").read_text() == "mytool-ran\n"


# ------------------------------------------------------------ failure policy

# waits (bounded) until the journal records the end of the job named by its
# argument, then leaves slow-done
SLOW_PY = r'''
import os, sys, time
end = time.monotonic() + 20
while time.monotonic() < end:
    try:
        if "\tend\t%s\t" % sys.argv[1] in open(".dagrun/journal").read():
            break
    except OSError:
        pass
    time.sleep(0.005)
open("slow-done", "w").close()
'''


def write_policy(dr, extra=""):
    job = setup_job(dr)
    (dr.path / "slow.py").write_text(SLOW_PY)
    return """
[run]
jobs = 2
%s
[node bad]
cmd = %s --exit 3
[node dep]
after = bad
cmd = touch dep-ran
[node dep2]
after = dep
cmd = touch dep2-ran
[node slow]
cmd = %s slow.py bad
[node later]
after = slow
cmd = touch later-ran
""" % (extra, job, PY)


@pytest.mark.parametrize("how", ["default", "key"])
def test_on_failure_stop(dr, how):
    ini = write_policy(dr, "on_failure = stop" if how == "key" else "")
    r = dr.run(ini=ini)
    assert r.returncode == 1, r.stderr
    assert (dr.path / "slow-done").exists()          # the running job finished
    assert not (dr.path / "later-ran").exists()      # nothing new started
    assert not (dr.path / "dep-ran").exists()
    assert states(dr) == {"bad": "failed", "slow": "ok", "later": "cancelled",
                          "dep": "skipped", "dep2": "skipped"}
    summary(r.stdout, "5 jobs: 1 ok, 1 failed, 1 cancelled, 2 skipped")


@pytest.mark.parametrize("how", ["-k", "key"])
def test_on_failure_continue(dr, how):
    ini = write_policy(dr, "on_failure = continue" if how == "key" else "")
    r = dr.run(*([how] if how == "-k" else []), ini=ini)
    assert r.returncode == 1, r.stderr
    assert (dr.path / "later-ran").exists()
    assert not (dr.path / "dep-ran").exists()
    assert not (dr.path / "dep2-ran").exists()
    assert states(dr) == {"bad": "failed", "slow": "ok", "later": "ok",
                          "dep": "skipped", "dep2": "skipped"}
    summary(r.stdout, "5 jobs: 2 ok, 1 failed, 2 skipped")


@pytest.mark.parametrize("how", ["-x", "key"])
def test_on_failure_abort_terminates_running_jobs(dr, how):
    job = setup_job(dr)
    ini = """
[run]
jobs = 2
%s
[node bad]
cmd = %s --wait slow.pid --exit 3
[node dep]
after = bad
cmd = touch dep-ran
[node slow]
cmd = %s --pid slow.pid --wait never
[node later]
after = slow
cmd = touch later-ran
""" % ("on_failure = abort" if how == "key" else "", job, job)
    t0 = time.monotonic()
    r = dr.run(*([how] if how == "-x" else []), ini=ini)
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 15 * conftest.SLOW     # slow did not wait out its 30 s
    pid = int((dr.path / "slow.pid").read_text())
    dr.wait_for(lambda: gone(pid), timeout=5, what="slow's process to be gone")
    assert states(dr) == {"bad": "failed", "slow": "cancelled", "later": "cancelled",
                          "dep": "skipped"}
    slow_end = [f for f in dr.journal() if f[0] == "end" and f[1] == "slow"][0]
    assert slow_end[4] == str(128 + signal.SIGTERM)
    assert not (dr.path / "later-ran").exists()


def test_allow_failure_lets_dependents_run(dr):
    r = dr.run(ini="""
[node flaky]
allow_failure = yes
cmd = sh -c 'echo flaky-said >&2; exit 5'
[node next]
after = flaky
cmd = touch next-ran
""")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "next-ran").exists()
    assert states(dr) == {"flaky": "failed", "next": "ok"}
    assert re.search(r"^FAILED exit 5 [0-9.]+s flaky \(allowed\)$", r.stderr, re.M), r.stderr
    assert re.search(r"^flaky\| flaky-said$", r.stderr, re.M), r.stderr


def test_allow_failure_does_not_stop_the_run(dr):
    job = setup_job(dr)
    (dr.path / "slow.py").write_text(SLOW_PY)
    r = dr.run(ini="""
[run]
jobs = 2
[node flaky]
allow_failure = yes
cmd = %s --exit 2
[node slow]
cmd = %s slow.py flaky
[node later]
after = slow
cmd = touch later-ran
""" % (job, PY))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "later-ran").exists()
    assert states(dr) == {"flaky": "failed", "slow": "ok", "later": "ok"}
    summary(r.stdout, "3 jobs: 2 ok, 1 failed")
