"""Dynamic expansion: [node] sections a job writes to DAGRUN_SPAWN join the
running graph when it succeeds (seed 002's reactive expansion). What a user
sees: the new jobs run in order, the journal's spawn/add records, main.log,
and for a bad file the writing job's failure with the reason in its stderr."""
import os
import re
import sys

import pytest

import conftest

PY = sys.executable
SLOW = conftest.SLOW
with open(conftest.BIN, "rb") as _f:
    ASAN = b"__asan_init" in _f.read()
# under dagrun-asan, LeakSanitizer checks what spawned nodes allocate
LEAK = pytest.mark.usefixtures()

# The jobs' helper.
#   --log F         append "start JOB t" first and "end JOB t" last (O_APPEND)
#   --ended A,B     wait (bounded) until the journal has end records for A and B
#   --added N       wait (bounded) until the journal has an `add N` record
#   --spawn F       copy file F to $DAGRUN_SPAWN
#   --env F         write $DAGRUN_SPAWN to F
#   --say TEXT      print TEXT to stderr
#   --exit N        exit status
# A bounded wait that runs out makes the job exit 9, so it shows as a failure.
JOB = r'''
import os, shutil, sys, time
a = sys.argv[1:]
opt = {}
while a:
    k = a.pop(0)
    opt[k] = a.pop(0)
job = os.environ.get("DAGRUN_JOB", "?")
journal = os.path.join(os.environ["DAGRUN_STATE_DIR"], "journal")

def put(path, s):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.write(fd, s.encode())
    os.close(fd)

def records():
    try:
        with open(journal) as f:
            return [l.split("\t")[1:] for l in f.read().splitlines()]
    except OSError:
        return []

def until(pred, limit=15):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return pred()

ok = True
log = opt.get("--log")
if log:
    put(log, "start %s %.6f\n" % (job, time.time()))
if "--env" in opt:
    put(opt["--env"], os.environ["DAGRUN_SPAWN"])
if "--say" in opt:
    sys.stderr.write(opt["--say"] + "\n")
    sys.stderr.flush()
if "--ended" in opt:
    names = opt["--ended"].split(",")
    ok = until(lambda: all(any(r[0] == "end" and r[1] == n for r in records())
                           for n in names)) and ok
if "--added" in opt:
    ok = until(lambda: ["add", opt["--added"]] in records()) and ok
if "--spawn" in opt:
    shutil.copyfile(opt["--spawn"], os.environ["DAGRUN_SPAWN"])
if log:
    put(log, "end %s %.6f\n" % (job, time.time()))
sys.exit(int(opt.get("--exit", 0)) if ok else 9)
'''


def prepare(dr):
    (dr.path / "job.py").write_text(JOB)
    return "[vars]\ntool = %s job.py\n" % PY


def journal(dr):
    return dr.journal()


def ends(dr):
    return [(f[1], int(f[2]), f[3], int(f[4])) for f in journal(dr) if f[0] == "end"]


def states(dr):
    return {e[0]: e[2] for e in ends(dr)}


def order(dr, name="ledger"):
    """(kind, job) -> position in the ledger."""
    ev = [tuple(l.split()[:2]) for l in (dr.path / name).read_text().splitlines()]
    assert len(ev) == len(set(ev)), ev
    return {e: i for i, e in enumerate(ev)}


def after(pos, job, *pres):
    for p in pres:
        assert pos[("end", p)] < pos[("start", job)], (p, job, pos)


def summary(out, text):
    assert re.search(r"^dagrun: %s in [0-9.]+s$" % re.escape(text), out, re.M), out


# ------------------------------------------------------------------ joining

