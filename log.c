#define _POSIX_C_SOURCE 200809L
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dagrun.h"

static const char *const statename[NSTATES] = {
	"waiting", "ready", "calibrating", "running", "suspended", "ok", "failed", "timeout", "cancelled",
	"skipped",
};

static const char *statedir;
static int journal = -1;
static FILE *mainlog, *errlog, *benchlog;
static int tty;			/* status line on stdout */
static int shown;		/* the status line is on screen */
static int dirty;		/* buffered log lines not yet written */
static double lastflush, lastmetrics, runt0;
static int unsynced;		/* journal records not yet made durable */
static double syncdue;		/* when they must be */
static int logfailed;		/* a state file could not be written */
static int nresumed;		/* jobs -r took from an earlier run */
static void broken(const char *, ssize_t);
static double runsecs;		/* attempts' time, for the metrics */
static double workleft, meancost;	/* for the ETA, from earlier runs */
static long nruns;

int
logtty(void)
{
	return tty;
}

int
logdirty(void)
{
	return dirty;
}

static FILE *
openlog(const char *name)
{
	char path[4096];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", statedir, name);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0 || !(f = fdopen(fd, "a")))
		fatal("%s:", path);
	return f;
}

/* log files of fan-out jobs from an earlier run: file names, hashed */
static char **stalejobs;
static size_t capstale, nstale;

static size_t
stalehash(const char *s, size_t n)
{
	size_t h = 2166136261UL;

	while (n--)
		h = (h ^ (unsigned char)*s++) * 16777619UL;
	return h;
}

static void
addstale(const char *name)
{
	size_t i, j;
	char **old;

	if (2 * (nstale + 1) > capstale) {
		old = stalejobs;
		j = capstale;
		capstale = capstale ? 2 * capstale : 256;
		stalejobs = xcalloc(capstale, sizeof(*stalejobs));
		nstale = 0;
		while (j--)
			if (old[j])
				addstale(old[j]);
		free(old);
	}
	for (i = stalehash(name, strlen(name)) & (capstale - 1); stalejobs[i];
	    i = (i + 1) & (capstale - 1))
		if (!strcmp(stalejobs[i], name))
			return;
	stalejobs[i] = xstrdup(name);
	nstale++;
}

/* which nodes have logs from an earlier run, so that a job that prints
 * nothing leaves no stale file, without an unlink per job */
static void
findstale(const char *dir)
{
	struct dirent *e;
	char name[4096];
	size_t n;
	DIR *d;
	int k;

	if (!(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		n = strlen(e->d_name);
		if (n < 5 || n >= sizeof(name) || e->d_name[n - 4] != '.')
			continue;
		memcpy(name, e->d_name, n - 4);
		name[n - 4] = 0;
		if ((k = cfgfind(name)) < 0) {
			/* a fan-out job's: looked up as the job starts */
			if (strchr(name, ':'))
				addstale(e->d_name);
			continue;
		}
		if (!strcmp(e->d_name + n - 3, "out"))
			nodes[k].stale |= 1;
		else if (!strcmp(e->d_name + n - 3, "err"))
			nodes[k].stale |= 2;
	}
	closedir(d);
}

int
logstale(int node)
{
	const char *p;
	size_t i;
	int fd, r = 0;

	if (!nstale)
		return 0;
	for (fd = 1; fd <= 2; fd++) {
		p = strrchr(logpath(node, fd), '/') + 1;
		for (i = stalehash(p, strlen(p)) & (capstale - 1); stalejobs[i];
		    i = (i + 1) & (capstale - 1))
			if (!strcmp(stalejobs[i], p)) {
				r |= fd;
				break;
			}
	}
	return r;
}

void
logopen(const char *dir)
{
	char path[4096];
	const char *term = getenv("TERM");
	off_t end, off;
	size_t n;
	char *p;
	int fd;

	statedir = dir;
	snprintf(path, sizeof(path), "%s/logs", dir);
	if (mkdir(path, 0777) < 0 && errno != EEXIST)
		fatal("%s:", path);
	findstale(path);
	snprintf(path, sizeof(path), "%s/journal", dir);
	journal = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
	if (journal < 0)
		fatal("%s:", path);
	/* a record torn by a crash goes, so that no reader takes it for whole */
	if ((end = lseek(journal, 0, SEEK_END)) > 0) {
		for (off = end; off > 0; off -= n) {
			n = off < (off_t)sizeof(path) ? (size_t)off : sizeof(path);
			if (pread(journal, path, n, off - n) != (ssize_t)n)
				fatal("%s/journal:", dir);
			for (p = path + n; p > path && p[-1] != '\n'; p--)
				;
			if (p > path) {
				off -= n - (p - path);
				break;
			}
		}
		if (off < 0)
			off = 0;
		if (off != end && ftruncate(journal, off) < 0)
			fatal("%s/journal:", dir);
	}
	mainlog = openlog("main.log");
	/* made now, opened at its first error: one descriptor fewer for jobs */
	snprintf(path, sizeof(path), "%s/error.log", dir);
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666)) < 0)
		fatal("%s:", path);
	close(fd);
	benchlog = openlog("benchmarks.log");
	tty = !cfg.quiet && isatty(1) && term && strcmp(term, "dumb");
	lastflush = mono();
}

