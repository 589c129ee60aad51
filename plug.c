/* plugins: commands that print a number, run now and then beside the jobs */
#define _POSIX_C_SOURCE 200809L
#include <sys/types.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dagrun.h"

extern char **environ;

/* what a plugin is doing, beside its config */
struct run {
	struct plugin *p;
	pid_t pid;		/* running now, 0 not */
	int fd;			/* its stdout, -1 closed */
	int status;		/* exit status once reaped, -1 not yet */
	char out[256];
	size_t nout;
	double started, next;	/* monotonic */
	double value;
	int have;		/* value holds a reading */
	int tried;		/* it has answered, or failed to, once */
	int bad;		/* the last run failed (logged once) */
	int held;		/* the last reading held launches */
	int killed;		/* timed out */
};

static void notifynext(void);
static pid_t npid;		/* the notify command running, 0 none */
static int nstatus = -1, nkilled, nlog = -1;
static double nstart;

static struct run *runs;
static int nruns;
static int devnull = -1;
static const char *statedir;

/* a plugin's own process group, an empty signal mask */
static posix_spawnattr_t *
spawnattr(void)
{
	static posix_spawnattr_t at;
	static int haveat;
	sigset_t none;

	if (!haveat) {
		posix_spawnattr_init(&at);
		sigemptyset(&none);
		posix_spawnattr_setsigmask(&at, &none);
		posix_spawnattr_setpgroup(&at, 0);
		posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
		haveat = 1;
	}
	return &at;
}

void
plugsetup(int nul, const char *dir)
{
	struct plugin *p;
	int i = 0;

	devnull = nul;
	statedir = dir;
	for (p = cfg.plugins; p; p = p->next)
		nruns++;
	runs = xcalloc(nruns ? nruns : 1, sizeof(*runs));
	for (p = cfg.plugins; p; p = p->next, i++) {
		runs[i].p = p;
		runs[i].fd = -1;
		runs[i].status = -1;
	}
}

/* DAGRUN_RUNNING, _WAITING, _DONE, _FAILED and _OK into v[0..4], with
 * an ended job moved from running to waiting (again) or to done */
static void
countvars(char (*v)[64], int ended, int waits, int done, int ok, int failed)
{
	snprintf(v[0], 64, "DAGRUN_RUNNING=%d", dagcount[SRUNNING] + dagcount[SCALIBRATING] +
	    dagcount[SSUSPENDED] - ended);
	snprintf(v[1], 64, "DAGRUN_WAITING=%d", dagcount[SWAITING] + dagcount[SREADY] + waits);
	snprintf(v[2], 64, "DAGRUN_DONE=%d", dagcount[SOK] + dagcount[SFAILED] +
	    dagcount[STIMEOUT] + dagcount[SCANCELLED] + dagcount[SSKIPPED] + done);
	snprintf(v[3], 64, "DAGRUN_FAILED=%d", dagcount[SFAILED] + dagcount[STIMEOUT] + failed);
	snprintf(v[4], 64, "DAGRUN_OK=%d", dagcount[SOK] + ok);
}

/* the counts of the run, for a plugin's environment */
static char **
plugenv(void)
{
	static char **env, vars[6][64];
	static int cap;
	int n = 0, i, e = 0;

	while (environ[n])
		n++;
	if (cap < n + 7)
		env = xrealloc(env, (cap = n + 7) * sizeof(*env));
	countvars(vars, 0, 0, 0, 0, 0);
	snprintf(vars[5], sizeof(vars[5]), "DAGRUN_JOBS=%d", cfg.jobs);
	for (i = 0; i < 6; i++)
		env[e++] = vars[i];
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "DAGRUN_", 7))
			env[e++] = environ[i];
	env[e] = NULL;
	return env;
}

static const char *
errpath(const struct run *r)
{
	static char path[4096];

	snprintf(path, sizeof(path), "%s/logs/~%s%s.err", statedir, r->p->probe ? "probe." : "",
	    r->p->name);
	return path;
}