@LEAK
def test_seed_002_reactive_expansion_children_and_a_fan_in(dr):
    """A root job writes three children and a node after all three plus an
    existing node that is still running; another new node waits for an
    existing node that has not started yet, and one child also names a node
    that had already finished."""
    ini = prepare(dr) + """
[node early]
cmd = ${tool} --log ledger
[node root]
cmd = ${tool} --log ledger --ended early --spawn children.ini --env root.env
[node side]
cmd = ${tool} --log ledger --added merge
[node late]
after = side
cmd = ${tool} --log ledger
"""
    (dr.path / "children.ini").write_text("""# written by root
[node child1]
after = root early
cmd = ${tool} --log ledger

[node child2]
after = root
cmd = ${tool} --log ledger
[node child3]
after = root
cmd = ${tool} --log ledger
[node merge]
after = child1 child2
after = child3 side
cmd = ${tool} --log ledger
[node tail]
after = late merge
cmd = ${tool} --log ledger
""")
    r = dr.run("-j", "4", ini=ini)
    assert r.returncode == 0, r.stderr
    new = ["child1", "child2", "child3", "merge", "tail"]
    assert states(dr) == {n: "ok" for n in ["early", "root", "side", "late"] + new}
    # journal: `spawn root 5`, then one `add` per node, in the file's order
    j = journal(dr)
    i = j.index(["spawn", "root", "5"])
    assert j[i + 1:i + 6] == [["add", n] for n in new]
    assert j.index(["spawn", "root", "5"]) < [f[:2] for f in j].index(["end", "root"])
    assert re.search(r"\tINFO\troot added 5 nodes$",
                     (dr.path / ".dagrun/main.log").read_text(), re.M)
    # the new nodes run, each after its prerequisites
    pos = order(dr)
    for c in ("child1", "child2", "child3"):
        after(pos, c, "root", "early")
    after(pos, "merge", "child1", "child2", "child3", "side")
    after(pos, "tail", "late", "merge")
    # when root's nodes joined, side was running and late waiting
    rec = [f[:2] for f in j]
    assert rec.index(["start", "side"]) < i < rec.index(["end", "side"])
    assert rec.index(["start", "late"]) > i
    # DAGRUN_SPAWN: an absolute path in state_dir/spawn
    spawn = (dr.path / "root.env").read_text()
    assert os.path.isabs(spawn) and spawn.endswith(".ini"), spawn
    assert os.path.realpath(os.path.dirname(spawn)) == os.path.realpath(dr.path / ".dagrun/spawn")
    summary(r.stdout, "9 jobs: 9 ok")
    s = dr.run("-s", "-q")
    assert s.stdout.splitlines()[0].split("\t")[2:] == ["ended", "0", s.stdout.split("\t")[4], "9"]


@LEAK
def test_spawned_jobs_can_spawn_in_turn_and_use_templates(dr):
    ini = prepare(dr) + """
[node gen1]
cmd = ${tool} --spawn gen2.ini
"""
    (dr.path / "gen2.ini").write_text("[node gen2]\nafter = gen1\ncmd = ${tool} --spawn gen3.ini\n")
    (dr.path / "gen3.ini").write_text(
        "[node gen3]\nafter = gen2 gen1\ncmd = echo {node} attempt {attempt} > gen3.txt\n")
    r = dr.run(ini=ini)
    assert r.returncode == 0, r.stderr
    assert states(dr) == {"gen1": "ok", "gen2": "ok", "gen3": "ok"}
    assert (dr.path / "gen3.txt").read_text() == "gen3 attempt 1\n"
    j = journal(dr)
    assert ["spawn", "gen1", "1"] in j and ["spawn", "gen2", "1"] in j
    summary(r.stdout, "3 jobs: 3 ok")


def test_new_nodes_after_failed_or_skipped_nodes_are_skipped(dr):
    ini = prepare(dr) + """
[node bad]
cmd = false
[node skipd]
after = bad
cmd = touch skipd-ran
[node tolerated]
allow_failure = yes
cmd = false
[node writer]
after = tolerated
cmd = ${tool} --ended bad,skipd --spawn more.ini
"""
    (dr.path / "more.ini").write_text("""
[node n_bad]
after = bad
cmd = touch n_bad-ran
[node n_chain]
after = n_bad
cmd = touch n_chain-ran
[node n_skipd]
after = writer skipd
cmd = touch n_skipd-ran
[node n_tolerated]
after = tolerated
cmd = touch n_tolerated-ran
[node n_writer]
after = writer
cmd = touch n_writer-ran
""")
    r = dr.run("-k", "-j", "2", ini=ini)
    assert r.returncode == 1, r.stderr
    assert states(dr) == {"bad": "failed", "skipd": "skipped", "tolerated": "failed",
                          "writer": "ok", "n_bad": "skipped", "n_chain": "skipped",
                          "n_skipd": "skipped", "n_tolerated": "ok", "n_writer": "ok"}
    for n in ("n_bad", "n_chain", "n_skipd", "skipd"):
        assert not (dr.path / (n + "-ran")).exists(), n
    for n in ("n_tolerated", "n_writer"):
        assert (dr.path / (n + "-ran")).exists(), n
    # a new node's skip is recorded as any other: attempt 0, status -1
    assert sorted(e for e in ends(dr) if e[2] == "skipped") == [
        (n, 0, "skipped", -1) for n in ("n_bad", "n_chain", "n_skipd", "skipd")]
    summary(r.stdout, "9 jobs: 3 ok, 2 failed, 4 skipped")


@pytest.mark.parametrize("fail", ["exit", "retried"])
def test_nodes_of_a_failed_attempt_do_not_join(dr, fail):
    retry = "retries = 1\n" if fail == "retried" else ""
    r = dr.run(ini="""
[node writer]
%scmd = if [ "$DAGRUN_ATTEMPT" = 1 ]; then printf '[node n1]\\ncmd = touch n1-ran\\n' > "$DAGRUN_SPAWN"; exit 1; fi
""" % retry)
    assert r.returncode == (0 if fail == "retried" else 1), r.stderr
    assert not any(f[0] in ("spawn", "add") for f in journal(dr)), journal(dr)
    assert not (dr.path / "n1-ran").exists()
    assert "n1" not in states(dr)


