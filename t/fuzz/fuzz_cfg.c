/* libFuzzer target: the input as a config file (dagrun -c with two -D),
 * then, when it parses, the graph built, selected, weighed and walked as
 * -n walks it, every command filled in.  A config error must name a line
 * of the input; a good config must end with every node settled. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dagrun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/dagrun-fuzz-XXXXXX";
static char file[sizeof(dir) + 16];

static void
cleanup(void)
{
	unlink(file);
	rmdir(dir);
}

static void
setup(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(file, sizeof(file), "%s/dagrun.ini", dir);
	atexit(cleanup);
}

static void
put(const uint8_t *data, size_t size)
{
	FILE *f = fopen(file, "wb");

	if (!f || fwrite(data, 1, size, f) != size || fclose(f)) {
		perror(file);
		exit(1);
	}
}

/* lines in the input, a last one without a newline counted */
static int
lines(const uint8_t *data, size_t size)
{
	size_t i;
	int n = 0;

	for (i = 0; i < size; i++)
		n += data[i] == '\n';
	return n + (size && data[size - 1] != '\n');
}

/* a config error must be at a line of the input, and cfgparse's must say
 * "file:LINE: message" */
static void
checkerror(int line, const char *msg, int nlines, const char *what)
{
	size_t n = strlen(file);
	char *end;

	if (line < 1 || line > nlines || !*msg || (!strcmp(what, "cfgparse") &&
	    (strncmp(msg, file, n) || msg[n] != ':' || strtol(msg + n + 1, &end, 10) != line ||
	    strncmp(end, ": ", 2) || !end[2]))) {
		fprintf(stderr, "%s: line %d of %d: %s\n", what, line, nlines, msg);
		abort();
	}
}

/* a fan-out node's jobs are not made here: it fails, as when its
 * inputs cannot be read */
static int
noexpand(int n)
{
	(void)n;
	return -1;
}

static void
walk(void)
{
	static char *buf;
	static size_t cap;
	int n, i, done = 0;
	char **av;

	dagstart(noexpand, NULL, NULL);
	while ((n = dagpop()) >= 0) {
		cmdexpand(n, 1, 0, &buf, &cap);
		for (av = cmdargv(n, 2, 0); *av; av++)
			;
		if (nodes[n].postcmd) {
			cmdexpand(n, 1, 1, &buf, &cap);
			cmdargv(n, 1, 1);
		}
		/* every third job fails, to skip what follows it */
		dagdone(n, done++ % 3 == 2 ? SFAILED : SOK);
	}
	for (i = 0; i < nnodes; i++)
		if (nodes[i].state < SOK) {
			fprintf(stderr, "node %s left in state %d\n", nodes[i].name,
			    nodes[i].state);
			abort();
		}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct var defs[2] = {
		{"root", "/srv/data", &defs[1]},
		{"n", "3", NULL},
	};
	int line, nlines = lines(data, size), i;
	char *msg;

	if (!*file)
		setup();
	put(data, size);
	if ((line = cfgtry(file, defs, &msg))) {
		checkerror(line, msg, nlines, "cfgparse");
	} else {
		for (i = 0; i < nnodes; i++)
			if (cfgfind(nodes[i].name) != i)
				abort();
		if ((line = dagbuild(&msg))) {
			checkerror(line, msg, nlines, "dagbuild");
		} else {
			if (dagselect(NULL, 0) >= 0)
				abort();
			walk();
		}
	}
	dagreset();
	cfgreset();
	arenareset();
	return 0;
}
