"""Config file: every error a user can meet (exact text, exit 2, nothing run)
and the syntax that must work (comments, continuations, CRLF, variables,
templates)."""
import re

import pytest

SUMMARY = re.compile(r"^dagrun: (\d+) jobs: (.*) in \d+\.\d\ds$")

# a node that would leave a file behind if anything ran
TOUCH = ["[node first]", "cmd = touch made"]


def ini(*lines):
    return "\n".join(lines) + "\n"


def assert_nothing_ran(dr, r):
    assert r.stdout == ""
    assert not (dr.path / "made").exists(), "a job ran despite the config error"
    assert not (dr.path / ".dagrun").exists(), "state dir created despite the config error"


def summary(r):
    last = r.stdout.splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, last
    return m.group(1), m.group(2)


# ---------------------------------------------------------------- errors

ERRORS = [
    ("unknown_section",
     TOUCH + ["[nodes b]", "cmd = true"],
     "3: unknown section [nodes b]"),
    ("section_names_case_sensitive",
     TOUCH + ["[Node b]", "cmd = true"],
     "3: unknown section [Node b]"),
    ("section_with_extra_word",
     TOUCH + ["[run fast]"],
     "3: unknown section [run fast]"),
    ("bad_node_name_char",
     TOUCH + ["[node b/c]", "cmd = true"],
     "3: bad node name 'b/c' (letters, digits and ._-+@)"),
    ("bad_node_name_blank",
     TOUCH + ["[node b c]", "cmd = true"],
     "3: bad node name 'b c' (letters, digits and ._-+@)"),
    ("node_without_name",
     TOUCH + ["[node]", "cmd = true"],
     "3: node needs a name: [node NAME]"),
    ("duplicate_node",
     TOUCH + ["", "[node b]", "cmd = true", "[node first]", "cmd = true"],
     "6: duplicate node 'first' (first at line 1)"),
    ("duplicate_key_node",
     TOUCH + ["cmd = true"],
     "3: duplicate key 'cmd' in [node first]"),
    ("duplicate_key_node_priority",
     TOUCH + ["priority = 1", "priority = 2"],
     "4: duplicate key 'priority' in [node first]"),
    ("duplicate_key_run",
     ["[run]", "jobs = 1", "shell = /bin/sh", "jobs = 2"] + TOUCH,
     "4: duplicate key 'jobs' in [run]"),
    ("unknown_key_run",
     ["[run]", "job = 1"] + TOUCH,
     "2: unknown key 'job' in [run]"),
    ("unknown_key_node",
     TOUCH + ["colour = red"],
     "3: unknown key 'colour' in [node first]"),
    ("key_names_case_sensitive",
     TOUCH + ["Cmd = true"],
     "3: unknown key 'Cmd' in [node first]"),
    ("key_outside_section",
     ["# a comment first", "", "jobs = 2"] + TOUCH,
     "3: 'jobs' outside of a section"),
    ("missing_bracket",
     TOUCH + ["[node b", "cmd = true"],
     "3: expected ']' at the end of a section header"),
    ("not_key_value",
     TOUCH + ["touch other"],
     "3: expected 'key = value'"),
    ("no_key_before_equals",
     TOUCH + ["= true"],
     "3: expected 'key = value' (no key before '=')"),
    ("node_has_no_cmd",
     TOUCH + ["[node b]", "after = first"],
     "3: node 'b' has no cmd"),
    ("empty_cmd",
     TOUCH + ["[node b]", "cmd ="],
     "4: cmd: empty command"),
    ("blank_cmd_from_variable",
     ["[vars]", "nothing ="] + TOUCH + ["[node b]", "cmd = ${nothing}"],
     "6: cmd: empty command"),
    ("unknown_dependency_on_its_after_line",
     TOUCH + ["[node b]", "after = first", "cmd = true", "after = ghost"],
     "6: node 'b' depends on unknown node 'ghost'"),
    ("unknown_dependency_among_several",
     TOUCH + ["[node b]", "cmd = true", "after = first  ghost first"],
     "5: node 'b' depends on unknown node 'ghost'"),
    ("dependency_names_case_sensitive",
     TOUCH + ["[node b]", "cmd = true", "after = First"],
     "5: node 'b' depends on unknown node 'First'"),
    ("cycle_of_three",
     TOUCH + ["[node a]", "after = b", "cmd = true",
              "[node b]", "after = c", "cmd = true",
              "[node c]", "after = a first", "cmd = true"],
     "3: dependency cycle: a -> b -> c -> a"),
    ("cycle_behind_a_dependent",
     ["[node d]", "after = c", "cmd = touch made",
      "[node c]", "after = b", "cmd = true",
      "[node b]", "after = c", "cmd = true"],
     "4: dependency cycle: c -> b -> c"),
    ("self_cycle",
     TOUCH + ["[node a]", "cmd = true", "after = a"],
     "3: dependency cycle: a -> a"),
    ("undefined_variable",
     TOUCH + ["[node b]", "cmd = echo ${dagrun_test_nowhere}"],
     "4: undefined variable 'dagrun_test_nowhere'"),
    ("undefined_variable_in_vars",
     ["[vars]", "x = ${dagrun_test_nowhere}/y"] + TOUCH,
     "2: undefined variable 'dagrun_test_nowhere'"),
    ("shell_default_syntax_is_bad_name",
     TOUCH + ["[node b]", "cmd = echo ${HOME:-x}"],
     "4: bad variable name '${HOME:-x}' (write '$${' for the shell's own '${')"),
    ("empty_variable_name",
     TOUCH + ["[node b]", "cmd = echo ${}"],
     "4: bad variable name '${}' (write '$${' for the shell's own '${')"),
    ("unterminated_variable",
     TOUCH + ["[node b]", "cmd = echo ${HOME"],
     "4: unterminated '${' (write '$${' for a literal '${')"),
    ("duplicate_variable",
     ["[vars]", "x = 1", "y = 2", "x = 3"] + TOUCH,
     "4: duplicate variable 'x'"),
    ("bad_variable_name_in_vars",
     ["[vars]", "a b = 1"] + TOUCH,
     "2: bad variable name 'a b' (letters, digits and _.-)"),
    ("jobs_word",
     ["[run]", "jobs = four"] + TOUCH,
     "2: jobs: expected a whole number from 0 to 2147483647, got 'four'"),
    ("jobs_negative",
     ["[run]", "jobs = -1"] + TOUCH,
     "2: jobs: expected a whole number from 0 to 2147483647, got '-1'"),
    ("jobs_fraction",
     ["[run]", "jobs = 2.5"] + TOUCH,
     "2: jobs: expected a whole number from 0 to 2147483647, got '2.5'"),
    ("jobs_empty",
     ["[run]", "jobs ="] + TOUCH,
     "2: jobs: expected a whole number from 0 to 2147483647, got ''"),
    ("on_failure",
     ["[run]", "on_failure = ignore"] + TOUCH,
     "2: on_failure: expected stop, continue or abort, got 'ignore'"),
    ("on_failure_case",
     ["[run]", "on_failure = Stop"] + TOUCH,
     "2: on_failure: expected stop, continue or abort, got 'Stop'"),
    ("kill_grace_unit",
     ["[run]", "kill_grace = 5x"] + TOUCH,
     "2: kill_grace: expected a duration (number with ms, s, m, h or d), got '5x'"),
    ("kill_grace_negative",
     ["[run]", "kill_grace = -1s"] + TOUCH,
     "2: kill_grace: expected a duration (number with ms, s, m, h or d), got '-1s'"),
    ("kill_grace_unit_only",
     ["[run]", "kill_grace = s"] + TOUCH,
     "2: kill_grace: expected a duration (number with ms, s, m, h or d), got 's'"),
    ("kill_grace_blank_before_unit",
     ["[run]", "kill_grace = 5 s"] + TOUCH,
     "2: kill_grace: expected a duration (number with ms, s, m, h or d), got '5 s'"),
    ("state_dir_empty",
     ["[run]", "state_dir ="] + TOUCH,
     "2: state_dir: expected a directory"),
    ("run_shell_empty",
     ["[run]", "shell ="] + TOUCH,
     "2: shell: expected a command"),
    ("node_shell_empty",
     TOUCH + ["shell ="],
     "3: shell: expected a command"),
    ("node_dir_empty",
     TOUCH + ["dir ="],
     "3: dir: expected a directory"),
    ("allow_failure",
     TOUCH + ["allow_failure = maybe"],
     "3: allow_failure: expected yes or no, got 'maybe'"),
    ("priority_word",
     TOUCH + ["priority = high"],
     "3: priority: expected a whole number from -2147483648 to 2147483647, got 'high'"),
    ("priority_too_big",
     TOUCH + ["priority = 2147483648"],
     "3: priority: expected a whole number from -2147483648 to 2147483647, got '2147483648'"),
    ("env_without_equals",
     TOUCH + ["env = FOO"],
     "3: env: expected NAME=value, got 'FOO'"),
    ("env_without_name",
     TOUCH + ["env = =x"],
     "3: env: expected NAME=value, got '=x'"),
    ("unknown_template",
     TOUCH + ["[node b]", "cmd = echo {foo}"],
     "4: unknown template '{foo}' (write '{{' and '}}' for literal braces)"),
    ("unknown_template_underscore",
     TOUCH + ["[node b]", "cmd = echo {foo_bar}"],
     "4: unknown template '{foo_bar}' (write '{{' and '}}' for literal braces)"),
    ("fanout_template_input",
     TOUCH + ["[node b]", "cmd = cat {input}"],
     "4: template '{input}' needs a fan-out node (inputs or input_list)"),
    ("fanout_template_output_file",
     TOUCH + ["[node b]", "cmd = cat {output_file}"],
     "4: template '{output_file}' needs output, output_dir or output_suffix"),
    ("fanout_template_stem",
     TOUCH + ["[node b]", "cmd = echo x > {stem}.txt"],
     "4: template '{stem}' needs a fan-out node (inputs or input_list)"),
    ("template_from_variable",
     ["[vars]", "t = {bogus}"] + TOUCH + ["[node b]", "cmd = echo ${t}"],
     "6: unknown template '{bogus}' (write '{{' and '}}' for literal braces)"),
]


