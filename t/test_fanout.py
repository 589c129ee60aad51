"""Fan-out nodes (inputs, input_list), templates, atomic outputs, post, nice
and mem_limit: what a user sees (exit status, console, files, journal, logs).
Every test drives the real binary; file names are handled as bytes."""
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys

import pytest

import conftest

PY = sys.executable
SLOW = conftest.SLOW
TMP = b"~dagrun-tmp"

# Records what a job got, byte for byte, as one JSON line (hex strings)
# appended with one write:  dump.py RECFILE W|- ARGS...
# With W, the job also writes "made by JOB" to $DAGRUN_OUTPUT when it is set.
DUMP = r'''
import json, os, sys
env = os.environb
def hx(k):
    return env[k].hex() if k in env else None
rec = {"job": hx(b"DAGRUN_JOB"), "node": hx(b"DAGRUN_NODE"), "input": hx(b"DAGRUN_INPUT"),
       "output": hx(b"DAGRUN_OUTPUT"), "argv": [os.fsencode(a).hex() for a in sys.argv[3:]]}
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
os.write(fd, (json.dumps(rec) + "\n").encode())
os.close(fd)
if sys.argv[2] == "W" and b"DAGRUN_OUTPUT" in env:
    with open(env[b"DAGRUN_OUTPUT"], "wb") as f:
        f.write(b"made by " + env[b"DAGRUN_JOB"])
'''

# A job that writes half of its output, then its PID (atomically) to
# TAG.pid, then waits (bounded) for a file that never comes:  hold.py TAG
HOLD = r'''
import os, sys, time
out = os.environb[b"DAGRUN_OUTPUT"]
with open(out, "wb") as f:
    f.write(b"half")
tag = sys.argv[1]
with open(tag + ".pid.tmp", "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(tag + ".pid.tmp", tag + ".pid")
end = time.monotonic() + 30
while time.monotonic() < end and not os.path.exists("never"):
    time.sleep(0.01)
sys.exit(0)
'''


def setup_dump(dr):
    (dr.path / "dump.py").write_text(DUMP)
    return "%s dump.py" % PY


def records(path):
    """[{job, node, input, output, argv}] with bytes values, in file order."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path, "rb") as f:
        for line in f:
            r = json.loads(line)
            out.append({k: (None if v is None else
                            [bytes.fromhex(a) for a in v] if k == "argv" else bytes.fromhex(v))
                        for k, v in r.items()})
    return out


def by_job(path):
    recs = records(path)
    d = {r["job"]: r for r in recs}
    assert len(d) == len(recs), recs
    return d


def journal(dr, state_dir=".dagrun"):
    """Journal records as lists of byte fields, the time dropped."""
    data = (dr.path / state_dir / "journal").read_bytes()
    return [line.split(b"\t")[1:] for line in data.split(b"\n") if line]


def states(dr):
    return {os.fsdecode(f[1]): f[3].decode() for f in journal(dr) if f[0] == b"end"}


def order(dr):
    """[(kind, name)] of start and end records."""
    return [(f[0].decode(), f[1]) for f in journal(dr) if f[0] in (b"start", b"end")]


def esc(name):
    """A job name as dagrun writes it: backslash, newline, tab and other
    control bytes escaped."""
    out = b""
    for c in name:
        if c == 0x5C:
            out += b"\\\\"
        elif c == 0x0A:
            out += b"\\n"
        elif c == 0x09:
            out += b"\\t"
        elif c < 0x20 or c == 0x7F:
            out += b"\\x%02x" % c
        else:
            out += bytes([c])
    return out


def logname(job):
    """The file name of a job's log (without .out/.err)."""
    return job.replace(b"%", b"%25").replace(b"/", b"%2F")


def log(dr, job, which="out"):
    if isinstance(job, str):
        job = job.encode()
    p = os.path.join(os.fsencode(dr.path / ".dagrun/logs"), logname(job) + b"." + which.encode())
    with open(p, "rb") as f:
        return f.read()


def status(rc):
    """The exit status as a shell's $? shows it (a death by signal N is 128+N)."""
    return 128 - rc if rc < 0 else rc


def own(stderr):
    """dagrun's own stderr, without a wrapper's (valgrind's) report lines."""
    return "".join(l for l in stderr.splitlines(True) if not re.match(r"==\d+==", l))


def summary(out, text):
    assert re.search(r"^dagrun: %s in [0-9.]+s$" % re.escape(text), out, re.M), out


def leftovers(top):
    """Every temporary under top (bytes paths)."""
    found = []
    for d, dirs, files in os.walk(os.fsencode(top)):
        found += [os.path.join(d, f) for f in files if TMP in f]
    return found


def ini(*lines):
    return "\n".join(lines) + "\n"


def stop(p):
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=30)