/* start plugin r: shell -c cmd, stdout to a pipe, stderr to its file */
static void
plugrun(struct run *r, double now)
{
	posix_spawn_file_actions_t fa;
	char **argv;
	int p[2], e;

	r->next = now + r->p->every;
	if (pipe(p) < 0) {
		logerror("%s: pipe: %s", r->p->name, strerror(errno));
		return;
	}
	fcntl(p[0], F_SETFD, FD_CLOEXEC);
	fcntl(p[1], F_SETFD, FD_CLOEXEC);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, devnull, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, errpath(r), O_WRONLY | O_CREAT | O_TRUNC, 0666);
	argv = shellargv(r->p->cmd);
	e = posix_spawnp(&r->pid, argv[0], &fa, spawnattr(), argv, plugenv());
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (e) {
		close(p[0]);
		r->pid = 0;
		if (!r->bad)
			logerror("%s: cannot run %s: %s, limits unchanged", r->p->name, argv[0],
			    strerror(e));
		r->bad = 1;
		r->tried = 1;
		return;
	}
	r->fd = p[0];
	r->nout = 0;
	r->status = -1;
	r->killed = 0;
	r->started = now;
}

/* the plugin's answer, once it has exited and its output is all read */
static void
plugdone(struct run *r)
{
	char *s = r->out, *end;
	double v;
	size_t n;

	r->pid = 0;
	r->tried = 1;
	r->out[r->nout < sizeof(r->out) ? r->nout : sizeof(r->out) - 1] = 0;
	s += strspn(s, " \t\r\n");
	n = strlen(s);
	while (n && strchr(" \t\r\n", s[n - 1]))
		s[--n] = 0;
	errno = 0;
	v = strtod(s, &end);
	if (r->killed) {
		if (!r->bad)
			logerror("%s: no answer after %gs: killed, limits unchanged",
			    r->p->name, r->p->timeout);
	} else if (r->status) {
		if (!r->bad)
			logerror("%s: exit %d, limits unchanged (stderr: %s)", r->p->name, r->status,
			    errpath(r));
	} else if (!n || *end || errno || v != v || v > 1e300 || v < -1e300 ||
	    (!r->p->probe && (v < 0 || v != (double)(long)v))) {
		for (end = s; *end; end++)
			if ((unsigned char)*end < 32 || *end == 127)
				*end = '?';
		if (!r->bad)
			logerror("%s: expected %s, got '%.40s': limits unchanged", r->p->name,
			    r->p->probe ? "a number" : "a whole number from 0", s);
	} else {
		if (r->bad || !r->have)
			loginfo("%s: %g", r->p->name, v);
		r->value = v;
		r->have = 1;
		r->bad = 0;
		return;
	}
	r->bad = 1;
}

void
plugwork(double now, int start)
{
	struct run *r;
	char buf[512];
	ssize_t k = -1;
	size_t room;
	int i;

	for (i = 0; i < nruns; i++) {
		r = &runs[i];
		while (r->fd >= 0 && (k = read(r->fd, buf, sizeof(buf))) != 0) {
			if (k < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					break;
				k = 0;
			}
			if (k == 0)
				break;
			room = sizeof(r->out) - r->nout;
			memcpy(r->out + r->nout, buf, (size_t)k < room ? (size_t)k : room);
			r->nout += (size_t)k < room ? (size_t)k : room;
		}
		if (r->fd >= 0 && k == 0) {
			close(r->fd);
			r->fd = -1;
		}
		if (r->pid && !r->killed && now - r->started >= r->p->timeout) {
			kill(-r->pid, SIGKILL);	/* the group: what holds the pipe too */
			r->killed = 1;
		}
		if (r->pid && r->status >= 0 && (r->fd < 0 || r->killed)) {
			if (r->fd >= 0) {
				close(r->fd);
				r->fd = -1;
			}
			plugdone(r);
		}
		if (!r->pid && now >= r->next && start)
			plugrun(r, now);
	}
}