char *
logpath(int node, int fd)
{
	static char path[2][4096];

	const char *s = nodes[node].name;
	size_t n;

	n = snprintf(path[fd - 1], sizeof(path[0]) - 16, "%s/logs/", statedir);
	/* a job's name may hold '/': %2F in a file name, and '%' as %25 */
	for (; *s && n < sizeof(path[0]) - 16; s++)
		n += *s == '/' || *s == '%' ? (size_t)sprintf(path[fd - 1] + n, "%%%02X", *s) :
		    (size_t)(path[fd - 1][n] = *s, 1);
	snprintf(path[fd - 1] + n, 16, ".%s", fd == 1 ? "out" : "err");
	return path[fd - 1];
}

double
logmetricswake(double now)
{
	return lastmetrics + 1 > now ? lastmetrics + 1 - now : 0;
}

/* what job n should take, from earlier runs */
static double
estimate(int n)
{
	return nodes[n].cost > 0 ? nodes[n].cost : meancost;
}

/* metrics_file: Prometheus text format, written whole and renamed */
static void
metrics(void)
{
	static const char *const names[NSTATES] = {
		"waiting", "ready", "calibrating", "running", "suspended", "ok", "failed",
		"timeout", "cancelled", "skipped",
	};
	char tmp[4096];
	long long used, limit, disk;
	double l1, v, ok = dagcount[SOK], bad = dagcount[SFAILED] + dagcount[STIMEOUT];
	const char *name;
	int s, i, r, fd;
	FILE *f;

	lastmetrics = mono();
	snprintf(tmp, sizeof(tmp), "%s.tmp", cfg.metrics);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0 ||
	    !(f = fdopen(fd, "w"))) {
		logerror("%s: %s", tmp, strerror(errno));
		return;
	}
	fputs("# HELP dagrun_jobs Jobs of the run in each state.\n# TYPE dagrun_jobs gauge\n", f);
	for (s = 0; s < NSTATES; s++)
		fprintf(f, "dagrun_jobs{state=\"%s\"} %d\n", names[s], dagcount[s]);
	fprintf(f, "# HELP dagrun_running Jobs running now.\n# TYPE dagrun_running gauge\n"
	    "dagrun_running %d\n", dagcount[SRUNNING] + dagcount[SCALIBRATING] +
	    dagcount[SSUSPENDED]);
	fprintf(f, "# HELP dagrun_waiting Jobs not started yet.\n# TYPE dagrun_waiting gauge\n"
	    "dagrun_waiting %d\n", dagcount[SWAITING] + dagcount[SREADY]);
	fprintf(f, "# HELP dagrun_attempts_total Attempts ended.\n"
	    "# TYPE dagrun_attempts_total counter\ndagrun_attempts_total %ld\n", nruns);
	fprintf(f, "# HELP dagrun_attempt_seconds_total Time attempts ran.\n"
	    "# TYPE dagrun_attempt_seconds_total counter\ndagrun_attempt_seconds_total %.3f\n",
	    runsecs);
	fprintf(f, "# HELP dagrun_success_ratio Jobs ok among those ended ok, failed or "
	    "timed out.\n# TYPE dagrun_success_ratio gauge\ndagrun_success_ratio %.4f\n",
	    ok + bad > 0 ? ok / (ok + bad) : 1.0);
	fprintf(f, "# HELP dagrun_elapsed_seconds Time since the run started.\n"
	    "# TYPE dagrun_elapsed_seconds gauge\ndagrun_elapsed_seconds %.3f\n", mono() - runt0);
	if (resmem(&used, &limit) == 0)
		fprintf(f, "# TYPE dagrun_memory_used_bytes gauge\ndagrun_memory_used_bytes %lld\n"
		    "# TYPE dagrun_memory_limit_bytes gauge\ndagrun_memory_limit_bytes %lld\n",
		    used, limit);
	if (resload(&l1, &r) == 0)
		fprintf(f, "# TYPE dagrun_load1 gauge\ndagrun_load1 %.2f\n", l1);
	if ((disk = resdiskfree(cfg.diskpath ? cfg.diskpath : statedir)) >= 0)
		fprintf(f, "# TYPE dagrun_disk_free_bytes gauge\ndagrun_disk_free_bytes %lld\n", disk);
	for (i = 0; (r = plugvalue(i, &name, &v)) >= 0; i++) {
		if (!i)
			fputs("# HELP dagrun_plugin_value The last reading of a capacity or probe "
			    "command.\n# TYPE dagrun_plugin_value gauge\n", f);
		if (r)
			fprintf(f, "dagrun_plugin_value{plugin=\"%s\"} %g\n", name, v);
	}
	fputs("# HELP dagrun_node_seconds Run time of a node's last attempt, or the sum of "
	    "its jobs'.\n# TYPE dagrun_node_seconds gauge\n", f);
	for (i = 0; i < nnodes; i++)
		if (nodes[i].want && nodes[i].parent < 0 && nodes[i].secs > 0)
			fprintf(f, "dagrun_node_seconds{node=\"%s\"} %.3f\n", nodes[i].name,
			    nodes[i].secs);
	if (fclose(f) != 0 || rename(tmp, cfg.metrics) < 0) {
		logerror("%s: %s", cfg.metrics, strerror(errno));
		unlink(tmp);
	}
}