def default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def touch(path, data=b""):
    path = os.fsencode(path)
    os.makedirs(os.path.dirname(path) or b".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ templates

# the inputs of the template tests: ext/stem corner cases and one input in
# the config directory itself (its {dir} is .)
CORNERS = [b"d/a.txt", b"d/.bashrc", b"d/archive.tar.gz", b"d/noext", b"top.mp4"]


def expected_parts(inp):
    d, name = os.path.split(inp)
    dot = name.rfind(b".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, b"")
    return {"dir": d or b".", "name": name, "stem": stem, "ext": ext}


def template_setup(dr):
    dump = setup_dump(dr)
    absdir = dr.path / "abs dir"
    for p in CORNERS:
        touch(dr.path / p.decode(), b"in")
    touch(absdir / "abs.tar.bz2")
    inputs = CORNERS + [os.fsencode(absdir / "abs.tar.bz2")]
    pats = " ".join(p.decode().replace(" ", "\\ ") for p in inputs)
    return dump, inputs, pats


def check_templates(dr, inputs, recs, node, extra):
    assert sorted(recs) == sorted(node.encode() + b":" + i for i in inputs)
    for inp in inputs:
        job = node.encode() + b":" + inp
        r = recs[job]
        p = expected_parts(inp)
        tmp = b"o/." + p["stem"] + TMP + p["ext"]
        assert r["argv"] == [inp, inp, tmp, tmp, p["name"], p["stem"], p["ext"], p["dir"],
                             node.encode(), b"1", b"{", b"}", b"{input}", b"{{",
                             b"x" + p["stem"] + b"y"] + extra, inp
        assert r["input"] == inp
        assert r["output"] == tmp
        assert r["node"] == node.encode()
        # renamed into place: o/<stem><ext>, no temporary left
        with open(os.path.join(os.fsencode(dr.path), b"o", p["name"]), "rb") as f:
            assert f.read() == b"made by " + job
    assert leftovers(dr.path) == []


def test_every_template_in_a_direct_command_and_its_post(dr):
    dump, inputs, pats = template_setup(dr)
    r = dr.run(ini=ini(
        "[node f]",
        "inputs = " + pats,
        "output_dir = o",
        "cmd = %s rec W {input} {input_file} {output} {output_file} {name} {stem} {ext} {dir} "
        "{node} {attempt} {{ }} {{input}} {{{{ x{stem}y {a,b} {} {print" % dump,
        "post = %s post.rec - {output} {name} {attempt}" % dump))
    assert r.returncode == 0, r.stderr
    check_templates(dr, inputs, by_job(dr.path / "rec"), "f", [b"{a,b}", b"{}", b"{print"])
    post = by_job(dr.path / "post.rec")
    for inp in inputs:
        p = expected_parts(inp)
        assert post[b"f:" + inp]["argv"] == [b"o/." + p["stem"] + TMP + p["ext"], p["name"], b"1"]


def test_every_template_in_a_shell_command_and_its_post(dr):
    dump, inputs, pats = template_setup(dr)
    r = dr.run(ini=ini(
        "[node s]",
        "inputs = " + pats,
        "output_dir = o",
        "cmd = %s rec W {input} {input_file} {output} {output_file} {name} {stem} {ext} {dir} "
        "{node} {attempt} {{ }} {{input}} {{{{ x{stem}y '{print $1}' '{a,b}' {} "
        "&& echo 'a b' | awk '{print $2}'" % dump,
        "post = %s post.rec - {output} {name} {attempt} && echo post | awk '{print $1 \"-\" NF}'" % dump))
    assert r.returncode == 0, r.stderr
    check_templates(dr, inputs, by_job(dr.path / "rec"), "s", [b"{print $1}", b"{a,b}", b"{}"])
    post = by_job(dr.path / "post.rec")
    for inp in inputs:
        p = expected_parts(inp)
        assert post[b"s:" + inp]["argv"] == [b"o/." + p["stem"] + TMP + p["ext"], p["name"], b"1"]
        # awk's own braces reached awk; the post's output is in the job's .out log
        assert log(dr, b"s:" + inp) == b"b\npost-1\n"


@pytest.mark.parametrize("how", ["direct", "shell"])
def test_templates_of_a_plain_node(dr, how):
    dump = setup_dump(dr)
    tail = " && true" if how == "shell" else ""
    r = dr.run(ini=ini(
        "[node plain]",
        "output = res/{node}.txt",
        "cmd = %s rec W {node} {attempt} {output} {output_file} {{}} {}%s" % (dump, tail)))
    assert r.returncode == 0, r.stderr
    rec = by_job(dr.path / "rec")[b"plain"]
    tmp = b"res/.plain" + TMP + b".txt"
    assert rec["argv"] == [b"plain", b"1", tmp, tmp, b"{}", b"{}"]
    assert rec["output"] == tmp and rec["input"] is None
    assert (dr.path / "res/plain.txt").read_bytes() == b"made by plain"
    assert leftovers(dr.path) == []


def test_a_value_is_never_read_as_a_template_again(dr):
    """An input named like a template is inserted as it is."""
    dump = setup_dump(dr)
    touch(dr.path / "d/{output}{node}.txt")
    touch(dr.path / "d/{{x}}.txt")
    r = dr.run(ini=ini("[node f]", "inputs = d/*", "cmd = %s rec - {input} {stem}" % dump,
                       "[node g]", "inputs = d/*", "cmd = %s rec - {input} {stem} && true" % dump))
    assert r.returncode == 0, r.stderr
    recs = by_job(dr.path / "rec")
    for node in (b"f", b"g"):
        assert recs[node + b":d/{output}{node}.txt"]["argv"] == [b"d/{output}{node}.txt", b"{output}{node}"]
        assert recs[node + b":d/{{x}}.txt"]["argv"] == [b"d/{{x}}.txt", b"{{x}}"]


def test_seed_003_video_with_output_suffix_and_output_dir(dr):
    data = dr.path / "data"
    outdir = dr.path / "encoded"
    for v in ("video1.mp4", "video2.mp4"):
        touch(data / v, v.encode())
    (dr.path / "videos.txt").write_text("%s\n%s\n" % (data / "video1.mp4", data / "video2.mp4"))
    dr.write(ini("[node encode]",
                 "input_list = videos.txt",
                 "output_suffix = _720p",
                 "output_dir = %s" % outdir,
                 "cmd = cp {input} {output}"))
    r = dr.run("-n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "encode:%s\tcp %s %s/.video%d_720p~dagrun-tmp.mp4" % (data / v, data / v, outdir, i)
        for i, v in ((1, "video1.mp4"), (2, "video2.mp4"))]
    assert not outdir.exists()
    r = dr.run()
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(outdir)) == ["video1_720p.mp4", "video2_720p.mp4"]
    assert (outdir / "video1_720p.mp4").read_bytes() == b"video1.mp4"
    assert (outdir / "video2_720p.mp4").read_bytes() == b"video2.mp4"


def test_output_suffix_without_output_dir_writes_beside_the_input(dr):
    touch(dr.path / "data/clip.tar.gz", b"x")
    touch(dr.path / "here.mp4", b"y")
    r = dr.run(ini=ini("[node s]", "inputs = data/*.gz here.mp4", "output_suffix = .small",
                       "cmd = cp {input} {output}"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "data/clip.tar.small.gz").read_bytes() == b"x"
    assert (dr.path / "here.small.mp4").read_bytes() == b"y"


@pytest.mark.parametrize("key,out", [
    ("output_dir = od\noutput = {stem}-{node}{ext}", "od/a-f.txt"),
    ("output = res/{dir}/{name}.done", "res/d/a.txt.done"),
    ("output = {dir}/{stem}.out", "d/a.out"),
    ("output_dir = od\noutput = ABS/{input}", "ABS/d/a.txt"),
    ("output = ABS/x/{stem}{ext}", "ABS/x/a.txt"),
], ids=["output_dir", "config_dir", "input_dir", "absolute_ignores_output_dir", "absolute"])
def test_output_template(dr, key, out):
    absdir = dr.path / "elsewhere"
    touch(dr.path / "d/a.txt", b"A")
    key = key.replace("ABS", str(absdir))
    out = out.replace("ABS", str(absdir))
    r = dr.run(ini=ini("[node f]", "inputs = d/a.txt", key, "cmd = cp {input} {output}"))
    assert r.returncode == 0, r.stderr
    target = dr.path / out
    assert target.read_bytes() == b"A"
    assert leftovers(dr.path) == []


def test_relative_paths_are_relative_to_the_config_dir(dr):
    conf = dr.path / "conf"
    touch(conf / "d/a.txt", b"A")
    touch(conf / "d/b.txt", b"B")
    (conf / "list.txt").write_text("d/b.txt\n")
    (conf / "dagrun.ini").write_text(ini("[node f]", "inputs = d/a.txt", "input_list = list.txt",
                                         "output_dir = out", "cmd = cp {input} {output}"))
    r = dr.run("-f", "conf/dagrun.ini")
    assert r.returncode == 0, r.stderr
    assert (conf / "out/a.txt").read_bytes() == b"A"
    assert (conf / "out/b.txt").read_bytes() == b"B"
    assert not (dr.path / "out").exists()


# -------------------------------------------------------------------- inputs

def test_patterns_sorted_in_order_deduplicated_with_escaped_blank(dr):
    for n in ["d/b.txt", "d/a.txt", "d/C.txt", "d/x y.txt", "d/c.md", "e/z.md", "e/a.txt"]:
        touch(dr.path / n)
    (dr.path / "list.txt").write_bytes(b"e/z.md\r\n\r\n\nd/a.txt\nlisted.txt\r\n\n")
    touch(dr.path / "listed.txt")
    r = dr.run("-j", "1", ini=ini(
        "[node f]",
        "inputs = e/*.md d/*.txt d/nomatch*.txt",
        "inputs = d/x\\ y.txt  d/*.md\td/a.txt e/*.txt",
        "input_list = list.txt",
        "cmd = printenv DAGRUN_INPUT"))
    assert r.returncode == 0, r.stderr
    want = [b"e/z.md", b"d/C.txt", b"d/a.txt", b"d/b.txt", b"d/x y.txt", b"d/c.md", b"e/a.txt",
            b"listed.txt"]
    starts = [f[1] for f in journal(dr) if f[0] == b"start"]
    assert starts == [b"f:" + w for w in want]
    for w in want:
        assert log(dr, b"f:" + w) == w + b"\n"
    summary(r.stdout, "8 jobs: 8 ok")
    # -n lists the same jobs in the same order
    r = dr.run("-n")
    assert r.stdout.splitlines() == ["f:%s\tprintenv DAGRUN_INPUT" % w.decode() for w in want]


def test_input_list_alone_with_crlf_blank_lines_and_no_final_newline(dr):
    touch(dr.path / "a b.txt")
    touch(dr.path / "c.txt")
    (dr.path / "in.lst").write_bytes(b"\r\na b.txt\r\n\n\nc.txt")
    dump = setup_dump(dr)
    r = dr.run(ini=ini("[node f]", "input_list = in.lst", "cmd = %s rec - {input}" % dump))
    assert r.returncode == 0, r.stderr
    recs = by_job(dr.path / "rec")
    assert {k: v["argv"] for k, v in recs.items()} == {b"f:a b.txt": [b"a b.txt"],
                                                        b"f:c.txt": [b"c.txt"]}


@pytest.mark.parametrize("how", ["nomatch", "empty_list", "blank_list"])
def test_zero_inputs_the_node_succeeds_and_dependents_run(dr, how):
    (dr.path / "empty.lst").write_text("" if how == "empty_list" else "\n\r\n\n")
    key = "inputs = nothing/*.x none.y" if how == "nomatch" else "input_list = empty.lst"
    r = dr.run(ini=ini("[node none]", key, "cmd = touch none-ran",
                       "[node dep]", "after = none", "cmd = touch dep-ran"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "dep-ran").exists()
    assert not (dr.path / "none-ran").exists()
    assert states(dr) == {"dep": "ok"}
    summary(r.stdout, "1 jobs: 1 ok")


def test_zero_inputs_found_late_the_node_succeeds_and_dependents_run(dr):
    r = dr.run(ini=ini("[node gen]", "cmd = mkdir made",
                       "[node none]", "after = gen", "inputs = made/*", "cmd = touch none-ran",
                       "[node dep]", "after = none", "cmd = touch dep-ran"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "dep-ran").exists()
    assert not (dr.path / "none-ran").exists()
    assert [b"expand", b"none", b"0"] in journal(dr)
    assert states(dr) == {"gen": "ok", "dep": "ok"}


def random_names(n, seed):
    rnd = random.Random(seed)
    allowed = bytes(b for b in range(1, 256) if b != 0x2F)
    names = {b"-rf", b"--help", b"-", b" lead", b"trail ", b"a\nb", b"\n", b"\t\t", b"$(touch pwned)",
             b"`touch pwned2`", b"'; touch pwned3; '", b'"', b"\\", b"\\n", b"\xff\xfe", b"\x80",
             b"*", b"?", b"[a]", b"{input}", b"{{", b"}", b"%2F", b"%", b"~", b"a\tb", b"\r",
             b"$HOME", b"${HOME}", b"a b  c", b"!", b"#x", b";", b"&", b"|", b"<>", b"()", b"=x"}
    while len(names) < n:
        name = bytes(rnd.choice(allowed) for _ in range(rnd.randint(1, 24)))
        if not name.startswith(b"."):       # glob's * does not match a leading dot
            names.add(name)
    return sorted(names)


def test_1000_random_file_names_reach_the_jobs_byte_for_byte(dr):
    """Random bytes (not NUL, not '/'), through a direct command (with a
    direct post printing DAGRUN_INPUT) and a shell command."""
    names = random_names(1000, 20250)
    d = os.fsencode(dr.path / "d")
    os.mkdir(d)
    for n in names:
        with open(os.path.join(d, n), "wb"):
            pass
    inputs = [b"d/" + n for n in names]
    r = dr.run("-q", ini=ini(
        "[node direct]",
        "inputs = d/*",
        "cmd = printf %s {input}",
        "post = printenv DAGRUN_INPUT",
        "[node shell]",
        "inputs = d/*",
        "cmd = printf %s {input} && printf '|%s' \"$DAGRUN_INPUT\""), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    summary(r.stdout, "%d jobs: %d ok" % (2 * len(inputs), 2 * len(inputs)))
    for p in ("pwned", "pwned2", "pwned3"):
        assert not (dr.path / p).exists()
    logs = os.fsencode(dr.path / ".dagrun/logs")
    got = {b"direct": [], b"shell": []}
    for f in os.listdir(logs):
        if f.endswith(b".out"):
            with open(os.path.join(logs, f), "rb") as fh:
                got[f.split(b":", 1)[0]].append(fh.read())
    assert sorted(got[b"direct"]) == sorted(i + i + b"\n" for i in inputs)
    assert sorted(got[b"shell"]) == sorted(i + b"|" + i for i in inputs)


def test_job_names_logs_and_journal_for_1000_random_names(dr):
    names = random_names(1000, 7)
    d = os.fsencode(dr.path / "d")
    os.mkdir(d)
    for n in names:
        with open(os.path.join(d, n), "wb"):
            pass
    inputs = [b"d/" + n for n in names]
    r = dr.run("-q", ini=ini("[node n]", "inputs = d/*", "cmd = printenv DAGRUN_JOB"), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(b"n:" + esc(i) for i in inputs)
    assert sorted(f[1] for f in journal(dr) if f[0] == b"start") == jobs
    assert sorted(f[1] for f in journal(dr) if f[0] == b"end") == jobs
    outs = os.listdir(os.fsencode(dr.path / ".dagrun/logs"))
    assert sorted(outs) == sorted(logname(j) + b".out" for j in jobs)
    for j in jobs[:50]:
        assert log(dr, j) == j + b"\n"


def test_a_bare_star_gives_a_leading_dash_as_dot_slash(dr):
    conf = dr.path / "c"
    touch(conf / "-rf", b"content of -rf\n")
    touch(conf / "plain", b"plain\n")
    setup_dump(dr)
    (conf / "dagrun.ini").write_text(ini(
        "[node cat]", "inputs = *", "cmd = cat {input}",
        "[node sh]", "inputs = *", "cmd = cat {input} && true",
        "[node t]", "inputs = *",
        "cmd = %s ../dump.py ../rec - {input} {name} {dir} {stem}" % PY))
    r = dr.run("-f", "c/dagrun.ini")
    assert r.returncode == 0, r.stderr
    recs = by_job(dr.path / "rec")
    assert sorted(recs) == [b"t:./-rf", b"t:dagrun.ini", b"t:plain"]
    assert recs[b"t:./-rf"]["argv"] == [b"./-rf", b"-rf", b".", b"-rf"]
    assert recs[b"t:./-rf"]["input"] == b"./-rf"
    assert recs[b"t:plain"]["argv"] == [b"plain", b"plain", b".", b"plain"]
    assert recs[b"t:plain"]["output"] is None        # no outputs: no DAGRUN_OUTPUT
    for node in ("cat", "sh"):
        assert (conf / ".dagrun/logs" / ("%s:.%%2F-rf.out" % node)).read_bytes() == b"content of -rf\n"
    assert re.search(r"^ok [0-9.]+s cat:\./-rf$", r.stdout, re.M), r.stdout
    assert (conf / "-rf").exists()


def test_a_leading_dash_in_input_list_is_given_as_dot_slash(dr):
    touch(dr.path / "-x", b"dash\n")
    (dr.path / "l").write_text("-x\n")
    r = dr.run(ini=ini("[node f]", "input_list = l", "output_suffix = .o",
                       "cmd = cp {input} {output} && printf %s \"$DAGRUN_INPUT\""))
    assert r.returncode == 0, r.stderr
    assert log(dr, "f:./-x") == b"./-x"
    assert (dr.path / "-x.o").read_bytes() == b"dash\n"


def test_job_names_are_escaped_in_console_journal_and_logs(dr):
    names = [b"a\nb", b"t\tab", b"back\\slash", b"pct%41", b"ctl\x01x", b"del\x7f", b"\xffhi"]
    for n in names:
        touch(os.path.join(os.fsencode(dr.path), b"d", n))
    dr.write(ini("[node f]", "inputs = d/*", "cmd = printenv DAGRUN_JOB"))
    r = subprocess.run(conftest.argv(), cwd=dr.path, env=conftest.clean_env(),
                       capture_output=True, timeout=60 * SLOW, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    jobs = [b"f:d/" + esc(n) for n in names]
    assert jobs[:6] == [b"f:d/a\\nb", b"f:d/t\\tab", b"f:d/back\\\\slash", b"f:d/pct%41",
                        b"f:d/ctl\\x01x", b"f:d/del\\x7f"]
    lines = r.stdout.split(b"\n")
    for j in jobs:
        assert any(re.fullmatch(rb"ok [0-9.]+s " + re.escape(j), l) for l in lines), (j, r.stdout)
        assert log(dr, j) == j + b"\n"
    # no control characters on a console that is not a terminal
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", r.stdout + r.stderr)
    assert sorted(f[1] for f in journal(dr) if f[0] == b"start") == sorted(jobs)
    assert (dr.path / ".dagrun/logs/f:d%2Fpct%2541.out").exists()


def test_job_environment_of_a_fan_out_job(dr):
    touch(dr.path / "d/a b.txt")
    r = dr.run(ini=ini("[node f]", "inputs = d/*", "output_dir = o", "env = X=1",
                       "cmd = env > {output}",
                       "[node plain]", "cmd = env"))
    assert r.returncode == 0, r.stderr
    env = dict(l.split("=", 1) for l in (dr.path / "o/a b.txt").read_text().splitlines() if "=" in l)
    assert env["DAGRUN_NODE"] == "f"
    assert env["DAGRUN_JOB"] == "f:d/a b.txt"
    assert env["DAGRUN_INPUT"] == "d/a b.txt"
    assert env["DAGRUN_OUTPUT"] == "o/.a b~dagrun-tmp.txt"
    assert env["DAGRUN_ATTEMPT"] == "1"
    assert os.path.realpath(env["DAGRUN_STATE_DIR"]) == os.path.realpath(dr.path / ".dagrun")
    plain = log(dr, "plain").decode()
    assert "DAGRUN_INPUT=" not in plain and "DAGRUN_OUTPUT=" not in plain
    assert "DAGRUN_JOB=plain\n" in plain


# ------------------------------------------------------------ atomic outputs

@pytest.mark.parametrize("how", ["direct", "shell"])
def test_a_job_that_writes_half_and_fails_leaves_nothing(dr, how):
    touch(dr.path / "in/a.txt")
    (dr.path / "half.sh").write_text('printf half > "$1" && test -s "$1" && exit 3\n')
    cmd = {"shell": "printf half > {output} && test -s {output} && exit 3",
           "direct": "sh half.sh {output}"}[how]
    r = dr.run(ini=ini("[node f]", "inputs = in/*", "output_dir = out", "cmd = " + cmd,
                       "[node dep]", "after = f", "cmd = touch dep-ran"))
    assert r.returncode == 1, r.stderr
    assert os.listdir(dr.path / "out") == []
    assert leftovers(dr.path) == []
    assert states(dr) == {"f:in/a.txt": "failed", "dep": "skipped"}
    assert [f[4] for f in journal(dr) if f[0] == b"end" and f[1] == b"f:in/a.txt"] == [b"3"]
    assert re.search(r"^FAILED exit 3 [0-9.]+s f:in/a\.txt$", r.stderr, re.M), r.stderr
    assert not (dr.path / "dep-ran").exists()


@pytest.mark.parametrize("who", ["cmd", "post"])
def test_a_job_killed_by_sigkill_leaves_neither_output_nor_temporary(dr, who):
    (dr.path / "hold.py").write_text(HOLD)
    touch(dr.path / "in/a.txt")
    hold = "%s hold.py a" % PY
    p = dr.popen(ini=ini("[node f]", "inputs = in/*", "output_dir = out",
                         "cmd = " + (hold if who == "cmd" else "cp {input} {output}"),
                         "post = " + (hold if who == "post" else "true")))
    try:
        dr.wait_for(lambda: (dr.path / "a.pid").exists() or p.poll() is not None, what="a.pid")
        assert p.poll() is None, p.communicate()
        tmp = dr.path / ("out/.a" + TMP.decode() + ".txt")
        assert tmp.read_bytes() == b"half"          # the job writes its temporary
        assert not (dr.path / "out/a.txt").exists()
        os.kill(int((dr.path / "a.pid").read_text()), signal.SIGKILL)
        out, err = p.communicate(timeout=30 * SLOW)
    finally:
        touch(dr.path / "never")
        stop(p)
    assert p.returncode == 1, err
    assert os.listdir(dr.path / "out") == []
    assert leftovers(dr.path) == []
    end = [f for f in journal(dr) if f[0] == b"end"]
    assert [(f[1], f[3], f[4]) for f in end] == [(b"f:in/a.txt", b"failed", b"137")]
    assert re.search(r"^FAILED exit 137 [0-9.]+s f:in/a\.txt$", err, re.M), err


def test_sigint_to_dagrun_while_jobs_write_leaves_no_output(dr):
    (dr.path / "hold.py").write_text(HOLD)
    for n in ("a", "b", "c"):
        touch(dr.path / ("in/%s.txt" % n))
    p = dr.popen("-j", "2", ini=ini(
        "[node f]", "inputs = in/*", "output_dir = out", "cmd = %s hold.py {stem}" % PY,
        "[node plain]", "output = p.txt", "cmd = %s hold.py p" % PY,
        "[run]", "jobs = 3"),
        preexec_fn=default_signals)
    try:
        dr.wait_for(lambda: sum((dr.path / (n + ".pid")).exists() for n in "abp") == 2
                    or p.poll() is not None, what="two jobs writing")
        assert p.poll() is None, p.communicate()
        assert len(leftovers(dr.path)) == 2
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30 * SLOW)
    finally:
        touch(dr.path / "never")
        stop(p)
    assert status(p.returncode) == 130, (p.returncode, err)
    done = [f for f in journal(dr) if f[0] == b"done"]
    assert done[-1][1] == b"130"
    assert leftovers(dr.path) == []
    assert os.listdir(dr.path / "out") == []
    assert not (dr.path / "p.txt").exists()
    st = states(dr)
    assert set(st.values()) == {"cancelled"} and len(st) == 4, st


def test_a_job_that_succeeds_without_writing_its_output_fails(dr):
    touch(dr.path / "in/a.txt")
    r = dr.run(ini=ini("[node f]", "inputs = in/*", "output_dir = out", "cmd = true",
                       "post = touch post-ran"))
    assert r.returncode == 1, r.stderr
    msg = "dagrun: f:in/a.txt: no output: out/.a~dagrun-tmp.txt: No such file or directory"
    assert log(dr, "f:in/a.txt", "err").decode() == msg + "\n"
    assert re.search(r"^FAILED exit 1 [0-9.]+s f:in/a\.txt$", r.stderr, re.M), r.stderr
    assert "f:in/a.txt| " + msg + "\n" in r.stderr
    assert [(f[3], f[4]) for f in journal(dr) if f[0] == b"end"] == [(b"failed", b"1")]
    assert os.listdir(dr.path / "out") == []
    assert (dr.path / "post-ran").exists()          # the post ran: the check is after it


def test_plain_node_without_writing_its_output_fails(dr):
    r = dr.run(ini=ini("[node p]", "output_dir = o", "output = x", "cmd = true"))
    assert r.returncode == 1
    assert log(dr, "p", "err") == b"dagrun: p: no output: o/.x~dagrun-tmp: No such file or directory\n"


def test_success_renames_into_a_created_output_dir(dr):
    touch(dr.path / "in/a.txt", b"A")
    touch(dr.path / "in/b.txt", b"B")
    r = dr.run(ini=ini("[node f]", "inputs = in/*.txt", "output_dir = out/deep/er",
                       "cmd = cp {input} {output}"))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(dr.path / "out/deep/er")) == ["a.txt", "b.txt"]
    assert (dr.path / "out/deep/er/b.txt").read_bytes() == b"B"


def test_a_failure_leaves_an_earlier_output_untouched_and_a_success_replaces_it(dr):
    touch(dr.path / "in/a.txt", b"new")
    touch(dr.path / "out/a.txt", b"earlier")
    ini_text = ini("[node f]", "inputs = in/*", "output_dir = out",
                   "cmd = cp {input} {output} && test -e ok")
    r = dr.run(ini=ini_text)
    assert r.returncode == 1, r.stderr
    assert (dr.path / "out/a.txt").read_bytes() == b"earlier"
    assert leftovers(dr.path) == []
    touch(dr.path / "ok")
    r = dr.run()
    assert r.returncode == 0, r.stderr
    assert (dr.path / "out/a.txt").read_bytes() == b"new"
    assert leftovers(dr.path) == []


def test_a_stale_temporary_is_removed_before_the_job_starts(dr):
    touch(dr.path / "in/a.txt")
    touch(dr.path / "out/.a~dagrun-tmp.txt", b"stale\n")
    touch(dr.path / ".p~dagrun-tmp.log", b"stale\n")
    r = dr.run(ini=ini("[node f]", "inputs = in/*", "output_dir = out",
                       "cmd = test ! -e {output} && echo fresh >> {output}",
                       "[node p]", "output = p.log",
                       "cmd = test ! -e {output} && echo fresh >> {output}"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "out/a.txt").read_text() == "fresh\n"
    assert (dr.path / "p.log").read_text() == "fresh\n"
    assert leftovers(dr.path) == []


def test_a_failing_post_leaves_no_output(dr):
    touch(dr.path / "in/a.txt", b"A")
    r = dr.run(ini=ini("[node f]", "inputs = in/*", "output_dir = out",
                       "cmd = cp {input} {output}",
                       "post = test -s {output} && echo checked {output} && echo bad >&2 && exit 4",
                       "[node dep]", "after = f", "cmd = touch dep-ran"))
    assert r.returncode == 1, r.stderr
    assert os.listdir(dr.path / "out") == []
    assert leftovers(dr.path) == []
    assert states(dr) == {"f:in/a.txt": "failed", "dep": "skipped"}
    assert [f[4] for f in journal(dr) if f[1] == b"f:in/a.txt" and f[0] == b"end"] == [b"4"]
    assert log(dr, "f:in/a.txt") == b"checked out/.a~dagrun-tmp.txt\n"
    assert log(dr, "f:in/a.txt", "err") == b"bad\n"
    assert re.search(r"^f:in/a\.txt\| bad$", r.stderr, re.M), r.stderr


def test_post_sees_the_temporary_and_its_output_goes_to_the_jobs_logs(dr):
    touch(dr.path / "in/a.txt", b"A\n")
    r = dr.run(ini=ini("[node f]", "inputs = in/*", "output_dir = out",
                       "cmd = echo cmd-out && echo cmd-err >&2 && cp {input} {output}",
                       "post = cat {output} && echo post {output} $DAGRUN_OUTPUT "
                       "&& echo post-err >&2"))
    assert r.returncode == 0, r.stderr
    assert log(dr, "f:in/a.txt") == (b"cmd-out\nA\npost out/.a~dagrun-tmp.txt "
                                     b"out/.a~dagrun-tmp.txt\n")
    assert log(dr, "f:in/a.txt", "err") == b"cmd-err\npost-err\n"
    assert (dr.path / "out/a.txt").read_bytes() == b"A\n"


def test_a_direct_post_output_goes_to_the_jobs_out_log(dr):
    r = dr.run(ini=ini("[node p]", "cmd = echo one", "post = echo two {node}"))
    assert r.returncode == 0, r.stderr
    assert log(dr, "p") == b"one\ntwo p\n"


def test_post_does_not_run_after_a_failed_cmd(dr):
    r = dr.run(ini=ini("[node p]", "cmd = false", "post = touch post-ran"))
    assert r.returncode == 1
    assert not (dr.path / "post-ran").exists()


def test_plain_node_with_output(dr):
    r = dr.run(ini=ini("[node p]", "output = res/sub/x.txt",
                       "cmd = echo hi > {output} && printf %s \"$DAGRUN_OUTPUT\"",
                       "[node q]", "output_dir = od", "output = q.txt", "cmd = echo q > {output}",
                       "[node reader]", "after = p q", "cmd = cat res/sub/x.txt od/q.txt"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "res/sub/x.txt").read_text() == "hi\n"
    assert log(dr, "p") == b"res/sub/.x~dagrun-tmp.txt"
    assert log(dr, "reader") == b"hi\nq\n"
    assert leftovers(dr.path) == []


# -------------------------------------------------------- ordering, failures

# waits (bounded) until the journal has N end records of jobs named PREFIX...
ENDS = r'''
import sys, time
prefix, n = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 20
while time.monotonic() < end:
    with open(".dagrun/journal") as f:
        fields = [l.split("\t") for l in f]
    if sum(len(x) > 2 and x[1] == "end" and x[2].startswith(prefix) for x in fields) >= n:
        break
    time.sleep(0.005)
'''


def test_dependents_start_only_after_every_job_of_the_node(dr):
    for i in range(6):
        touch(dr.path / ("in/%d.txt" % i))
    (dr.path / "ends.py").write_text(ENDS)
    # f's first job ends last: it waits for the five others to end
    r = dr.run("-j", "3", ini=ini(
        "[node f]", "inputs = in/*", "cmd = test {stem} != 0 || %s ends.py f: 5" % PY,
        "[node g]", "inputs = in/*", "cmd = true && true",
        "[node dep]", "after = f", "cmd = true",
        "[node dep2]", "after = g dep", "cmd = true"))
    assert r.returncode == 0, r.stderr
    ev = order(dr)
    assert len(ev) == 2 * 14
    for node, dep in (("f", b"dep"), ("g", b"dep2")):
        ends = [i for i, (k, n) in enumerate(ev) if k == "end" and n.startswith(node.encode() + b":")]
        assert len(ends) == 6
        assert ev.index(("start", dep)) > max(ends), ev
    assert [n for k, n in ev if k == "end" and n.startswith(b"f:")][-1] == b"f:in/0.txt"


@pytest.mark.parametrize("opt", ["-k", "key"])
def test_keep_going_one_failed_input(dr, opt):
    for n in ("a", "b", "c", "d"):
        touch(dr.path / ("in/%s.txt" % n))
    r = dr.run(*(["-k"] if opt == "-k" else []), "-j", "1", ini=ini(
        "[run]", "on_failure = continue" if opt == "key" else "",
        "[node f]", "inputs = in/*", "cmd = test {stem} != b && touch {stem}.done",
        "[node dep]", "after = f", "cmd = touch dep-ran",
        "[node other]", "cmd = touch other-ran"))
    assert r.returncode == 1, r.stderr
    assert sorted(p for p in os.listdir(dr.path) if p.endswith(".done")) == \
        ["a.done", "c.done", "d.done"]
    assert not (dr.path / "dep-ran").exists()
    assert (dr.path / "other-ran").exists()
    assert states(dr) == {"f:in/a.txt": "ok", "f:in/b.txt": "failed", "f:in/c.txt": "ok",
                          "f:in/d.txt": "ok", "dep": "skipped", "other": "ok"}
    assert re.search(r"^FAILED exit 1 [0-9.]+s f:in/b\.txt$", r.stderr, re.M), r.stderr
    summary(r.stdout, "6 jobs: 4 ok, 1 failed, 1 skipped")


def test_without_keep_going_a_failed_input_stops_new_starts(dr):
    for n in ("a", "b", "c", "d"):
        touch(dr.path / ("in/%s.txt" % n))
    r = dr.run("-j", "1", ini=ini(
        "[node f]", "inputs = in/*", "cmd = test {stem} != b && touch {stem}.done",
        "[node dep]", "after = f", "cmd = touch dep-ran"))
    assert r.returncode == 1, r.stderr
    assert sorted(p for p in os.listdir(dr.path) if p.endswith(".done")) == ["a.done"]
    assert states(dr) == {"f:in/a.txt": "ok", "f:in/b.txt": "failed", "f:in/c.txt": "cancelled",
                          "f:in/d.txt": "cancelled", "dep": "skipped"}
    assert [f[1] for f in journal(dr) if f[0] == b"start"] == [b"f:in/a.txt", b"f:in/b.txt"]


def test_allow_failure_on_a_fan_out_node(dr):
    for n in ("a", "b"):
        touch(dr.path / ("in/%s.txt" % n))
    r = dr.run(ini=ini("[node f]", "inputs = in/*", "allow_failure = yes", "cmd = test {stem} = a",
                       "[node dep]", "after = f", "cmd = touch dep-ran"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "dep-ran").exists()
    assert states(dr) == {"f:in/a.txt": "ok", "f:in/b.txt": "failed", "dep": "ok"}


# ----------------------------------------------------------- late expansion

def test_inputs_made_by_a_prerequisite_are_found(dr):
    r = dr.run(ini=ini(
        "[node gen]", "cmd = mkdir -p g && touch g/1.txt g/2.txt 'g/3 x.txt' && echo g/4.txt > lst "
                      "&& touch g/4.txt",
        "[node f]", "after = gen", "inputs = g/*.txt", "input_list = lst", "output_dir = out",
        "cmd = cp {input} {output}",
        "[node dep]", "after = f", "cmd = ls out"))
    assert r.returncode == 0, r.stderr
    assert log(dr, "dep") == b"1.txt\n2.txt\n3 x.txt\n4.txt\n"
    j = journal(dr)
    names = [f[1] for f in j]
    ex = j.index([b"expand", b"f", b"4"])
    assert names.index(b"gen") < ex < min(i for i, n in enumerate(names) if n.startswith(b"f:"))
    summary(r.stdout, "6 jobs: 6 ok")


def late_error_ini(kind):
    gen = {"dup": "mkdir -p g h && touch g/1.txt h/1.txt",
           "self": "mkdir -p g && touch g/1.txt",
           "list": "true"}[kind]
    keys = {"dup": ["inputs = g/*.txt", "inputs = h/*.txt", "output_dir = out"],
            "self": ["inputs = g/*.txt", "output = g/{name}"],
            "list": ["input_list = made.lst"]}[kind]
    return ini("[node gen]", "cmd = " + gen,
               "[node f]", "after = gen", "cmd = touch {node}-ran", *keys,
               "[node dep]", "after = f", "cmd = touch dep-ran",
               "[node other]", "after = gen", "cmd = touch other-ran")


LATE_MSG = {
    "dup": "dagrun.ini:6: f: input 'h/1.txt' and job 'f:g/1.txt' map to the same output 'out/1.txt'",
    "self": "dagrun.ini:6: f: the output of input 'g/1.txt' is the input itself",
    "list": "dagrun.ini:6: f: input_list: made.lst: No such file or directory",
}


@pytest.mark.parametrize("kind", ["dup", "self", "list"])
def test_an_error_found_late_fails_the_node(dr, kind):
    r = dr.run("-k", ini=late_error_ini(kind))
    assert r.returncode == 1, r.stderr
    assert "dagrun: " + LATE_MSG[kind] in own(r.stderr).splitlines(), r.stderr
    assert "f:" not in r.stdout
    assert re.search(r"\tERROR\t" + re.escape(LATE_MSG[kind]) + "$",
                     (dr.path / ".dagrun/error.log").read_text(), re.M)
    assert not (dr.path / "f-ran").exists()
    assert not (dr.path / "dep-ran").exists()
    assert (dr.path / "other-ran").exists()
    st = states(dr)
    assert st == {"gen": "ok", "f": "failed", "dep": "skipped", "other": "ok"}
    assert not (dr.path / "out").exists()
    summary(r.stdout, "4 jobs: 2 ok, 1 failed, 1 skipped")


@pytest.mark.parametrize("kind", ["dup", "self", "list"])
def test_an_error_found_late_without_keep_going(dr, kind):
    r = dr.run(ini=late_error_ini(kind))
    assert r.returncode == 1, r.stderr
    assert "dagrun: " + LATE_MSG[kind] in own(r.stderr).splitlines(), r.stderr
    assert not (dr.path / "f-ran").exists()
    assert not (dr.path / "dep-ran").exists()
    # the node failed before it had jobs: none of them is reported
    assert not [f for f in journal(dr) if f[1].startswith(b"f:")], journal(dr)
    assert "f:" not in r.stdout
    st = states(dr)
    # other became ready with f: it may have started before f failed, or not
    assert st.pop("other") == ("ok" if (dr.path / "other-ran").exists() else "cancelled")
    assert st == {"gen": "ok", "f": "failed", "dep": "skipped"}


def test_dry_run_finds_late_inputs_at_load(dr):
    touch(dr.path / "g/old.txt")
    r = dr.run("-n", ini=ini("[node gen]", "cmd = touch g/new.txt",
                             "[node f]", "after = gen", "inputs = g/*.txt", "cmd = cat {input}"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "gen\ttouch g/new.txt\nf:g/old.txt\tcat g/old.txt\n"
    assert not (dr.path / "g/new.txt").exists()


# ------------------------------------------------------------ config errors

TOUCH = ["[node first]", "cmd = touch made"]
FAN = ["[node f]", "inputs = *.txt"]

CONFIG_ERRORS = [
    ("unknown_in_fanout_cmd", FAN + ["cmd = echo {foo}"],
     "5: unknown template '{foo}' (write '{{' and '}}' for literal braces)"),
    ("unknown_in_post", FAN + ["cmd = true", "post = echo {bar}"],
     "6: unknown template '{bar}' (write '{{' and '}}' for literal braces)"),
    ("unknown_in_output", FAN + ["cmd = true", "output = {bogus}.x"],
     "6: unknown template '{bogus}' (write '{{' and '}}' for literal braces)"),
    ("uppercase_is_not_a_template_but_lower_is", FAN + ["cmd = echo {Input} {inpute}"],
     "5: unknown template '{inpute}' (write '{{' and '}}' for literal braces)"),
] + [
    ("%s_in_plain_cmd" % t, ["[node p]", "cmd = echo {%s}" % t],
     "4: template '{%s}' needs a fan-out node (inputs or input_list)" % t)
    for t in ("input", "input_file", "name", "stem", "ext", "dir")
] + [
    ("%s_in_plain_post" % t, ["[node p]", "cmd = true", "post = echo {%s}" % t],
     "5: template '{%s}' needs a fan-out node (inputs or input_list)" % t)
    for t in ("input", "dir")
] + [
    ("name_in_plain_output", ["[node p]", "output = {name}.x", "cmd = echo {output}"],
     "4: template '{name}' needs a fan-out node (inputs or input_list)"),
] + [
    ("%s_without_outputs_in_%s" % (t, where), lines + ["cmd = cat {%s}" % t],
     "%d: template '{%s}' needs output, output_dir or output_suffix" % (len(lines) + 3, t))
    for t in ("output", "output_file")
    for where, lines in (("fanout", FAN), ("plain", ["[node p]"]))
] + [
    ("output_in_post_without_outputs", FAN + ["cmd = true", "post = test -s {output}"],
     "6: template '{output}' needs output, output_dir or output_suffix"),
] + [
    ("%s_in_output" % t, FAN + ["cmd = true", "output = x/{%s}.y" % t],
     "6: template '{%s}' cannot be used in output" % t)
    for t in ("output", "attempt", "output_file")
] + [
    ("output_in_plain_output", ["[node p]", "output = {output}.x", "cmd = true"],
     "4: template '{output}' cannot be used in output"),
    ("unknown_in_late_fanout", ["[node f]", "after = first", "inputs = later/*",
                                "cmd = echo {input} {nope}"],
     "6: unknown template '{nope}' (write '{{' and '}}' for literal braces)"),
    ("output_suffix_without_inputs", ["[node p]", "cmd = true", "output_suffix = _x"],
     "5: output_suffix needs inputs or input_list"),
    ("calibrate_without_inputs", ["[node p]", "cmd = true", "calibrate = yes"],
     "5: calibrate needs inputs or input_list"),
    ("output_dir_without_output", ["[node p]", "cmd = true", "output_dir = o"],
     "5: output_dir needs output, inputs or input_list"),
    ("line_of_the_first_fanout_key", ["[node p]", "output = x", "cmd = true", "output_suffix = _x"],
     "4: output_suffix needs inputs or input_list"),
    ("same_output_twice", ["[node f]", "output = same.txt", "cmd = true", "inputs = *.txt"],
     "4: f: input 'b.txt' and job 'f:a.txt' map to the same output 'same.txt'"),
    ("same_output_suffix_dir", ["[node f]", "cmd = true", "inputs = a.txt d/a.txt",
                                "output_dir = o"],
     "5: f: input 'd/a.txt' and job 'f:a.txt' map to the same output 'o/a.txt'"),
    ("output_is_the_input", ["[node f]", "cmd = true", "inputs = d/*.txt", "output_dir = d"],
     "5: f: the output of input 'd/a.txt' is the input itself"),
    ("output_template_is_the_input", ["[node f]", "cmd = true", "inputs = a.txt",
                                      "output = {input}"],
     "5: f: the output of input 'a.txt' is the input itself"),
    ("input_list_missing", ["[node f]", "cmd = true", "inputs = a.txt", "input_list = nope.lst"],
     "5: f: input_list: nope.lst: No such file or directory"),
    ("two_plain_nodes_same_output", ["[node a]", "cmd = true", "output = x.txt",
                                     "[node b]", "output = x.txt", "cmd = true"],
     "7: output 'x.txt' is also the output of 'a'"),
    ("plain_output_dir_same_output", ["[node a]", "cmd = true", "output = o/x.txt",
                                      "[node b]", "output_dir = o", "output = x.txt",
                                      "cmd = true"],
     "8: output 'o/x.txt' is also the output of 'a'"),
    ("two_fanout_nodes_same_output", ["[node f]", "cmd = true", "inputs = a.txt",
                                      "output_dir = o", "[node g]", "inputs = a.txt",
                                      "output_dir = o", "cmd = true"],
     "8: g: input 'a.txt' and job 'f:a.txt' map to the same output 'o/a.txt'"),
    ("nice_range", ["[node p]", "cmd = true", "nice = 41"],
     "5: nice: expected a whole number from -40 to 40, got '41'"),
    ("mem_limit_zero", ["[node p]", "cmd = true", "mem_limit = 0"],
     "5: mem_limit: expected a size above 0"),
    ("inputs_empty", ["[node f]", "cmd = true", "inputs ="],
     "5: inputs: expected a file pattern"),
    ("input_list_empty", ["[node f]", "cmd = true", "input_list ="],
     "5: input_list: expected a file"),
]


@pytest.mark.parametrize("lines,msg", [e[1:] for e in CONFIG_ERRORS],
                         ids=[e[0] for e in CONFIG_ERRORS])
def test_config_error(dr, lines, msg):
    for f in ("a.txt", "b.txt", "d/a.txt"):
        touch(dr.path / f)
    dr.write(ini(*TOUCH, *lines))
    for opt in ([], ["-c"], ["-n"]):
        r = dr.run(*opt)
        assert r.returncode == 2, (opt, r)
        assert own(r.stderr) == "dagrun.ini:" + msg + "\n", opt
        assert r.stdout == ""
        assert not (dr.path / "made").exists()
        assert not (dr.path / ".dagrun").exists()
        assert not (dr.path / "o").exists()


@pytest.mark.parametrize("value", ["yes", "no", "always"])
def test_calibrate_values_accepted(dr, value):
    touch(dr.path / "a.txt")
    r = dr.run("-c", ini=ini("[node f]", "inputs = *.txt", "calibrate = " + value, "cmd = true"))
    assert (r.returncode, r.stdout, own(r.stderr)) == (0, "dagrun.ini: ok, 1 node\n", "")


def test_check_counts_config_nodes_not_jobs(dr):
    for n in ("a", "b", "c"):
        touch(dr.path / ("%s.txt" % n))
    r = dr.run("-c", ini=ini("[node f]", "inputs = *.txt", "cmd = true",
                             "[node g]", "after = f", "cmd = true"))
    assert (r.returncode, r.stdout) == (0, "dagrun.ini: ok, 2 nodes\n")
    assert not (dr.path / ".dagrun").exists()


# ---------------------------------------------------------- nice, mem_limit

def stat_nice(text):
    return int(text.rsplit(")", 1)[1].split()[16])     # field 19 of /proc/PID/stat


@pytest.mark.parametrize("how", ["direct", "shell", "dir"])
def test_nice_is_added_to_dagruns_niceness(dr, how):
    (dr.path / "sub").mkdir()
    cmd = {"direct": "cat /proc/self/stat", "shell": "cat /proc/self/stat && nice",
           "dir": "cat /proc/self/stat"}[how]
    extra = ["dir = sub"] if how == "dir" else []
    r = dr.run(ini=ini("[node n]", "nice = 7", "cmd = " + cmd, *extra,
                       "[node z]", "cmd = cat /proc/self/stat"))
    assert r.returncode == 0, r.stderr
    base = os.nice(0)
    out = log(dr, "n").decode()
    assert stat_nice(out) == min(19, base + 7)
    if how == "shell":
        assert out.splitlines()[-1] == str(min(19, base + 7))
    assert stat_nice(log(dr, "z").decode()) == base


def test_nice_applies_to_post_and_fan_out_jobs(dr):
    touch(dr.path / "a.txt")
    r = dr.run(ini=ini("[node f]", "inputs = a.txt", "nice = 3", "cmd = nice", "post = nice"))
    assert r.returncode == 0, r.stderr
    n = str(min(19, os.nice(0) + 3))
    assert log(dr, "f:a.txt").decode() == "%s\n%s\n" % (n, n)


def test_nice_that_cannot_be_applied_fails_the_job_with_126(dr):
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv to drop CAP_SYS_NICE")
        prefix = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice"]
    elif resource.getrlimit(resource.RLIMIT_NICE)[0] > 20:
        pytest.skip("RLIMIT_NICE allows raising the priority")
    dr.write(ini("[node n]", "nice = -5", "cmd = touch ran", "[node dep]", "after = n",
                 "cmd = touch dep-ran"))
    r = subprocess.run(prefix + conftest.argv(), cwd=dr.path, env=conftest.clean_env(),
                       capture_output=True, text=True, timeout=60 * SLOW,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    assert not (dr.path / "ran").exists()
    assert [(f[1], f[3], f[4]) for f in journal(dr) if f[0] == b"end"] == \
        [(b"n", b"failed", b"126"), (b"dep", b"skipped", b"-1")]
    assert log(dr, "n", "err") == b"dagrun: n: nice -5: Operation not permitted\n"
    assert "n| dagrun: n: nice -5: Operation not permitted\n" in r.stderr


QEMU_AS = pytest.mark.skipif(conftest.EMULATED, reason="qemu-user keeps RLIMIT_AS to itself: "
                             "what an emulated dagrun sets does not reach the host's jobs")


@QEMU_AS
def test_mem_limit_fails_a_job_that_allocates_more(dr):
    touch(dr.path / "a.txt")
    r = dr.run("-k", ini=ini(
        "[node big]", "mem_limit = 256M",
        "cmd = %s -c 'b = bytearray(512 * 1024 * 1024); print(\"allocated\")'" % PY,
        "[node small]", "mem_limit = 256M",
        "cmd = %s -c 'b = bytearray(16 * 1024 * 1024); print(\"allocated\")'" % PY,
        "[node fan]", "inputs = a.txt", "mem_limit = 256M",
        "cmd = %s -c 'b = bytearray(512 * 1024 * 1024)'" % PY))
    assert r.returncode == 1, r.stderr
    assert states(dr) == {"big": "failed", "small": "ok", "fan:a.txt": "failed"}
    assert b"MemoryError" in log(dr, "big", "err")
    assert log(dr, "small") == b"allocated\n"


@QEMU_AS
@pytest.mark.parametrize("size,kib", [("300M", 307200), ("1G", 1048576), ("262144K", 262144)])
def test_mem_limit_shows_in_ulimit_v(dr, size, kib):
    r = dr.run(ini=ini("[node m]", "mem_limit = " + size, "cmd = ulimit -v; ulimit -Hv",
                       "[node d]", "mem_limit = " + size, "cmd = sh -c 'ulimit -v'",
                       "[node p]", "mem_limit = " + size, "cmd = true", "post = ulimit -v"))
    assert r.returncode == 0, r.stderr
    assert log(dr, "m") == b"%d\n%d\n" % (kib, kib)
    assert log(dr, "d") == b"%d\n" % kib
    assert log(dr, "p") == b"%d\n" % kib


# ------------------------------------------------------------------ -n, -g

def test_dry_run_prints_one_line_per_job_with_templates_filled(dr):
    touch(dr.path / "d/a b.txt")
    touch(dr.path / "d/c.md")
    touch(dr.path / "d/it's.txt")
    r = dr.run("-n", "-j", "1", ini=ini(
        "[node direct]", "inputs = d/*", "output_suffix = _x", "cmd = cp {input} {output} {node}",
        "[node shell]", "inputs = d/*.txt", "output_dir = o",
        "cmd = cp {input} {output} && echo {stem}{ext} {attempt} {{}}",
        "[node after]", "after = direct shell", "cmd = echo {node}"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "direct:d/a b.txt\tcp d/a b.txt d/.a b_x~dagrun-tmp.txt direct",
        "direct:d/c.md\tcp d/c.md d/.c_x~dagrun-tmp.md direct",
        "direct:d/it's.txt\tcp d/it's.txt d/.it's_x~dagrun-tmp.txt direct",
        "shell:d/a b.txt\tcp 'd/a b.txt' 'o/.a b~dagrun-tmp.txt' && echo 'a b'.txt 1 {}",
        "shell:d/it's.txt\tcp 'd/it'\\''s.txt' 'o/.it'\\''s~dagrun-tmp.txt' && echo 'it'\\''s'.txt 1 {}",
        "after\techo after",
    ]
    assert not (dr.path / "o").exists()
    assert not (dr.path / ".dagrun/journal").exists()


def test_dry_run_is_one_line_per_job_even_with_a_newline_in_an_input(dr):
    touch(dr.path / "d/a\nb")
    touch(dr.path / "d/c")
    r = dr.run("-n", ini=ini("[node f]", "inputs = d/*", "cmd = cat {input}",
                             "[node s]", "inputs = d/*", "cmd = cat {input} > /dev/null"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [l.split("\t")[0] for l in lines] == ["f:d/a\\nb", "f:d/c", "s:d/a\\nb", "s:d/c"]


def test_graph_shows_the_fan_out_node_not_its_jobs(dr):
    for n in ("a", "b"):
        touch(dr.path / ("%s.txt" % n))
    r = dr.run("-g", ini=ini("[node f]", "inputs = *.txt", "cmd = true",
                             "[node late]", "after = f", "inputs = *.txt", "cmd = true",
                             "[node dep]", "after = late", "cmd = true"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("digraph")
    assert re.findall(r'^\s*"([^"]+)";$', r.stdout, re.M) == ["f", "late", "dep"]
    assert re.findall(r'"([^"]+)" -> "([^"]+)"', r.stdout) == [("f", "late"), ("late", "dep")]
    assert ":" not in r.stdout


# --------------------------------------------------------------- dir, journal

def test_a_fan_out_node_with_dir_gets_paths_it_can_use(dr):
    touch(dr.path / "data/a.txt", b"A")
    (dr.path / "sub").mkdir()
    r = dr.run(ini=ini("[node f]", "inputs = data/*.txt", "output_dir = out", "dir = sub",
                       "cmd = cp {input} {output} && cat \"$DAGRUN_INPUT\" \"$DAGRUN_OUTPUT\"",
                       "post = test -s {output}",
                       "[node p]", "dir = sub", "output = res/p.txt", "cmd = echo p > {output}"))
    assert r.returncode == 0, r.stderr
    assert (dr.path / "out/a.txt").read_bytes() == b"A"
    assert (dr.path / "res/p.txt").read_bytes() == b"p\n"
    assert os.listdir(dr.path / "sub") == []
    assert leftovers(dr.path) == []


def test_journal_records_expand_for_every_fan_out_node(dr):
    for n in ("a", "b"):
        touch(dr.path / ("%s.txt" % n))
    r = dr.run(ini=ini("[node f]", "inputs = *.txt", "cmd = true",
                       "[node none]", "inputs = *.nothing", "cmd = true"))
    assert r.returncode == 0, r.stderr
    j = journal(dr)
    assert [b"expand", b"f", b"2"] in j
    assert [b"expand", b"none", b"0"] in j
    first = min(i for i, f in enumerate(j) if f[0] == b"start" and f[1].startswith(b"f:"))
    assert j.index([b"expand", b"f", b"2"]) < first


# ------------------------------------------------------------ corners

def test_a_file_given_twice_under_another_spelling_is_one_job(dr):
    touch(dr.path / "d/a.txt")
    (dr.path / "l").write_text("./d/a.txt\n%s\n" % (dr.path / "d/a.txt"))
    r = dr.run(ini=ini("[node f]", "inputs = d/*.txt", "input_list = l", "output_dir = o",
                       "cmd = cp {input} {output}"))
    assert r.returncode == 0, r.stderr
    assert [f[1] for f in journal(dr) if f[0] == b"start"] == [b"f:d/a.txt"]
    assert os.listdir(dr.path / "o") == ["a.txt"]


@pytest.mark.parametrize("spelling", ["./data", "ABS"])
def test_an_output_that_is_its_input_under_another_spelling_is_an_error(dr, spelling):
    touch(dr.path / "data/a.txt", b"orig\n")
    outdir = str(dr.path / "data") if spelling == "ABS" else spelling
    r = dr.run(ini=ini("[node f]", "inputs = data/*.txt", "output_dir = " + outdir,
                       "cmd = echo clobbered > {output}"))
    assert (dr.path / "data/a.txt").read_text() == "orig\n"
    assert r.returncode == 2, r.stdout
    assert re.fullmatch(r"dagrun\.ini:2: f: the output of input 'data/a\.txt' is the input itself\n",
                        own(r.stderr)), r.stderr


def test_verbose_shows_each_command_on_one_line(dr):
    touch(dr.path / "d/a\nb")
    touch(dr.path / "d/t\tx")
    r = dr.run("-v", ini=ini("[node f]", "inputs = d/*", "cmd = true {input}"))
    assert r.returncode == 0, r.stderr
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", r.stdout), r.stdout
    assert [l.split(": ", 1)[0] for l in r.stdout.splitlines() if not l.startswith(("ok ", "dagrun: "))] \
        == ["+ f:d/a\\nb", "+ f:d/t\\tx"], r.stdout


def test_verbose_ends_a_jobs_unterminated_last_line(dr):
    touch(dr.path / "a")
    r = dr.run("-v", ini=ini("[node f]", "inputs = a", "cmd = printf %s {input}"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^f:a\| a$", r.stdout, re.M), r.stdout
    assert re.search(r"^ok [0-9.]+s f:a$", r.stdout, re.M), r.stdout
