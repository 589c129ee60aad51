#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dagrun.h"

const char *argv0 = "dagrun";

static void
vwarn(const char *fmt, va_list ap)
{
	size_t n = strlen(fmt);

	fflush(stdout);
	fprintf(stderr, "%s: ", argv0);
	vfprintf(stderr, fmt, ap);
	if (n && fmt[n - 1] == ':')
		fprintf(stderr, " %s", strerror(errno));
	fputc('\n', stderr);
}

void
warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn(fmt, ap);
	va_end(ap);
	exit(EXUSAGE);
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		fatal("malloc:");
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		fatal("realloc:");
	return p;
}

void *
xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);

	if (!p)
		fatal("calloc:");
	return p;
}

char *
xstrdup(const char *s)
{
	return arenastr(s, strlen(s));
}

/* the arena's blocks, each after a link to the one before */
static void **blocks;
static char *bump;
static size_t left;

static void *
block(size_t n)
{
	void **b = xmalloc(16 + n);

	*b = blocks;
	blocks = b;
	return (char *)b + 16;
}

void *
arena(size_t n)
{
	void *r;

	n = (n + 7) & ~(size_t)7;
	if (n > 65536)
		return block(n);
	if (n > left) {
		bump = block(1 << 20);
		left = 1 << 20;
	}
	r = bump;
	bump += n;
	left -= n;
	return r;
}

void
arenareset(void)
{
	void **b;

	while ((b = blocks)) {
		blocks = *b;
		free(b);
	}
	bump = NULL;
	left = 0;
}

char *
arenastr(const char *s, size_t n)
{
	char *p = arena(n + 1);

	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

double
wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

#ifndef FUZZ	/* the fuzz targets have libFuzzer's main */
static NORETURN void
usage(FILE *f)
{
	fprintf(f, "usage: %s [-cgknqrsvx] [-C dir] [-D name=value] [-f file] "
	    "[-j jobs] [-l load] [-t timeline.svg] [node ...]\n", argv0);
	exit(f == stdout ? EXOK : EXUSAGE);
}

static int
number(const char *s, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > INT_MAX)
		fatal("%s: expected a whole number >= 0, got '%s'", what, s);
	return (int)v;
}

static double
loadarg(const char *s)
{
	const char *end;
	double v = cfgdecimal(s, &end);

	if (v <= 0 || *end)
		fatal("-l: expected a load average above 0, got '%s'", s);
	return v;
}

/* -g: the selected graph in Graphviz DOT */
static void
printdot(void)
{
	int i, j;

	puts("digraph dagrun {");
	for (i = 0; i < nnodes; i++) {
		if (!nodes[i].want || nodes[i].parent >= 0)
			continue;
		printf("\t\"%s\";\n", nodes[i].name);
		for (j = 0; j < nodes[i].npre; j++)
			printf("\t\"%s\" -> \"%s\";\n",
			    nodes[nodes[i].pre[j]].name, nodes[i].name);
	}
	puts("}");
}

/* -n: each job in a valid start order with its expanded command */
static void
dryrun(void)
{
	char *buf = NULL;
	size_t cap = 0;
	int n;
	char *none[] = {NULL}, **av;
	int i;

	dagstart(NULL, NULL, NULL);
	while ((n = dagpop()) >= 0) {
		cmdexpand(n, 1, 0, &buf, &cap);
		fputs(nodes[n].name, stdout);
		putchar('\t');
		/* a Slurm job: srun with the options that are the node's */
		for (av = nodes[n].slurm ? slurmargv(n, none) : none, i = 0; av[i]; i++)
			if (strncmp(av[i], "--prolog=", 9) && strncmp(av[i], "--comment=", 10)) {
				logputs(stdout, av[i]);
				putchar(' ');
			}
		logputs(stdout, buf);
		putchar('\n');
		dagdone(n, SOK);
	}
	free(buf);
}