/* the node a job belongs to */
static const char *
nodename(int n)
{
	return nodes[nodes[n].parent >= 0 ? nodes[n].parent : n].name;
}

/* one journal record, one write(), as soon as its event happens */
static void
record(const char *fmt, ...)
{
	char line[8192];
	va_list ap;
	int n, k;
	ssize_t w;

	n = snprintf(line, sizeof(line), "%.6f\t", wall());
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	for (k = 0; k < n && (w = write(journal, line + k, n - k)) > 0; k += w)
		;	/* a short write: the rest gets the error, such as ENOSPC */
	if (k < n)
		broken("journal", -1);
	else if (!unsynced++)
		syncdue = mono() + 1;
}

/* a write to a state file failed: said once, and the run stops */
static void
broken(const char *file, ssize_t n)
{
	if (!logfailed)
		warn("%s/%s: %s: no new job starts", statedir, file, n >= 0 ? "short write" :
		    strerror(errno));
	logfailed = 1;
}

int
logbroken(void)
{
	return logfailed;
}

/* the journal on disk: at most a second after a record, and at the end */
static void
journalsync(void)
{
	if (unsynced && fdatasync(journal) < 0 && errno != EINVAL)
		broken("journal", -1);
	unsynced = 0;
}

double
logsyncwake(double now)
{
	return !unsynced ? 1e9 : syncdue > now ? syncdue - now : 0;
}