int
plugreap(long pid, int status)
{
	int i;

	if (npid && pid == npid && nstatus < 0) {
		nstatus = status;
		return 1;
	}
	for (i = 0; i < nruns; i++)
		if (runs[i].pid == pid && runs[i].status < 0) {
			runs[i].status = status;
			return 1;
		}
	return 0;
}

int
plugfds(struct pollfd *pfd)
{
	int i, n = 0;

	for (i = 0; i < nruns; i++)
		if (runs[i].fd >= 0) {
			pfd[n].fd = runs[i].fd;
			pfd[n++].events = POLLIN;
		}
	return n;
}

double
plugwake(double now)
{
	double t = 1e9, w;
	int i;

	for (i = 0; i < nruns; i++) {
		w = runs[i].pid ? runs[i].started + runs[i].p->timeout : runs[i].next;
		if (w - now < t)
			t = w - now;
	}
	if (npid && nstart + cfg.notifytimeout - now < t)
		t = nstart + cfg.notifytimeout - now;
	return t < 0 ? 0 : t;
}

int
plugadmit(int nrun, char *why, size_t n)
{
	struct run *r;
	int i, hold;

	for (i = 0; i < nruns; i++) {
		r = &runs[i];
		if (!r->tried) {
			snprintf(why, n, "%s%s: no reading yet", r->p->probe ? "probe " : "",
			    r->p->name);
			return 0;
		}
		if (!r->have)
			continue;
		hold = !r->p->probe ? nrun >= r->value :
		    (r->p->hasmax && r->value > r->p->max) || (r->p->hasmin && r->value < r->p->min);
		if (hold != r->held)
			loginfo("%s: %g: launching %s", r->p->name, r->value, hold ? "held" :
			    "allowed");
		r->held = hold;
		if (!hold)
			continue;
		if (!r->p->probe)
			snprintf(why, n, "capacity: %d running, the plugin allows %g", nrun, r->value);
		else if (r->p->hasmax && r->value > r->p->max)
			snprintf(why, n, "probe %s: %g > max %g", r->p->name, r->value, r->p->max);
		else
			snprintf(why, n, "probe %s: %g < min %g", r->p->name, r->value, r->p->min);
		return 0;
	}
	return 1;
}

void
plugnotifystop(void)
{
	int st;

	if (npid) {
		kill(-npid, SIGKILL);
		if (nstatus < 0)
			while (waitpid(npid, &st, 0) < 0 && errno == EINTR)
				;
		npid = 0;
	}
}

void
plugstop(void)
{
	int i, st;

	for (i = 0; i < nruns; i++) {
		if (!runs[i].pid)
			continue;
		kill(-runs[i].pid, SIGKILL);	/* the group: a child may outlive the shell */
		if (runs[i].status < 0)
			while (waitpid(runs[i].pid, &st, 0) < 0 && errno == EINTR)
				;
		if (runs[i].fd >= 0)
			close(runs[i].fd);
		runs[i].pid = 0;
		runs[i].fd = -1;
	}
}

int
plugvalue(int i, const char **name, double *v)
{
	if (i >= nruns)
		return -1;
	*name = runs[i].p->name;
	*v = runs[i].value;
	return runs[i].have;
}

int
plugcount(void)
{
	return nruns;
}

/* notify: one command per event, one at a time, in the order of events */
struct event {
	struct event *next;
	char **env;		/* the event's variables, NULL-ended, then environ */
};

static struct event *evhead, *evtail;