# ---------------------------------------------------------------- bad files

BAD = [
    ("unknown_key", "[node okay]\ncmd = touch okay-ran\n[node z]\ncmd = touch z-ran\nbogus = 1\n",
     "5: unknown key 'bogus' in [node z]"),
    ("bad_value", "[node okay]\ncmd = touch okay-ran\n[node z]\ncmd = true\ntimeout = 0\n",
     "5: timeout: expected a duration above 0"),
    ("cycle", "[node okay]\ncmd = touch okay-ran\n"
     "[node x]\nafter = y\ncmd = touch x-ran\n[node y]\nafter = x\ncmd = touch y-ran\n",
     "3: dependency cycle: x -> y -> x"),
    ("unknown_prerequisite", "[node okay]\ncmd = touch okay-ran\n"
     "[node q]\nafter = writer nope\ncmd = touch q-ran\n",
     "4: node 'q' depends on unknown node 'nope'"),
    ("duplicate_of_a_config_node", "[node okay]\ncmd = touch okay-ran\n[node first]\ncmd = true\n",
     "3: duplicate node 'first'"),
    ("duplicate_in_the_file", "[node okay]\ncmd = touch okay-ran\n[node okay]\ncmd = true\n",
     "3: duplicate node 'okay' (first at line 1)"),
    ("run_section", "[node okay]\ncmd = touch okay-ran\n[run]\njobs = 3\n",
     "3: only [node NAME] sections may be in a spawn file"),
    ("pool_section", "[pool p]\nsize = 1\n[node okay]\ncmd = touch okay-ran\n",
     "1: only [node NAME] sections may be in a spawn file"),
]


@pytest.mark.parametrize("content,msg", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spawn_file_fails_the_job_and_nothing_joins(dr, content, msg):
    ini = prepare(dr) + """
[node first]
cmd = true
[node writer]
cmd = ${tool} --say "writer's own words" --spawn bad.ini --env writer.env
[node dep]
after = writer
cmd = touch dep-ran
[node other]
cmd = ${tool} --ended writer --log other.log
[node after_other]
after = other
cmd = touch after_other-ran
"""
    (dr.path / "bad.ini").write_text(content)
    r = dr.run("-k", "-j", "3", ini=ini)
    assert r.returncode == 1, r.stderr
    spawn = (dr.path / "writer.env").read_text()
    # the writing job failed: exit status 1 in the journal
    assert [e for e in ends(dr) if e[0] == "writer"] == [("writer", 1, "failed", 1)]
    assert states(dr) == {"first": "ok", "writer": "failed", "dep": "skipped",
                          "other": "ok", "after_other": "ok"}
    # the reason, after the job's own stderr, in its .err log and on the console
    line = "dagrun: writer: %s:%s" % (spawn, msg)
    err = (dr.path / ".dagrun/logs/writer.err").read_text()
    if msg.endswith("'first'"):
        # which line of which file "first at line N" names is left open
        assert err.startswith("writer's own words\n" + line), err
    else:
        assert err == "writer's own words\n" + line + "\n", err
    assert re.search(r"^FAILED exit 1 [0-9.]+s writer$", r.stderr, re.M), r.stderr
    assert ("writer| " + line) in r.stderr, r.stderr
    # nothing of the file joined; the rest of the run went on
    assert not any(f[0] in ("spawn", "add") for f in journal(dr)), journal(dr)
    assert "added" not in (dr.path / ".dagrun/main.log").read_text()
    for n in ("okay", "x", "y", "q", "z", "dep"):
        assert not (dr.path / (n + "-ran")).exists(), n
    assert (dr.path / "after_other-ran").exists()
    assert re.search(r"^dagrun: 5 jobs: 3 ok, 1 failed, 1 skipped in", r.stdout, re.M), r.stdout


def test_spawn_dir_is_emptied_when_a_run_starts(dr):
    spawn = dr.path / ".dagrun" / "spawn"
    spawn.mkdir(parents=True)
    # left by an earlier run that was killed: they must not be taken for new
    for i in range(3):
        (spawn / ("%d.ini" % i)).write_text("[node stale%d]\ncmd = touch stale-ran\n" % i)
    (spawn / "junk.txt").write_text("junk\n")
    r = dr.run(ini="""
[node lister]
cmd = ls -A "$(dirname "$DAGRUN_SPAWN")" > listing; echo "$DAGRUN_SPAWN" > where
[node second]
after = lister
cmd = true
""")
    assert r.returncode == 0, r.stderr
    assert (dr.path / "listing").read_text() == ""
    assert os.path.realpath(os.path.dirname((dr.path / "where").read_text().strip())) == \
        os.path.realpath(spawn)
    assert states(dr) == {"lister": "ok", "second": "ok"}
    assert not (dr.path / "stale-ran").exists()
    assert not any(f[0] in ("spawn", "add") for f in journal(dr))