static void
stamp(FILE *f, const char *level)
{
	static time_t last;
	static char buf[32];
	double t = wall();
	time_t s = (time_t)t;
	struct tm tm;

	if (s != last) {
		localtime_r(&s, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
		last = s;
	}
	fprintf(f, "%s.%03d\t%s\t", buf, (int)((t - s) * 1000), level);
	dirty = 1;
}

static void
vlog(FILE *f, const char *level, const char *fmt, va_list ap)
{
	va_list aq;

	va_copy(aq, ap);
	stamp(mainlog, level);
	vfprintf(mainlog, fmt, ap);
	fputc('\n', mainlog);
	if (f != mainlog) {
		stamp(f, level);
		vfprintf(f, fmt, aq);
		fputc('\n', f);
	}
	va_end(aq);
}

void
loginfo(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(mainlog, "INFO", fmt, ap);
	va_end(ap);
}

void
logerror(const char *fmt, ...)
{
	va_list ap;

	if (!errlog) {
		char path[4096];
		int fd;

		snprintf(path, sizeof(path), "%s/error.log", statedir);
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
		if (fd < 0 || !(errlog = fdopen(fd, "a"))) {
			if (fd >= 0)
				close(fd);
			/* out of descriptors: main.log has it, error.log next time */
			if (fd >= 0 || (errno != EMFILE && errno != ENFILE))
				broken("error.log", -1);
		}
	}
	va_start(ap, fmt);
	vlog(errlog ? errlog : mainlog, "ERROR", fmt, ap);
	va_end(ap);
}

void
logputs(FILE *f, const char *s)
{
	for (; *s; s++)
		if (*s == '\n')
			fputs("\\n", f);
		else if (*s == '\t')
			fputs("\\t", f);
		else if ((unsigned char)*s < 32 || *s == 127)
			fprintf(f, "\\x%02x", (unsigned char)*s);
		else
			putc(*s, f);
}

/* take the status line off the screen before printing */
static void
unshow(void)
{
	if (shown) {
		fputs("\r\033[K", stdout);
		shown = 0;
	}
}

void
logwarn(const char *fmt, ...)
{
	va_list ap;

	unshow();
	fflush(stdout);
	fprintf(stderr, "%s: ", argv0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void
logcalibrating(int n)
{
	record("calibrate\t%s", nodes[n].name);
}

void
logspawn(int job, int first, int n)
{
	int i;

	record("spawn\t%s\t%d", nodes[job].name, n);
	for (i = first; i < first + n; i++)
		record("add\t%s", nodes[i].name);
}

void
logexpand(int node)
{
	record("expand\t%s\t%d", nodes[node].name, nodes[node].njobs);
	loginfo("%s: %d input%s", nodes[node].name, nodes[node].njobs,
	    nodes[node].njobs == 1 ? "" : "s");
}

void
logflush(void)
{
	double now;

	fflush(stdout);
	now = mono();
	if (cfg.metrics && now - lastmetrics >= 1)
		metrics();
	if (unsynced && now >= syncdue)
		journalsync();
	if (!dirty)
		return;
	if (now - lastflush < 0.5)
		return;
	if (fflush(mainlog) || (errlog && fflush(errlog)) || fflush(benchlog))
		broken("main.log, error.log or benchmarks.log", -1);
	dirty = 0;
	lastflush = now;
}

void
logstart(int node, int attempt, long pid, unsigned long long hash, const char *cmd)
{
	record("start\t%s\t%d\t%ld\t%016llx", nodes[node].name, attempt, pid, hash);
	if (cmd) {
		unshow();
		printf("+ %s: ", nodes[node].name);
		logputs(stdout, cmd);
		putchar('\n');
	}
}

void
logresumed(int n)
{
	record("resumed\t%s", nodes[n].name);
	nresumed++;
}

/* the last lines of the job's stderr, tagged */
static void
tail(int node)
{
	char buf[4096 + 1], *p, *s;
	ssize_t n;
	off_t size;
	int fd, lines = 0;

	if ((fd = open(logpath(node, 2), O_RDONLY | O_CLOEXEC)) < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size > 4096)
		lseek(fd, size - 4096, SEEK_SET);
	else
		lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, 4096);
	close(fd);
	if (n <= 0)
		return;
	if (buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	for (p = buf + n; p > buf; p--)
		if (p[-1] == '\n' && ++lines == 10)
			break;
	if (p == buf && size > 4096)
		p = strchr(buf, '\n') ? strchr(buf, '\n') + 1 : buf;
	for (; p && *p; p = s) {
		s = strchr(p, '\n');
		if (s)
			*s++ = 0;
		fprintf(stderr, "%s| %s\n", nodes[node].name, p);
	}
}

void
logend(const struct jobinfo *j)
{
	const char *name = nodes[j->node].name, *state = statename[j->state];
	double dur = j->end - j->start;

	record("end\t%s\t%d\t%s\t%d\t%.3f", name, j->attempt, state, j->status, dur);
	plugnotify("end", name, nodename(j->node), state, j->status, j->attempt, dur, j->retry);
	fprintf(benchlog, "%s\t%d\t%.3f\t%.3f\t%.3f\t%d\t%.3f\t%ld\n", name, j->attempt,
	    j->start, j->end, dur, j->status, j->cpu, j->maxrss);
	dirty = 1;
	if (j->retry < 0 && meancost > 0)
		workleft -= estimate(j->node);
	nodes[j->node].secs = dur;
	if (nodes[j->node].parent >= 0)
		nodes[nodes[j->node].parent].secs += dur;
	runsecs += dur;
	nruns++;
	if (j->state == SOK) {
		nodes[j->node].cost = dur > 0.0005 ? dur : 0.0005;
		loginfo("%s ok in %.3fs", name, dur);
		if (!tty && !cfg.quiet)
			printf("ok %.2fs %s\n", dur, name);
		return;
	}
	if (j->state == SCANCELLED) {
		loginfo("%s cancelled after %.3fs (exit %d)", name, dur, j->status);
		if (!cfg.quiet) {
			unshow();
			printf("cancelled %.2fs %s\n", dur, name);
		}
		return;
	}
	if (j->retry >= 0) {
		record("retry\t%s\t%d\t%.3f", name, j->attempt + 1, j->retry);
		loginfo("%s %s: exit %d after %.3fs, attempt %d in %gs (stderr: %s)", name, state,
		    j->status, dur, j->attempt + 1, j->retry, logpath(j->node, 2));
		if (!cfg.quiet) {
			unshow();
			printf("retry %s: %s exit %d %.2fs, attempt %d in %gs\n", name, state,
			    j->status, dur, j->attempt + 1, j->retry);
		}
		return;
	}
	logerror("%s %s: exit %d after %.3fs%s (stderr: %s)", name, state, j->status, dur,
	    j->allowed ? ", allowed" : "", logpath(j->node, 2));
	unshow();
	fflush(stdout);
	fprintf(stderr, "%s exit %d %.2fs %s%s\n", j->state == STIMEOUT ? "TIMEOUT" : "FAILED",
	    j->status, dur, name, j->allowed ? " (allowed)" : "");
	if (!cfg.verbose)
		tail(j->node);
	fflush(stderr);
}

void
logsuspend(int node, int on, double pct)
{
	const char *name = nodes[node].name;

	record("%s\t%s", on ? "suspend" : "resume", name);
	loginfo("%s %s: memory at %.0f%%", on ? "suspended" : "resumed", name, pct);
	if (!cfg.quiet) {
		unshow();
		printf("%s %s (memory %.0f%%)\n", on ? "suspended" : "resumed", name, pct);
	}
}

void
logskip(int node)
{
	const char *name = nodes[node].name, *state = statename[nodes[node].state];

	record("end\t%s\t0\t%s\t-1\t0", name, state);
	if (meancost > 0)
		workleft -= estimate(node);
	plugnotify("end", name, nodename(node), state, -1, 0, 0, -1);
	loginfo("%s %s", name, state);
	if (!tty && !cfg.quiet)
		printf("%s %s\n", state, name);
}

void
logrunstart(int total)
{
	int i, known = 0;

	record("run\t%ld\t%d", (long)getpid(), total);
	runt0 = mono();
	for (i = 0; i < nnodes; i++)
		if (nodes[i].want && !nodes[i].expanded && nodes[i].cost > 0) {
			meancost += nodes[i].cost;
			known++;
		}
	if (known)
		meancost /= known;
	for (i = 0; i < nnodes && known; i++)
		if (nodes[i].want && !nodes[i].expanded)
			workleft += estimate(i);
	if (cfg.jobs)
		loginfo("run started: %d jobs, at most %d at once, pid %ld", total, cfg.jobs,
		    (long)getpid());
	else
		loginfo("run started: %d jobs, no fixed limit, pid %ld", total, (long)getpid());
}

void
logrunend(int status, double secs)
{
	char sum[512];
	int s, n = 0, total = 0;

	for (s = SOK; s < NSTATES; s++)
		total += dagcount[s];
	n = snprintf(sum, sizeof(sum), "%d ok", dagcount[SOK]);
	if (nresumed)
		n += snprintf(sum + n, sizeof(sum) - n, " (%d of them by an earlier run)", nresumed);
	for (s = SFAILED; s < NSTATES; s++)
		if (dagcount[s])
			n += snprintf(sum + n, sizeof(sum) - n, ", %d %s", dagcount[s], statename[s]);
	record("done\t%d\t%.3f\t%s", status, secs, sum);
	if (cfg.metrics)
		metrics();
	plugnotify("done", "", "", status ? "failed" : "ok", status, 0, secs, -1);
	loginfo("run ended: exit %d: %s in %.3fs", status, sum, secs);
	unshow();
	printf("%s: %d jobs: %s in %.2fs\n", argv0, total, sum, secs);
}

void
logstatus(int nrun, int node, double elapsed, const char *waiting)
{
	char line[512];
	int cols = 80, n, done = 0, s, left;
	double eta;
#ifdef TIOCGWINSZ
	struct winsize ws;

	if (ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
		cols = ws.ws_col;
#endif
	for (s = SOK; s < NSTATES; s++)
		done += dagcount[s];
	left = dagcount[SWAITING] + dagcount[SREADY] + dagcount[SCALIBRATING] +
	    dagcount[SRUNNING] + dagcount[SSUSPENDED];
	n = snprintf(line, sizeof(line), "[%d/%d]", done, done + left);
	if (meancost > 0 && left) {
		/* the work left, from earlier runs, spread over the job slots */
		eta = workleft / (cfg.jobs && cfg.jobs < left ? cfg.jobs : left);
		n += snprintf(line + n, sizeof(line) - n, eta < 60 ? " ETA %.0fs," :
		    " ETA %.0fm,", eta < 60 ? eta : eta / 60);
	}
	if (dagcount[SSUSPENDED])
		n += snprintf(line + n, sizeof(line) - n, " %d suspended,", dagcount[SSUSPENDED]);
	if (dagcount[SFAILED])
		n += snprintf(line + n, sizeof(line) - n, " %d failed,", dagcount[SFAILED]);
	if (nrun)
		n += snprintf(line + n, sizeof(line) - n, " %d running: %s %.0fs", nrun,
		    nodes[node].name, elapsed);
	if (waiting && n < (int)sizeof(line))
		n += snprintf(line + n, sizeof(line) - n, "; waiting: %s", waiting);
	if (n >= (int)sizeof(line))
		n = sizeof(line) - 1;
	if (n > cols - 1)
		n = cols - 1;
	if (n < 0)
		n = 0;
	printf("\r%.*s\033[K", n, line);
	shown = 1;
}

void
logoutput(int node, int fd, const char *buf, size_t len, int *bol)
{
	FILE *f = fd == 1 ? stdout : stderr;
	const char *nl;
	size_t k;

	unshow();
	if (f == stderr)
		fflush(stdout);
	while (len) {
		if (*bol)
			fprintf(f, "%s| ", nodes[node].name);
		nl = memchr(buf, '\n', len);
		k = nl ? (size_t)(nl - buf) + 1 : len;
		fwrite(buf, 1, k, f);
		*bol = nl != NULL;
		buf += k;
		len -= k;
	}
}

/* state_dir/history: NAME<TAB>seconds of its last success, one a line */
void
loghistory(const char *dir)
{
	char path[4096], *line = NULL, *tab;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int k;

	snprintf(path, sizeof(path), "%s/history", dir);
	if (!(f = fopen(path, "r")))
		return;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] != '\n' || !(tab = strchr(line, '\t')))
			continue;	/* torn or foreign */
		*tab = 0;
		if ((k = cfgfind(line)) >= 0 && nodes[k].cost <= 0)
			nodes[k].cost = strtof(tab + 1, NULL);
	}
	free(line);
	fclose(f);
}

/* rewrite the history: this run's durations over the earlier ones */
static void
savehistory(void)
{
	char path[4096], tmp[4096];
	FILE *f;
	int i, fd;

	snprintf(path, sizeof(path), "%s/history", statedir);
	snprintf(tmp, sizeof(tmp), "%s/history.tmp", statedir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		warn("%s:", tmp);
		return;
	}
	for (i = 0; i < nnodes; i++)
		if (nodes[i].cost > 0 && nodes[i].parent < 0)
			fprintf(f, "%s\t%.3f\n", nodes[i].name, nodes[i].cost);
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		warn("%s:", path);
		unlink(tmp);
	}
}