int
main(int argc, char **argv)
{
	struct var *defs = NULL, *v;
	const char *file = "dagrun.ini", *dir = NULL;
	int opt, check = 0, graph = 0, dry = 0, jobs = -1, onfail = -1, status = 0, resume = 0;
	const char *timeline = NULL;
	int quiet = 0, verbose = 0, line, bad, i, n, nodes0;
	double load = -1;
	char *msg, *eq;

	if (slurmprolog())
		return 0;	/* srun runs dagrun as its prolog */
	opterr = 0;
	while ((opt = getopt(argc, argv, ":cgknqrsvxC:D:f:j:l:t:hV")) != -1) {
		switch (opt) {
		case 'c': check = 1; break;
		case 'g': graph = 1; break;
		case 'k': onfail = FCONTINUE; break;
		case 'x': onfail = FABORT; break;
		case 'n': dry = 1; break;
		case 's': status = 1; break;
		case 'r': resume = 1; break;
		case 't': timeline = optarg; break;
		case 'q': quiet = 1; verbose = 0; break;
		case 'v': verbose = 1; quiet = 0; break;
		case 'C': dir = optarg; break;
		case 'f': file = optarg; break;
		case 'j': jobs = number(optarg, "-j"); break;
		case 'l': load = loadarg(optarg); break;
		case 'D':
			eq = strchr(optarg, '=');
			if (!eq || eq == optarg)
				fatal("-D: expected name=value, got '%s'", optarg);
			v = xmalloc(sizeof(*v));
			v->name = arenastr(optarg, eq - optarg);
			v->value = eq + 1;
			v->next = defs;
			defs = v;
			break;
		case 'V':
			printf("dagrun %s\n", VERSION);
			return EXOK;
		case 'h':
			usage(stdout);
		case ':':
			warn("option -%c needs a value", optopt);
			usage(stderr);
		default:
			warn("unknown option -%c", optopt);
			usage(stderr);
		}
	}
	if (dir && chdir(dir) < 0)
		fatal("-C %s:", dir);
	cfgparse(file, defs);
	if (jobs >= 0)
		cfg.jobs = jobs;
	if (onfail >= 0)
		cfg.onfail = onfail;
	if (load >= 0)
		cfg.loadmax = load;
	cfg.quiet = quiet;
	cfg.verbose = verbose;
	if (timeline && *timeline != '/') {
		/* named from here, not from the config file's directory */
		char cwd[PATH_MAX], *abs;

		if (!getcwd(cwd, sizeof(cwd)))
			fatal("getcwd:");
		abs = xmalloc(strlen(cwd) + strlen(timeline) + 2);
		sprintf(abs, "%s/%s", cwd, timeline);
		timeline = abs;
	}
	cfg.timeline = timeline;
	cfg.resume = resume;
	if (status) {
		if (chdir(cfg.dir) < 0)
			fatal("%s:", cfg.dir);
		return showstatus(cfg.statedir, quiet);
	}
	if ((line = dagbuild(&msg)))
		cfgerror(line, "%s", msg);
	if ((bad = dagselect(argv + optind, argc - optind)) >= 0)
		fatal("unknown node '%s'", argv[optind + bad]);
	nodes0 = dagtotal();
	if (chdir(cfg.dir) < 0)
		fatal("%s:", cfg.dir);
	if ((line = fanprepare(&msg)))
		cfgerror(line, "%s", msg);
	/* inputs are found now when nothing runs before them (or for -n) */
	for (i = 0, n = nnodes; i < n; i++)
		if (nodes[i].want && fanout(i) && (!nodes[i].npre || dry) &&
		    (line = fanexpand(i, &msg)))
			cfgerror(line, "%s: %s", nodes[i].name, msg);
	if (check) {
		if (!quiet)
			printf("%s: ok, %d node%s\n", file, nodes0, nodes0 == 1 ? "" : "s");
		return EXOK;
	}
	if (graph) {
		printdot();
		return EXOK;
	}
	if (dry) {
		loghistory(cfg.statedir);
		dryrun();
		return fflush(stdout) ? EXFAIL : EXOK;
	}
	if (cfg.jobs < 0)
		cfg.jobs = rescpus();
	return schedrun();
}
#endif