@pytest.mark.parametrize("lines,msg", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_config_error(dr, lines, msg):
    r = dr.run(ini=ini(*lines))
    assert r.returncode == 2, r
    assert r.stderr == "dagrun.ini:" + msg + "\n"
    assert_nothing_ran(dr, r)


BYNAME = {e[0]: e[1:] for e in ERRORS}


@pytest.mark.parametrize("which", ["unknown_section", "duplicate_node", "cycle_of_three"])
def test_config_error_same_with_check_and_dry_run(dr, which):
    lines, msg = BYNAME[which]
    dr.write(ini(*lines))
    for opt in ("-c", "-n", "-g"):
        r = dr.run(opt)
        assert r.returncode == 2, (opt, r)
        assert r.stderr == "dagrun.ini:" + msg + "\n", opt
        assert_nothing_ran(dr, r)


def test_error_prefix_is_the_file_as_given(dr):
    (dr.path / "conf").mkdir()
    dr.write(ini(*TOUCH, "bogus"), name="conf/my.ini")
    r = dr.run("-f", "conf/my.ini")
    assert r.returncode == 2
    assert r.stderr == "conf/my.ini:3: expected 'key = value'\n"
    assert not (dr.path / "conf" / "made").exists()
    assert not (dr.path / "conf" / ".dagrun").exists()


@pytest.mark.parametrize("value", ["250ms", "1.5s", "2m", "1h", "1d", "0", "7"])
def test_durations_accepted(dr, value):
    r = dr.run("-c", ini=ini("[run]", "kill_grace = " + value, *TOUCH))
    assert (r.returncode, r.stdout, r.stderr) == (0, "dagrun.ini: ok, 1 node\n", "")


@pytest.mark.parametrize("value", ["yes", "no", "true", "false", "on", "off", "1", "0"])
def test_allow_failure_values_accepted(dr, value):
    r = dr.run("-c", ini=ini(*TOUCH, "allow_failure = " + value, "priority = -5"))
    assert (r.returncode, r.stderr) == (0, "")


def test_allow_failure_yes_is_honoured(dr):
    r = dr.run(ini=ini("[node bad]", "cmd = false", "allow_failure = yes",
                       "[node after]", "after = bad", "cmd = touch made"))
    assert r.returncode == 0, r
    assert (dr.path / "made").exists()


def test_repeatable_after_and_env(dr):
    r = dr.run(ini=ini("[node a]", "cmd = true", "[node b]", "cmd = true",
                       "[node c]", "after = a", "after = b",
                       "env = ONE=1", "env = TWO=2=two",
                       "cmd = sh -c 'echo $ONE $TWO > out'"))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "1 2=two\n"
    assert summary(r) == ("3", "3 ok")


# ---------------------------------------------------------------- syntax

def test_comments_and_blank_lines(dr):
    r = dr.run(ini=ini(
        "# a comment",
        "; another comment",
        "",
        "[node a]",
        "# cmd = touch made",
        "    ; cmd = touch made",
        "\t# an indented comment",
        "",
        "cmd = printf '%s\\n' 'x # y' a#b ';' > out",
        "",
    ))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "x # y\na#b\n;\n"
    assert not (dr.path / "made").exists()


def test_semicolon_and_hash_in_cmd_reach_the_shell(dr):
    r = dr.run(ini=ini("[node a]", "cmd = echo one > out; echo two >> out # not run: touch made"))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "one\ntwo\n"
    assert not (dr.path / "made").exists()


def test_hash_in_cmd_shown_by_dry_run(dr):
    r = dr.run("-n", ini=ini("[node a]", "cmd = echo a # b ; c"))
    assert (r.returncode, r.stdout) == (0, "a\techo a # b ; c\n")


def test_continuation_lines_are_joined(dr):
    r = dr.run(ini=ini(
        "[node a]",
        "cmd = printf '%s\\n' \\",
        "  joined \\",
        "  words > out",
        "[node b]",
        "after = \\",
        "a",
        "cmd = touch b-ran",
    ))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "joined\nwords\n"
    assert (dr.path / "b-ran").exists()
    assert summary(r) == ("2", "2 ok")


def test_continuation_without_blank_joins_directly(dr):
    r = dr.run("-n", ini=ini("[node a]", "cmd = echo ab\\", "cd\\", "ef"))
    assert (r.returncode, r.stdout) == (0, "a\techo abcdef\n")


def test_line_numbers_after_continuations(dr):
    r = dr.run(ini=ini(
        "[node a]",            # 1
        "cmd = echo \\",       # 2
        "  one \\",            # 3
        "  two",               # 4
        "[node b]",            # 5
        "cmd = true",          # 6
        "bogus line",          # 7
    ))
    assert r.returncode == 2
    assert r.stderr == "dagrun.ini:7: expected 'key = value'\n"


def test_duplicate_node_line_numbers_after_continuations(dr):
    r = dr.run(ini=ini(
        "[vars]",              # 1
        "v = a \\",            # 2
        "  b",                 # 3
        "[node x]",            # 4
        "cmd = echo \\",       # 5
        "  ${v}",              # 6
        "[node x]",            # 7
        "cmd = true",          # 8
    ))
    assert r.returncode == 2
    assert r.stderr == "dagrun.ini:7: duplicate node 'x' (first at line 4)\n"


def test_vars_error_line_after_continuation(dr):
    r = dr.run(ini=ini(
        "[node x]",            # 1
        "cmd = echo \\",       # 2
        "  hi",                # 3
        "[vars]",              # 4
        "v = 1",               # 5
        "v = 2",               # 6
    ))
    assert r.returncode == 2
    assert r.stderr == "dagrun.ini:6: duplicate variable 'v'\n"


def test_crlf_line_endings(dr):
    text = ("# crlf\r\n[vars]\r\nword = hello\r\n\r\n[node a]\r\n"
            "cmd = printf '%s\\n' ${word} \\\r\n  more > out\r\n"
            "[node b]\r\nafter = a\r\ncmd = touch b-ran\r\n")
    dr.write(text)
    r = dr.run("-n")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "a\tprintf '%s\\n' hello   more > out\nb\ttouch b-ran\n"
    r = dr.run()
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "hello\nmore\n"
    assert (dr.path / "b-ran").exists()


def test_crlf_error_line_numbers(dr):
    dr.write("[node a]\r\ncmd = echo \\\r\n  x\r\n[node b]\r\ncmd = true\r\nafter = zz\r\n")
    r = dr.run()
    assert r.returncode == 2
    assert r.stderr == "dagrun.ini:6: node 'b' depends on unknown node 'zz'\n"


def test_vars_expand_in_cmd_after_and_run(dr):
    r = dr.run(ini=ini(
        "[vars]",
        "out = result.txt",
        "msg = hello ${out}",
        "first = a",
        "n = 2",
        "[run]",
        "jobs = ${n}",
        "[node a]",
        "cmd = true",
        "[node b]",
        "after = ${first}",
        "cmd = echo ${msg} > ${out}",
    ))
    assert r.returncode == 0, r
    assert (dr.path / "result.txt").read_text() == "hello result.txt\n"
    assert [j[:2] for j in dr.journal() if j[0] == "start"] == [["start", "a"], ["start", "b"]]


def test_vars_section_after_the_node_using_it(dr):
    r = dr.run(ini=ini(
        "[node a]",
        "cmd = echo ${greeting} > out",
        "[vars]",
        "greeting = late but defined",
    ))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "late but defined\n"


def test_vars_header_with_blanks_inside_brackets(dr):
    # '[ run ]' and '[ node a ]' are accepted; '[ vars ]' is too, yet its
    # variables are unknown ("undefined variable 'x'")
    r = dr.run("-n", ini=ini("[ vars ]", "x = 1", "[ node a ]", "cmd = echo ${x}"))
    assert (r.returncode, r.stderr, r.stdout) == (0, "", "a\techo 1\n")


def test_blanks_inside_brackets_for_node_and_run(dr):
    r = dr.run("-n", ini=ini("[ run ]", "jobs = 1", "[  node\ta ]", "cmd = echo 1"))
    assert (r.returncode, r.stderr, r.stdout) == (0, "", "a\techo 1\n")


PRECEDENCE = [
    # env, [vars], -D, expected
    ("env", None, None, "env"),
    ("env", "vars", None, "vars"),
    ("env", "vars", "def", "def"),
    (None, "vars", "def", "def"),
    ("env", None, "def", "def"),
]


@pytest.mark.parametrize("env,var,define,want", PRECEDENCE)
def test_variable_precedence(dr, env, var, define, want):
    from conftest import clean_env
    lines = ["[node a]", "cmd = echo ${WHO} > out"]
    if var is not None:
        lines += ["[vars]", "WHO = " + var]
    e = clean_env()
    e.pop("WHO", None)
    if env is not None:
        e["WHO"] = env
    args = ["-D", "WHO=" + define] if define is not None else []
    r = dr.run(*args, ini=ini(*lines), env=e)
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == want + "\n"


def test_define_reaches_vars_values(dr):
    r = dr.run("-n", "-D", "base=/from/D", ini=ini(
        "[vars]", "base = /from/vars", "path = ${base}/sub",
        "[node a]", "cmd = ls ${path}"))
    assert (r.returncode, r.stdout) == (0, "a\tls /from/D/sub\n")


def test_last_define_wins(dr):
    r = dr.run("-n", "-D", "x=1", "-D", "x=2", ini=ini("[node a]", "cmd = echo ${x}"))
    assert (r.returncode, r.stdout) == (0, "a\techo 2\n")


def test_double_dollar_brace_is_literal_for_the_shell(dr):
    r = dr.run(ini=ini(
        "[vars]", "FOO = fromvars",
        "[node a]", "env = FOO=fromenv",
        "cmd = echo $${FOO} ${FOO} > out"))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "fromenv fromvars\n"


def test_double_dollar_brace_in_dry_run(dr):
    r = dr.run("-n", ini=ini("[node a]", "cmd = echo $${HOME:-x} $${#} $${node}"))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "a\techo ${HOME:-x} ${#} ${node}\n"


def test_lone_dollars_left_alone(dr):
    r = dr.run("-n", ini=ini("[node a]", "cmd = echo $$ $1 $ cost$ $HOME $@"))
    assert (r.returncode, r.stderr, r.stdout) == (0, "", "a\techo $$ $1 $ cost$ $HOME $@\n")


def test_lone_dollars_reach_the_shell(dr):
    r = dr.run(ini=ini("[node a]", "cmd = set -- first; echo $1 $$ 5$ > out"))
    assert r.returncode == 0, r
    words = (dr.path / "out").read_text().split()
    assert words[0] == "first" and words[1].isdigit() and words[2] == "5$"


def test_literal_braces(dr):
    r = dr.run(ini=ini("[node a]", "cmd = printf '%s\\n' {{node}} {{x}} }}{{ > out"))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "{node}\n{x}\n}{\n"


def test_awk_braces_pass_through(dr):
    r = dr.run(ini=ini("[node a]", "cmd = printf 'a b\\n' | awk '{print $2}' > out"))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "b\n"


def test_other_braces_pass_through_in_dry_run(dr):
    r = dr.run("-n", ini=ini("[node a]", "cmd = echo {} {a,b} {X} {a1} { x } {{ }}"))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "a\techo {} {a,b} {X} {a1} { x } { }\n"


def test_node_and_attempt_templates_direct(dr):
    # no shell metacharacters: executed directly, each value inside one argument
    r = dr.run(ini=ini("[node mk.1]", "cmd = touch pre-{node}-{attempt}.x"))
    assert r.returncode == 0, r
    assert sorted(p.name for p in dr.path.glob("*.x")) == ["pre-mk.1-1.x"]


def test_node_and_attempt_templates_shell(dr):
    r = dr.run(ini=ini("[node a+b@c]", "cmd = printf '<%s>' x{node}y {attempt} > out"))
    assert r.returncode == 0, r
    assert (dr.path / "out").read_text() == "<xa+b@cy><1>"


def test_templates_expanded_in_dry_run(dr):
    r = dr.run("-n", ini=ini("[node n1]", "cmd = echo {node} {attempt}",
                             "[node n2]", "after = n1", "cmd = echo {node}-{attempt} | cat"))
    assert (r.returncode, r.stdout) == (0, "n1\techo n1 1\nn2\techo n2-1 | cat\n")


def test_valid_node_names(dr):
    names = ["file1.py", "a-b", "a_b", "A+B", "x@host", "1"]
    lines = []
    for n in names:
        lines += ["[node " + n + "]", "cmd = true"]
    r = dr.run("-c", ini=ini(*lines))
    assert (r.returncode, r.stdout, r.stderr) == (0, "dagrun.ini: ok, 6 nodes\n", "")