void
logclose(void)
{
	fflush(stdout);
	if (fflush(mainlog) || (errlog && fflush(errlog)) || fflush(benchlog))
		broken("main.log, error.log or benchmarks.log", -1);
	journalsync();
	savehistory();
	dirty = 0;
}

/* state_dir/calibration: NAME<TAB>cpu per second<TAB>peak RSS<TAB>output
 * bytes, one measurement a node */
int
logcalread(const char *name, double v[3])
{
	char path[4096], *line = NULL, *p;
	size_t cap = 0, n = strlen(name);
	int r = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/calibration", statedir);
	if (!(f = fopen(path, "r")))
		return -1;
	while (r < 0 && getline(&line, &cap, f) > 0)
		if (!strncmp(line, name, n) && line[n] == '\t' && strchr(line, '\n')) {
			v[0] = strtod(line + n + 1, &p);
			v[1] = strtod(p, &p);
			v[2] = strtod(p, &p);
			r = *p == '\n' && v[0] >= 0 && v[1] >= 0 && v[2] >= 0 ? 0 : -1;
		}
	free(line);
	fclose(f);
	return r;
}

void
logcalsave(const char *name, double cpu, double rss, double bytes)
{
	char path[4096], tmp[4096], *line = NULL;
	size_t cap = 0, n = strlen(name);
	FILE *in, *out;
	int fd;

	snprintf(path, sizeof(path), "%s/calibration", statedir);
	snprintf(tmp, sizeof(tmp), "%s/calibration.tmp", statedir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0 || !(out = fdopen(fd, "w"))) {
		logerror("%s: %s", tmp, strerror(errno));
		return;
	}
	if ((in = fopen(path, "r"))) {
		while (getline(&line, &cap, in) > 0)
			if (strchr(line, '\n') && (strncmp(line, name, n) || line[n] != '\t'))
				fputs(line, out);
		fclose(in);
	}
	free(line);
	fprintf(out, "%s\t%.4f\t%.0f\t%.0f\n", name, cpu, rss, bytes);
	if (fclose(out) != 0 || rename(tmp, path) < 0) {
		logerror("%s: %s", path, strerror(errno));
		unlink(tmp);
	}
}
