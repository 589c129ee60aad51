/* libFuzzer target: the input as a spawn file, read while a run of a
 * fixed config is under way, as sched.c's spawned() reads one: cfgspawn,
 * then dagadd to join the graph, cfgunspawn when that fails.  Nodes that
 * joined are dropped again, so that every input meets the same graph; it
 * must be the same after each input.  An error must name a line of the
 * input. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dagrun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char base[] =
    "[vars]\n"
    "tool = /bin/echo\n"
    "[run]\n"
    "jobs = 2\n"
    "slurm_args = --partition=debug\n"
    "[pool gpu]\n"
    "size = 1\n"
    "[node setup]\n"
    "cmd = true\n"
    "[node flaky]\n"
    "cmd = false\n"
    "allow_failure = yes\n"
    "[node broken]\n"
    "cmd = false\n"
    "[node gen]\n"
    "after = setup\n"
    "cmd = ${tool} gen > $DAGRUN_SPAWN\n"
    "[node later]\n"
    "after = gen flaky\n"
    "cmd = ${tool} later\n"
    "[node fan]\n"
    "after = setup\n"
    "inputs = *.txt\n"
    "output_suffix = .out\n"
    "cmd = cp {input} {output}\n"
    "[node unused]\n"
    "cmd = true\n";

/* the run so far: what each of the config's nodes has come to */
static const struct { const char *name; int state; } states[] = {
	{"setup", SOK}, {"flaky", SFAILED}, {"broken", SFAILED}, {"gen", SRUNNING},
	{"later", SWAITING}, {"fan", SWAITING},
};

static struct var defs[2] = {
	{"root", "/srv/data", &defs[1]},
	{"n", "3", NULL},
};

static char dir[] = "/tmp/dagrun-fuzz-XXXXXX";
static char basefile[sizeof(dir) + 16], file[sizeof(dir) + 16];
static int nbase, *npost, count[NSTATES], iterations;

static void
cleanup(void)
{
	unlink(basefile);
	unlink(file);
	rmdir(dir);
}

static void
put(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(data, 1, size, f) != size || fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* the config parsed, its graph built, the run under way */
static void
load(void)
{
	char *targets[] = {"later", "broken", "fan"}, *msg = "unknown target";
	size_t i;
	int n;

	if (cfgtry(basefile, defs, &msg) || dagbuild(&msg) ||
	    dagselect(targets, sizeof(targets) / sizeof(targets[0])) >= 0) {
		fprintf(stderr, "the base config: %s\n", msg);
		exit(1);
	}
	for (i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		if ((n = cfgfind(states[i].name)) < 0)
			exit(1);
		nodes[n].state = states[i].state;
	}
	nbase = nnodes;
	free(npost);
	npost = xmalloc(nbase * sizeof(*npost));
	for (n = 0; n < nbase; n++)
		npost[n] = nodes[n].npost;
	memset(dagcount, 0, sizeof(dagcount));
	for (n = 0; n < nbase; n++)
		if (nodes[n].want)
			dagcount[nodes[n].state]++;
	memcpy(count, dagcount, sizeof(count));
}

static void
setup(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(basefile, sizeof(basefile), "%s/dagrun.ini", dir);
	snprintf(file, sizeof(file), "%s/spawn.ini", dir);
	atexit(cleanup);
	put(basefile, base, sizeof(base) - 1);
	load();
}

static int
lines(const uint8_t *data, size_t size)
{
	size_t i;
	int n = 0;

	for (i = 0; i < size; i++)
		n += data[i] == '\n';
	return n + (size && data[size - 1] != '\n');
}

static void
check(int ok, const char *what, const char *msg)
{
	if (!ok) {
		fprintf(stderr, "%s: %s\n", what, msg ? msg : "");
		abort();
	}
}

/* the graph as load left it */
static void
same(char **gone, int ngone)
{
	int i;

	check(nnodes == nbase, "nodes left behind", NULL);
	for (i = 0; i < nbase; i++) {
		check(cfgfind(nodes[i].name) == i, "a node of the config lost", nodes[i].name);
		check(nodes[i].npost == npost[i], "dependents changed", nodes[i].name);
	}
	for (i = 0; i < ngone; i++)
		check(cfgfind(gone[i]) < 0, "a node that did not join is found", gone[i]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int first, k, line, i, n = lines(data, size);
	size_t len = strlen(file);
	char *msg, *end, **names = NULL;

	if (!*file)
		setup();
	if (++iterations % 1024 == 0) {
		/* arena memory is not freed by cfgunspawn: start afresh */
		dagreset();
		cfgreset();
		arenareset();
		load();
	}
	first = nnodes;
	put(file, data, size);
	k = cfgspawn(file, &msg);
	if (k < 0) {
		line = (int)strtol(msg + len + 1, &end, 10);
		check(!strncmp(msg, file, len) && msg[len] == ':' && line >= 1 && line <= n &&
		    !strncmp(end, ": ", 2) && end[2], "cfgspawn", msg);
	}
	check(k >= 0 ? nnodes == first + k : nnodes == first, "cfgspawn's count", NULL);
	if (k > 0) {
		names = xmalloc(k * sizeof(*names));
		for (i = 0; i < k; i++)
			names[i] = nodes[first + i].name;
		if ((line = dagadd(first, &msg))) {
			check(line >= 1 && line <= n && *msg, "dagadd", msg);
		} else {
			/* joined: drop the nodes again, as a failed dagadd does */
			for (i = first; i < nnodes; i++) {
				check(nodes[i].want && nodes[i].state == SWAITING, "a new node", nodes[i].name);
				free(nodes[i].pre);
				free(nodes[i].post);
			}
			for (i = 0; i < nbase; i++)
				nodes[i].npost = npost[i];
			memcpy(dagcount, count, sizeof(count));
		}
		cfgunspawn(first);
	}
	same(names, k > 0 ? k : 0);
	free(names);
	return 0;
}