void
plugnotify(const char *event, const char *job, const char *node, const char *state,
    int status, int attempt, double secs, double retry)
{
	char vars[16][64], *p;
	const char *big[3];
	struct event *e;
	size_t len = 0, n = 0, i;
	int k, nenv = 0, ended, fin;

	if (!cfg.notify)
		return;
	while (environ[nenv])
		nenv++;
	snprintf(vars[n++], 64, "DAGRUN_EVENT=%s", event);
	snprintf(vars[n++], 64, "DAGRUN_STATE=%s", state);
	snprintf(vars[n++], 64, "DAGRUN_EXIT=%d", status);
	snprintf(vars[n++], 64, "DAGRUN_ATTEMPT=%d", attempt);
	snprintf(vars[n++], 64, "DAGRUN_DURATION=%.3f", secs);
	if (retry >= 0)
		snprintf(vars[n++], 64, "DAGRUN_RETRY_IN=%g", retry);
	/* the counts as they are once this event is in them: a job's end is
	 * told before the graph hears of it */
	ended = !strcmp(event, "end") && attempt > 0;
	fin = ended && retry < 0;
	countvars(vars + n, ended, ended && !fin, fin, fin && !strcmp(state, "ok"),
	    fin && (!strcmp(state, "failed") || !strcmp(state, "timeout")));
	n += 5;
	big[0] = job;
	big[1] = node;
	for (i = 0; i < n; i++)
		len += strlen(vars[i]) + 1;
	len += strlen("DAGRUN_JOB=") + strlen(job) + strlen("DAGRUN_NODE=") + strlen(node) + 2;
	e = xmalloc(sizeof(*e) + (n + 3 + nenv) * sizeof(char *) + len);
	e->env = (char **)(e + 1);
	p = (char *)(e->env + n + 3 + nenv);
	for (i = 0; i < n; i++) {
		e->env[i] = p;
		p += sprintf(p, "%s", vars[i]) + 1;
	}
	e->env[n++] = p;
	p += sprintf(p, "DAGRUN_JOB=%s", big[0]) + 1;
	e->env[n++] = p;
	p += sprintf(p, "DAGRUN_NODE=%s", big[1]) + 1;
	for (k = 0; k < nenv; k++)
		if (strncmp(environ[k], "DAGRUN_", 7))
			e->env[n++] = environ[k];
	e->env[n] = NULL;
	e->next = NULL;
	if (evtail)
		evtail->next = e;
	else
		evhead = e;
	evtail = e;
}

/* the notify command for the event at the head of the queue */
static void
notifyrun(double now)
{
	posix_spawn_file_actions_t fa;
	char path[4096], **argv;
	int e;

	if (nlog < 0) {
		snprintf(path, sizeof(path), "%s/logs/~notify.log", statedir);
		nlog = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
		if (nlog < 0)
			nlog = devnull;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, devnull, 0);
	posix_spawn_file_actions_adddup2(&fa, nlog, 1);
	posix_spawn_file_actions_adddup2(&fa, nlog, 2);
	argv = shellargv(cfg.notify);
	e = posix_spawnp(&npid, argv[0], &fa, spawnattr(), argv, evhead->env);
	posix_spawn_file_actions_destroy(&fa);
	if (e) {
		npid = 0;
		logerror("notify: cannot run %s: %s", argv[0], strerror(e));
		notifynext();
		return;
	}
	nstart = now;
	nstatus = -1;
	nkilled = 0;
}

/* what an event is about, for messages */
static const char *
evjob(struct event *e)
{
	char **v;

	for (v = e->env; *v; v++)
		if (!strncmp(*v, "DAGRUN_JOB=", 11) && (*v)[11])
			return *v + 11;
	return "the end of the run";
}

static void
notifynext(void)
{
	struct event *e = evhead;

	if (!(evhead = e->next))
		evtail = NULL;
	free(e);
}

void
plugnotifywork(double now)
{
	if (npid && !nkilled && now - nstart >= cfg.notifytimeout) {
		kill(-npid, SIGKILL);
		nkilled = 1;
	}
	if (npid && nstatus >= 0) {
		if (nkilled)
			logerror("notify: no answer after %gs for %s: killed", cfg.notifytimeout,
			    evjob(evhead));
		else if (nstatus)
			logerror("notify: exit %d (output: %s/logs/~notify.log)", nstatus, statedir);
		npid = 0;
		notifynext();
	}
	if (!npid && evhead)
		notifyrun(now);
}

int
plugbusy(void)
{
	return npid || evhead;
}

double
plugnotifywake(double now)
{
	double t = npid ? nstart + cfg.notifytimeout - now : 1e9;

	return t < 0 ? 0 : t;
}
