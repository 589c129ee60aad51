#define _DEFAULT_SOURCE
#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/resource.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dagrun.h"

extern char **environ;

/*
 * A job's stdout and stderr go to the files of a lane: one pair per job in
 * flight, reused while jobs write nothing.  When a job that wrote ends, its
 * lane files are renamed to logs/NAME.out and .err and the lane gets fresh
 * ones: no pipe to read, no wake-up per output, no file made per silent job.
 */
struct lane {
	int fd[2];
	int fafd[2];	/* the fds fa was made for, -1 none */
	posix_spawn_file_actions_t fa;
};

struct job {
	int node, attempt;
	pid_t pid;
	int lane;
	off_t shown[2];	/* -v: bytes already on the console */
	int bol[2];	/* -v: at the beginning of a line */
	int killed;	/* we signalled it */
	int timedout;	/* past its node's timeout: SIGTERM sent */
	double deadline;	/* monotonic end of its timeout, 0 none */
	double killat;	/* SIGKILL due after SIGTERM, 0 none */
	int post;	/* the post command runs now */
	double cpu;	/* of cmd: user+sys seconds */
	long maxrss;	/* of cmd: KiB */
	int suspended;	/* stopped for memory */
	long long rss;	/* measured, for declared memory; when read */
	double rsst;
	double t0;	/* monotonic start */
	double start;	/* wall clock start */
	struct job *next;	/* free list */
};

static struct job **run, *freejobs;
static int nrun, caprun;
static struct lane *lanes;
static int nlanes, *freelanes, nfreelanes;
/* process groups of ended jobs that outlive them, SIGKILL due at killat */
static struct linger {
	pid_t pg;
	double killat;
} *linger;
static int nlinger, caplinger;
static int selfpipe[2] = {-1, -1}, devnull = -1;
static volatile sig_atomic_t caught[65];
static int stopping;	/* start nothing new */
static int termsig;	/* the signal that ends the run */
static int paused;	/* SIGUSR1 */
static int blocked;	/* out of processes or descriptors until a job ends */
static double blockedend;	/* or until then (monotonic) */
static double blockedfor;	/* the wait before the next try, doubling to 1s */
static double blockedsince;	/* nothing of ours runs and none can start, since */
static int nblocked;		/* launches that had to wait, for the run's end */
static int nbad;	/* failures that count against the run */
static double killat;	/* when SIGKILL follows SIGTERM, 0 none */
static double lingerend;	/* stop waiting for killed groups */
static char **baseenv;	/* environ without our own variables */
static int nbaseenv;
static char *stateabs;	/* absolute state_dir for DAGRUN_STATE_DIR */
static int timedout;	/* the deadline or a resource wait ended the run */
static double deadlineat;	/* monotonic, 0 none */

/* launch gates: the readings res.c gives, taken at most every 50ms */
static struct {
	double t;
	double cpu;		/* busy % between samples, -1 not yet */
	long long memused, memlimit, disk;
	double load, cpupress, mempress;
	int runnable;
} rd = {0, -1, 0, 0, 0, 0, 0, 0, 0};
static int gates;		/* any [resources] limit set */
static long long cpub0, cput0;	/* the CPU sample the next one is measured from */
static double cput0t;
static double loadprev = -1;	/* the last load average seen */
static int anymem;		/* some selected node declares mem */
static double loadmoved;	/* when it last changed (monotonic) */
static double ncpus, cpusrun;	/* for declared cpus */
static int nsusp;		/* jobs stopped for memory */
static double waitsince;	/* launching waits on a gate since, 0 not */
static double lastwaitlog, nextsuspend;
static char waitwhy[192];
static int nplug;		/* capacity and probes */
static int anytimers;		/* some job has had a timeout */
static int interrupts;		/* SIGINT, SIGTERM and SIGHUP seen */
static int diskbad;		/* a state file could not be written */
static int anyslurm;		/* a selected node runs on Slurm */
static int slurmkilled;		/* a Slurm job was signalled: sweep the queue at the end */

static void stop(void);
static void slurmended(struct job *, int);
static char *lanepath(int, int);
static void calsetup(int);
struct job;
static void jobmsg(struct job *, const char *, ...);

static void
onsig(int sig)
{
	int e = errno;
	unsigned char c = (unsigned char)sig;

	if (sig > 0 && sig < 65)
		caught[sig]++;
	if (write(selfpipe[1], &c, 1) < 0) {
		/* full: the flags above still tell */
	}
	errno = e;
}

static void
onpipe(int sig)
{
	(void)sig;
}

static int
cloexec(int fd)
{
	return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* a pipe whose ends close on exec */
static int
mkpipe(int p[2])
{
#if defined(__linux__)
	return pipe2(p, O_CLOEXEC);
#else
	if (pipe(p) < 0)
		return -1;
	cloexec(p[0]);
	cloexec(p[1]);
	return 0;
#endif
}

/* no descriptor dagrun inherited may reach a job */
static void
closeinherited(void)
{
	DIR *d;
	struct dirent *e;
	int fd, self;

	if ((d = opendir("/dev/fd"))) {
		self = dirfd(d);
		while ((e = readdir(d)))
			if ((fd = atoi(e->d_name)) > 2 && fd != self)
				cloexec(fd);
		closedir(d);
		return;
	}
	for (fd = 3; fd < 1024; fd++)
		cloexec(fd);
}

static void
sigsetup(void)
{
	static const int sigs[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2};
	struct sigaction sa, old;
	sigset_t none;
	size_t i;

	if (mkpipe(selfpipe) < 0)
		fatal("pipe:");
	fcntl(selfpipe[0], F_SETFL, O_NONBLOCK);
	fcntl(selfpipe[1], F_SETFL, O_NONBLOCK);
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&sa.sa_mask, sigs[i]);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		/* an interrupt ignored by our parent (nohup, &) stays ignored */
		if ((sigs[i] == SIGINT || sigs[i] == SIGHUP) &&
		    sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sa.sa_handler = onsig;
		sa.sa_flags = sigs[i] == SIGCHLD ? SA_NOCLDSTOP : 0;
		sigaction(sigs[i], &sa, NULL);
	}
	/* caught, not ignored: write() gets EPIPE and exec restores the default */
	sa.sa_handler = onpipe;
	sa.sa_flags = 0;
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* enough descriptors for two pipes per job */
static void
fdlimit(void)
{
	struct rlimit rl;
	rlim_t want = cfg.jobs ? (rlim_t)cfg.jobs * 2 + 64 : (rlim_t)1 << 16;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

static int
ourvar(const char *s)
{
	static const char *const ours[] = {
		"DAGRUN_NODE=", "DAGRUN_JOB=", "DAGRUN_ATTEMPT=", "DAGRUN_INPUT=",
		"DAGRUN_OUTPUT=", "DAGRUN_STATE_DIR=", "DAGRUN_SPAWN=",
	};
	size_t i;

	if (strncmp(s, "DAGRUN_", 7))
		return 0;
	for (i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		if (!strncmp(s, ours[i], strlen(ours[i])))
			return 1;
	return 0;
}

static void
envsetup(void)
{
	char cwd[PATH_MAX];
	int n = 0, i;

	while (environ[n])
		n++;
	baseenv = xmalloc((n + 1) * sizeof(*baseenv));
	for (i = 0; i < n; i++)
		if (!ourvar(environ[i]))
			baseenv[nbaseenv++] = environ[i];
	if (cfg.statedir[0] == '/' || !getcwd(cwd, sizeof(cwd))) {
		stateabs = cfg.statedir;
		return;
	}
	stateabs = xmalloc(strlen(cwd) + strlen(cfg.statedir) + 2);
	sprintf(stateabs, "%s/%s", cwd, cfg.statedir);
}

/* the file where job n may write [node] sections to add */
static const char *
spawnpath(int n)
{
	static char *path;
	static size_t cap, len;
	size_t need;

	if (!path) {
		len = strlen(stateabs) + 7;
		path = xmalloc(cap = len + 32);
		sprintf(path, "%s/spawn/", stateabs);
	}
	need = len + 24;
	if (need > cap)
		path = xrealloc(path, cap = need);
	sprintf(path + len, "%d.ini", n);
	return path;
}

/* the spawn files of jobs that succeeded, by a hash of the job's name */
static unsigned long long *kept;
static size_t nkept;

static unsigned long long
namehash(int n)
{
	unsigned long long h = 14695981039346656037ULL;
	const char *s;

	for (s = nodes[n].name; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static const char *
keeppath(int n)
{
	static char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/spawned/%016llx.ini", cfg.statedir, namehash(n));
	return path;
}

static int
cmphash(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

static int
waskept(int n)
{
	unsigned long long h = namehash(n);

	return nkept && bsearch(&h, kept, nkept, sizeof(*kept), cmphash);
}

/* state_dir/spawn, empty: no file of an earlier run is taken for new;
 * state_dir/spawned, what earlier successes added */
static void
spawnsetup(void)
{
	char path[PATH_MAX + 32];
	struct dirent *e;
	size_t cap = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/spawned", cfg.statedir);
	if (mkdir(path, 0777) < 0 && errno != EEXIST)
		fatal("%s:", path);
	if (!(d = opendir(path)))
		fatal("%s:", path);
	while ((e = readdir(d)))
		if (strlen(e->d_name) == 20 && !strcmp(e->d_name + 16, ".ini")) {
			if (nkept == cap)
				kept = xrealloc(kept, (cap = 2 * cap + 16) * sizeof(*kept));
			kept[nkept++] = strtoull(e->d_name, NULL, 16);
		}
	closedir(d);
	if (nkept)
		qsort(kept, nkept, sizeof(*kept), cmphash);

	snprintf(path, sizeof(path), "%s/spawn", cfg.statedir);
	if (mkdir(path, 0777) < 0 && errno != EEXIST)
		fatal("%s:", path);
	if (!(d = opendir(path)))
		fatal("%s:", path);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/spawn/%s", cfg.statedir, e->d_name);
			unlink(path);
		}
	closedir(d);
}

/* the nodes job j wrote to its spawn file join the graph; -1 if the file
 * is bad (the job fails, and says why in its stderr) */
static int
spawned(struct job *j, int ok)
{
	const char *path = spawnpath(j->node);
	int first = nnodes, k, line;
	char *msg;

	if (!ok) {
		unlink(path);
		return 0;
	}
	/* most jobs write none: asked without a descriptor */
	k = access(path, F_OK) < 0 && errno == ENOENT ? 0 : cfgspawn(path, &msg);
	if (k < 0 && (errno == EMFILE || errno == ENFILE)) {
		/* the lanes took every descriptor: the job's stdout lends its
		 * own while the file is read */
		int *out = &lanes[j->lane].fd[0];

		close(*out);
		k = cfgspawn(path, &msg);
		*out = open(lanepath(j->lane, 0), O_WRONLY | O_APPEND | O_CLOEXEC);
	}
	if (k > 0 && (line = dagadd(first, &msg))) {
		jobmsg(j, "%s:%d: %s", path, line, msg);
		cfgunspawn(first);
		k = -2;
	} else if (k < 0)
		jobmsg(j, "%s", msg);
	if (k > 0) {
		loginfo("%s added %d node%s", nodes[j->node].name, k, k == 1 ? "" : "s");
		logspawn(j->node, first, k);
		/* kept, for a -r run that takes this job as done */
		if (rename(path, keeppath(j->node)) < 0)
			logerror("%s: %s", keeppath(j->node), strerror(errno));
		dagaddgo(first);
		return 0;
	}
	if (!k && waskept(j->node))
		unlink(keeppath(j->node));	/* what an earlier success added is not */
	unlink(path);
	return k < 0 ? -1 : 0;
}

/* -r: job n is taken as done; the nodes it added then join again */
static void
respawn(int n)
{
	int first = nnodes, k, line;
	char *msg;

	if (!waskept(n) || (k = cfgspawn(keeppath(n), &msg)) == 0)
		return;
	if (k > 0 && (line = dagadd(first, &msg))) {
		logerror("%s: %s:%d: %s", nodes[n].name, keeppath(n), line, msg);
		cfgunspawn(first);
	} else if (k < 0)
		logerror("%s: %s", nodes[n].name, msg);
	else {
		logspawn(n, first, k);
		dagaddgo(first);
	}
}

/* name=value in *buf */
static char *
envvar(char **buf, size_t *cap, const char *name, const char *value)
{
	size_t n = strlen(name), v = strlen(value);

	if (n + v + 1 > *cap)
		*buf = xrealloc(*buf, *cap = n + v + 64);
	memcpy(*buf, name, n);
	memcpy(*buf + n, value, v + 1);
	return *buf;
}

/* the job's environment: ours, less what the node sets, plus DAGRUN_* */
static char **
jobenv(struct job *j)
{
	static char **env, attempt[32], state[PATH_MAX + 32];
	static char *node, *job, *input, *output, *spawnvar;
	static size_t capnode, capjob, capinput, capoutput, capspawn;
	static int cap;
	struct node *n = &nodes[j->node];
	int i, k, e = 0;
	size_t len;

	if (cap < nbaseenv + n->nenv + 8)
		env = xrealloc(env, (cap = nbaseenv + n->nenv + 8) * sizeof(*env));
	for (i = 0; i < nbaseenv; i++) {
		for (k = 0; k < n->nenv; k++) {
			len = strchr(n->env[k], '=') - n->env[k] + 1;
			if (!strncmp(baseenv[i], n->env[k], len))
				break;
		}
		if (k == n->nenv)
			env[e++] = baseenv[i];
	}
	for (k = 0; k < n->nenv; k++)
		if (!ourvar(n->env[k]))
			env[e++] = n->env[k];
	env[e++] = envvar(&node, &capnode, "DAGRUN_NODE=",
	    nodes[n->parent >= 0 ? n->parent : j->node].name);
	env[e++] = envvar(&job, &capjob, "DAGRUN_JOB=", n->name);
	snprintf(attempt, sizeof(attempt), "DAGRUN_ATTEMPT=%d", j->attempt);
	snprintf(state, sizeof(state), "DAGRUN_STATE_DIR=%s", stateabs);
	env[e++] = attempt;
	env[e++] = state;
	if (n->input)
		env[e++] = envvar(&input, &capinput, "DAGRUN_INPUT=", n->input);
	if (n->output)
		env[e++] = envvar(&output, &capoutput, "DAGRUN_OUTPUT=", fantmp(j->node));
	env[e++] = envvar(&spawnvar, &capspawn, "DAGRUN_SPAWN=", spawnpath(j->node));
	env[e] = NULL;
	return env;
}

/* the PATH a node sets, or NULL */
static const char *
nodepath(int n)
{
	int k;

	for (k = 0; k < nodes[n].nenv; k++)
		if (!strncmp(nodes[n].env[k], "PATH=", 5))
			return nodes[n].env[k] + 5;
	return NULL;
}

/* an executable file at full, or the reason why not */
static int
runnable(const char *full)
{
	struct stat st;

	if (stat(full, &st) < 0)
		return errno == ENOENT || errno == ENOTDIR ? ENOENT : errno;
	if (!S_ISREG(st.st_mode) || access(full, X_OK) < 0)
		return EACCES;
	return 0;
}

/* where PATH finds prog, as execvp would; cached, since most graphs run
 * few programs; fresh: do not trust the cache */
static const char *
findprog(const char *prog, const char *path, int cwdok, int *err, int fresh)
{
	static struct { char *name, *path; } *cache;
	static int ncache, capcache;
	const char *p, *e;
	char full[PATH_MAX];
	int i = ncache, why = ENOENT, r, cacheable = !path && (cwdok || prog[0] == '/');

	if (!cacheable && strchr(prog, '/'))
		return prog;	/* relative to a job's own directory: exec decides */
	if (cacheable)
		for (i = 0; i < ncache; i++)
			if (!strcmp(cache[i].name, prog))
				break;
	if (i < ncache && !fresh)
		return cache[i].path;
	if (strchr(prog, '/')) {
		if ((*err = runnable(prog)))
			return NULL;
		snprintf(full, sizeof(full), "%s", prog);
	} else {
		if (!path && !(path = getenv("PATH")))
			path = "/usr/local/bin:/bin:/usr/bin";
		for (p = path; ; p = e + 1) {
			e = strchr(p, ':');
			if (!e)
				e = p + strlen(p);
			snprintf(full, sizeof(full), "%.*s%s%s", (int)(e - p), p, e > p ? "/" : "", prog);
			if (!(r = runnable(full)))
				break;
			if (r != ENOENT)
				why = r;
			if (!*e) {
				*err = why;
				return NULL;
			}
		}
	}
	if (!cacheable) {
		/* a node's own PATH: found anew at each start, kept nowhere */
		static char found[PATH_MAX];

		memcpy(found, full, sizeof(found));
		return found;
	}
	if (i == ncache) {
		if (ncache == capcache)
			cache = xrealloc(cache, (capcache = capcache ? capcache * 2 : 16) * sizeof(*cache));
		cache[ncache].name = xstrdup(prog);
		ncache++;
	}
	cache[i].path = xstrdup(full);
	return cache[i].path;
}

static char *
lanepath(int k, int which)
{
	static char path[2][4096];

	snprintf(path[which], sizeof(path[0]), "%s/logs/.lane~%d.%s", cfg.statedir, k,
	    which ? "err" : "out");
	return path[which];
}

static int
laneopen(int k, int which)
{
	int fd = open(lanepath(k, which), O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0666);

	lanes[k].fd[which] = fd;
	return fd;
}

/* a lane with both files open, or -1 (errno set) */
static void lanefree(int);

static int
laneget(void)
{
	int k;

	if (nfreelanes) {
		k = freelanes[--nfreelanes];
	} else {
		lanes = xrealloc(lanes, (nlanes + 1) * sizeof(*lanes));
		freelanes = xrealloc(freelanes, (nlanes + 1) * sizeof(*freelanes));
		k = nlanes++;
		lanes[k].fd[0] = lanes[k].fd[1] = -1;
		lanes[k].fafd[0] = lanes[k].fafd[1] = -1;
	}
	if ((lanes[k].fd[0] < 0 && laneopen(k, 0) < 0) ||
	    (lanes[k].fd[1] < 0 && laneopen(k, 1) < 0)) {
		lanefree(k);	/* half a lane holds a descriptor for nothing */
		freelanes[nfreelanes++] = k;
		return -1;
	}
	return k;
}

/* lane k's files closed (and removed, being empty); opened again when used */
static void
lanefree(int k)
{
	int w, e = errno;

	for (w = 0; w < 2; w++)
		if (lanes[k].fd[w] >= 0) {
			close(lanes[k].fd[w]);
			unlink(lanepath(k, w));
			lanes[k].fd[w] = -1;
		}
	errno = e;
}

/* out of descriptors with nothing running: give back what idle lanes
 * hold; 1 if they held any */
static int
reclaim(void)
{
	int i, any = 0;

	for (i = 0; i < nfreelanes; i++) {
		any |= lanes[freelanes[i]].fd[0] >= 0 || lanes[freelanes[i]].fd[1] >= 0;
		lanefree(freelanes[i]);
	}
	return any;
}

/* -v: what the job wrote since last time, tagged, on the console */
static void
show(struct job *j, int which)
{
	char buf[16384];
	ssize_t r;
	int fd = lanes[j->lane].fd[which];

	while ((r = pread(fd, buf, sizeof(buf), j->shown[which])) > 0) {
		logoutput(j->node, which + 1, buf, r, &j->bol[which]);
		j->shown[which] += r;
	}
}

/* give the job's output its name, and the lane back */
static void
lanedone(struct job *j)
{
	struct stat st;
	int w, k = j->lane;
	char *path;

	for (w = 0; w < 2; w++) {
		if (cfg.verbose) {
			show(j, w);
			if (!j->bol[w])	/* its last line had no newline */
				logoutput(j->node, w + 1, "\n", 1, &j->bol[w]);
		}
		if (fstat(lanes[k].fd[w], &st) < 0 || st.st_size == 0)
			continue;
		path = logpath(j->node, w + 1);
		if (rename(lanepath(k, w), path) < 0)
			logerror("%s: %s", path, strerror(errno));
		close(lanes[k].fd[w]);
		if (laneopen(k, w) < 0)
			logerror("%s: %s", lanepath(k, w), strerror(errno));
	}
	freelanes[nfreelanes++] = k;
}

static void
laneclose(void)
{
	int k;

	for (k = 0; k < nlanes; k++)
		lanefree(k);
}

/* a message from dagrun itself into the job's stderr */
static void
jobmsg(struct job *j, const char *fmt, ...)
{
	char msg[PATH_MAX + 256];
	va_list ap;
	int n;

	n = snprintf(msg, sizeof(msg), "%s: %s: ", argv0, nodes[j->node].name);
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof(msg) - n - 1, fmt, ap);
	va_end(ap);
	if ((size_t)n >= sizeof(msg) - 1)
		n = sizeof(msg) - 2;
	msg[n++] = '\n';
	if (write(lanes[j->lane].fd[1], msg, n) != n)
		logerror("%s: %s", lanepath(j->lane, 1), strerror(errno));
}

static void
onskip(int n)
{
	logskip(n);
}

/* jobs of a run whose dagrun died (SIGKILL, OOM, power loss of dagrun
 * alone) may still run: their process groups get SIGTERM, then SIGKILL
 * after kill_grace, and the run begins once they are gone, so that no job
 * ever runs beside an earlier copy of itself */
static void
orphans(int guarding)
{
	enum { MAX = 4096 };
	static long pg[MAX];
	static double at[MAX];
	static const char *name[MAX];
	struct timespec nap = {0, 20000000};
	double t0 = mono(), leader;
	int n = showorphans(pg, at, name, MAX), i, k = 0, left, sig = SIGTERM, m;
	static long found[MAX];

	for (i = 0; i < n; i++) {
		if (kill(-pg[i], 0) < 0)
			continue;
		/* a live leader must be the one the journal saw start */
		if ((leader = resstarted(pg[i])) >= 0 && (leader < at[i] - 2 || leader > at[i] + 2))
			continue;
		loginfo("%s: still running %s (process group %ld): SIGTERM", name[i],
		    guarding ? "after dagrun died" : "from an earlier run", pg[i]);
		logwarn("%s: still running %s (process group %ld): terminated", name[i],
		    guarding ? "after dagrun died" : "from an earlier run", pg[i]);
		kill(-pg[i], SIGTERM);
		kill(-pg[i], SIGCONT);
		pg[k++] = pg[i];
	}
	/* a job dagrun died too soon to record: found by its environment */
	for (i = 0, m = resjobs(stateabs, found, MAX); i < m && k < MAX; i++) {
		for (n = 0; n < k && pg[n] != found[i]; n++)
			;
		if (n < k)
			continue;
		loginfo("process group %ld: a job %s: SIGTERM", found[i],
		    guarding ? "of dagrun, which died" : "from an earlier run");
		logwarn("process group %ld: a job %s: terminated", found[i],
		    guarding ? "of dagrun, which died" : "from an earlier run");
		kill(-found[i], SIGTERM);
		kill(-found[i], SIGCONT);
		pg[k++] = found[i];
	}
	for (;;) {
		for (i = 0, left = 0; i < k; i++)
			left += resgroupalive(pg[i]);
		if (!left)
			break;
		if (sig == SIGTERM && mono() - t0 >= cfg.killgrace) {
			sig = SIGKILL;
			for (i = 0; i < k; i++)
				kill(-pg[i], SIGKILL);
		} else if (sig == SIGKILL && mono() - t0 >= cfg.killgrace + 5) {
			logerror("an earlier run's job survives SIGKILL: going on beside it");
			break;
		}
		nanosleep(&nap, NULL);
	}
	/* and on the cluster: what srun left, even what never got to start */
	n = showslurm(found, MAX);
	slurmsweep(found, n, anyslurm);
}

/* a run with Slurm jobs checks srun and the cluster before it starts */
static void
slurmready(void)
{
	const char *why;
	int i;

	for (i = 0; i < nnodes && !(nodes[i].want && nodes[i].slurm); i++)
		;
	anyslurm = i < nnodes;
	if ((why = slurmsetup(stateabs, anyslurm ? i : -1)))
		fatal("%s", why);
}

/*
 * A guard: a child of dagrun in a session of its own that waits for one
 * byte on a pipe.  dagrun writes it when the run ends; if dagrun dies
 * first (SIGKILL, the OOM killer), the guard reads end-of-file and ends the
 * jobs the journal shows running, as the next run would, so that they do
 * not outlive dagrun unnoticed.  It costs nothing per job.
 */
static int guardfd = -1;

static void
guard(void)
{
	int p[2], sig;
	pid_t pid;
	ssize_t r;
	char c = 0;

	if (pipe(p) < 0)
		return;	/* the next run ends them instead */
	fflush(NULL);
	if ((pid = fork()) < 0) {
		close(p[0]);
		close(p[1]);
		return;
	}
	if (pid > 0) {
		close(p[0]);
		guardfd = p[1];
		cloexec(guardfd);
		return;
	}
	close(p[1]);
	setsid();
	for (sig = 1; sig < 32; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, sig == SIGCHLD ? SIG_DFL : SIG_IGN);
	while ((r = read(p[0], &c, 1)) < 0 && errno == EINTR)
		;
	if (r != 1 || c != 'x') {
		showprior(cfg.statedir);
		orphans(1);
		fflush(NULL);	/* its own lines of main.log; nothing else was buffered */
	}
	_exit(0);
}

/* the run ends as it should: the guard has nothing to do */
static void
unguard(void)
{
	if (guardfd >= 0 && write(guardfd, "x", 1) != 1)
		logerror("the guard: %s", strerror(errno));
	guardfd = -1;
}

/* -r: did an earlier run do job n, with the same command and inputs?  A
 * fan-out job whose output is newer than its input counts as done too */
static int
onresume(int n)
{
	struct stat in, out;

	if (showdone(nodes[n].name, cmdhash(n)) || (nodes[n].input && nodes[n].output &&
	    stat(nodes[n].output, &out) == 0 && stat(nodes[n].input, &in) == 0 &&
	    (out.st_mtim.tv_sec > in.st_mtim.tv_sec || (out.st_mtim.tv_sec == in.st_mtim.tv_sec &&
	    out.st_mtim.tv_nsec > in.st_mtim.tv_nsec)))) {
		logresumed(n);
		respawn(n);
		return 1;
	}
	return 0;
}

/* a fan-out node is ready: its inputs become jobs */
static int
onexpand(int g)
{
	char *msg;
	int line, i;

	if ((line = fanexpand(g, &msg))) {
		struct jobinfo ji;

		logerror("%s:%d: %s: %s", cfg.file, line, nodes[g].name, msg);
		logwarn("%s:%d: %s: %s", cfg.file, line, nodes[g].name, msg);
		free(msg);
		memset(&ji, 0, sizeof(ji));
		ji.node = g;
		ji.state = SFAILED;
		ji.status = -1;
		ji.start = ji.end = wall();
		ji.allowed = nodes[g].allowfail;
		ji.retry = -1;
		logend(&ji);
		if (!nodes[g].allowfail) {
			nbad++;
			if (cfg.onfail != FCONTINUE)
				stop();
		}
		return -1;
	}
	for (i = nodes[g].first; i < nodes[g].first + nodes[g].njobs; i++)
		nodes[i].want = 1;
	logexpand(g);
	calsetup(g);
	return nodes[g].njobs;
}

static void
killall(int sig)
{
	int i;

	for (i = 0; i < nrun; i++) {
		kill(-run[i]->pid, sig);
		if (run[i]->suspended)
			kill(-run[i]->pid, SIGCONT);	/* a stopped job must see it */
		run[i]->killed = 1;
	}
	for (i = 0; i < nlinger; i++)
		kill(-linger[i].pg, sig);
	if (sig == SIGTERM && cfg.killgrace > 0)
		killat = mono() + cfg.killgrace;
	else if (sig == SIGTERM)
		killall(SIGKILL);
	else {
		killat = 0;
		lingerend = mono() + 1;	/* zombies nobody reaps must not hold us */
	}
}

static void
stop(void)
{
	stopping = 1;
}

/* the output of a job that succeeded goes to its place, any other's
 * temporary away; the output's size, or -1 */
static long long
outdone(struct job *j, int *status, int commit)
{
	const char *tmp = fantmp(j->node), *out = nodes[j->node].output;
	struct stat st;

	if (*status || j->killed || j->timedout) {
		unlink(tmp);
		return -1;
	}
	if (stat(tmp, &st) < 0) {
		jobmsg(j, "no output: %s: %s", tmp, strerror(errno));
		*status = 1;
		return -1;
	}
	if (commit && rename(tmp, out) < 0) {
		jobmsg(j, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
		unlink(tmp);
		*status = 1;
		return -1;
	}
	return st.st_size;
}

/* jobs held by a limit (a node's width or a pool), in a list from *head
 * chained by link: k more may try again */
static void
release(int *head, int *tail, int k)
{
	int n;

	while (k-- > 0 && (n = *head) >= 0) {
		if ((*head = nodes[n].link) < 0)
			*tail = -1;
		if (nodes[n].state == SREADY)
			dagpush(n);
	}
}

/* hold n until a job ends; held jobs keep their order (one let go but
 * beaten to the slot goes back near the head) */
static void
hold(int *head, int *tail, int n)
{
	int *p;

	dagmark(n, SREADY);
	if (*tail < 0 || *tail < n) {
		nodes[n].link = -1;
		if (*tail >= 0)
			nodes[*tail].link = n;
		else
			*head = n;
		*tail = n;
		return;
	}
	for (p = head; *p < n; p = &nodes[*p].link)
		;
	nodes[n].link = *p;
	*p = n;
}

/* failed attempts waiting for their retry, soonest first */
static struct retry {
	double due;
	int n;
} *retries;
static int nretries, capretries;

static void
retrylater(int n, double delay)
{
	double due = mono() + delay;
	int i;

	dagmark(n, SREADY);
	if (nretries == capretries)
		retries = xrealloc(retries, (capretries = 2 * capretries + 16) * sizeof(*retries));
	for (i = nretries++; i > 0 && retries[i - 1].due > due; i--)
		retries[i] = retries[i - 1];
	retries[i].due = due;
	retries[i].n = n;
}

/* retries whose delay is over are ready again */
static void
retrydue(void)
{
	double now = mono();
	int i, k = 0;

	while (k < nretries && retries[k].due <= now)
		k++;
	for (i = 0; i < k; i++)
		if (nodes[retries[i].n].state == SREADY && !stopping)
			dagpush(retries[i].n);
	memmove(retries, retries + k, (nretries - k) * sizeof(*retries));
	nretries -= k;
}

/* jobs past their node's timeout get SIGTERM, and SIGKILL kill_grace later */
static void
timeouts(void)
{
	double now = mono();
	struct job *j;
	int i;

	for (i = 0; i < nrun; i++) {
		j = run[i];
		if (j->deadline && !j->timedout && !j->killed && now >= j->deadline) {
			j->timedout = 1;
			loginfo("%s: timeout after %gs: SIGTERM", nodes[j->node].name,
			    nodes[j->node].timeout);
			kill(-j->pid, SIGTERM);
			if (j->suspended)
				kill(-j->pid, SIGCONT);
			j->killat = now + cfg.killgrace;
		}
		if (j->timedout && j->killat && now >= j->killat) {
			kill(-j->pid, SIGKILL);
			j->killat = 0;
		}
	}
}

/* the soonest timer of the running jobs or the retries, from now */
static double
jobtimers(double now)
{
	double t = 1e9;
	int i;

	for (i = 0; i < nrun; i++) {
		if (run[i]->deadline && !run[i]->timedout && run[i]->deadline - now < t)
			t = run[i]->deadline - now;
		if (run[i]->timedout && run[i]->killat && run[i]->killat - now < t)
			t = run[i]->killat - now;
	}
	if (nretries && retries[0].due - now < t)
		t = retries[0].due - now;
	return t < 0 ? 0 : t;
}

/* where n's outputs go, for the free space they may take */
static char *
outdirof(int n)
{
	static char dir[PATH_MAX];
	const char *out = n >= 0 ? nodes[n].output : NULL, *slash;

	if (!out || !(slash = strrchr(out, '/')))
		return strcpy(dir, ".");
	snprintf(dir, sizeof(dir), "%.*s", slash == out ? 1 : (int)(slash - out), out);
	return dir;
}

/* free space where dir is or will be: of its nearest existing parent */
static long long
diskfree(char *dir)
{
	long long free;
	char *slash;

	while ((free = resdiskfree(dir)) < 0 && (slash = strrchr(dir, '/')) && slash > dir)
		*slash = 0;
	return free >= 0 ? free : resdiskfree(*dir == '/' ? "/" : ".");
}

/* a fan-out node's width from one job's CPU per second, peak RSS and
 * output bytes: the fewest that fit the set share of CPUs, available
 * memory and free disk (seed 003's rule) */
static void
calapply(int g, double cpu, double rss, double bytes, int job)
{
	static const char *const what[] = {"cpu", "memory", "disk"};
	struct fan *f = nodes[g].fan;
	double lim[3] = {-1, -1, -1}, best = -1;
	long long used, limit, disk;
	char text[3][32];
	int i, which = -1;

	if (cpu > 0.001)
		lim[0] = f->calpct[0] / 100 * ncpus / cpu;
	if (rss > 0 && resmem(&used, &limit) == 0)
		lim[1] = f->calpct[1] / 100 * (limit - used) / rss;
	if (bytes > 0 && (disk = diskfree(outdirof(job))) >= 0)
		lim[2] = f->calpct[2] / 100 * disk / bytes;
	for (i = 0; i < 3; i++) {
		if (lim[i] >= 0 && (best < 0 || lim[i] < best)) {
			best = lim[i];
			which = i;
		}
		if (lim[i] < 0)
			snprintf(text[i], sizeof(text[i]), "-");
		else
			snprintf(text[i], sizeof(text[i]), "%.0f", lim[i] < 1e9 ? (double)(long)lim[i] : 1e9);
	}
	nodes[g].limit = best < 0 ? 0 : best < 1 ? 1 : best > 1e6 ? 1000000 : (int)best;
	nodes[g].calib = 0;
	loginfo("calibration %s: cpu %.3f rss %.0f output %.0f; limits cpu %s memory %s disk %s; "
	    "at most %d at once (%s)", nodes[g].name, cpu, rss, bytes, text[0], text[1], text[2],
	    nodes[g].limit, which < 0 ? "no limit" : what[which]);
	if (!cfg.quiet) {
		if (logtty())
			logstatus(0, -1, 0, NULL);
		printf("calibrated %s: ", nodes[g].name);
		if (nodes[g].limit)
			printf("at most %d at once (%s)\n", nodes[g].limit, what[which]);
		else
			printf("no limit\n");
	}
	release(&nodes[g].parked, &nodes[g].parktail,
	    nodes[g].limit ? nodes[g].limit - nodes[g].nrunning : INT_MAX);
}

/* the calibration job of g ended well */
static void
calibrated(int g, struct job *j, double secs, long long bytes)
{
	double cpu = secs > 0 ? j->cpu / secs : 0, rss = 1024.0 * j->maxrss;

	logcalsave(nodes[g].name, cpu, rss, bytes > 0 ? (double)bytes : 0);
	calapply(g, cpu, rss, bytes > 0 ? (double)bytes : 0, j->node);
}

/* a fan-out node that calibrates: measured before, or one job first */
static void
calsetup(int g)
{
	double v[3];

	if (!nodes[g].fan->calibrate || !nodes[g].njobs)
		return;
	if (nodes[g].fan->calibrate == 1 && logcalread(nodes[g].name, v) == 0) {
		loginfo("calibration %s: from an earlier run", nodes[g].name);
		calapply(g, v[0], v[1], v[2], nodes[g].first);
		return;
	}
	nodes[g].calib = 1;
	nodes[g].limit = 1;
	loginfo("calibration %s: one job alone first", nodes[g].name);
}

/* the job ended with status (128+n for signal n) */
static void
jobfinish(struct job *j, int status)
{
	struct jobinfo ji;
	int n = j->node, s, g = nodes[n].parent;
	long long bytes = -1;

	/* the output must be there before a spawn file counts, and both
	 * before the output takes its name */
	if (nodes[n].output)
		outdone(j, &status, 0);
	if (spawned(j, !status && !j->killed && !j->timedout) < 0)
		status = 1;
	if (nodes[n].output)
		bytes = outdone(j, &status, 1);
	if (nodes[n].slurm && j->pid > 0)
		slurmended(j, status);
	lanedone(j);
	if (j->pid > 0 && !nodes[n].slurm)
		cpusrun -= nodes[n].cpus;
	if (j->suspended) {
		nsusp--;
		dagmark(n, SRUNNING);
	}
	/* the rest of a signalled group gets its SIGKILL too */
	if ((j->killed || j->timedout) && j->pid > 0 && kill(-j->pid, 0) == 0) {
		if (nlinger == caplinger)
			linger = xrealloc(linger, (caplinger = 2 * caplinger + 8) * sizeof(*linger));
		linger[nlinger].pg = j->pid;
		linger[nlinger++].killat = j->killat;
	}
	s = j->killed ? SCANCELLED : j->timedout ? STIMEOUT : status == 0 ? SOK : SFAILED;
	memset(&ji, 0, sizeof(ji));
	ji.node = n;
	ji.state = s;
	ji.status = status;
	ji.attempt = j->attempt;
	ji.pid = j->pid;
	ji.start = j->start;
	ji.end = j->start + (mono() - j->t0);
	ji.cpu = j->cpu;
	ji.maxrss = j->maxrss;
	ji.retry = -1;
	if ((s == SFAILED || s == STIMEOUT) && nodes[n].attempts <= nodes[n].retries && !stopping)
		ji.retry = nodes[n].retrydelay * (double)(1L << (nodes[n].attempts - 1 < 20 ?
		    nodes[n].attempts - 1 : 20));
	ji.allowed = (s == SFAILED || s == STIMEOUT) && nodes[n].allowfail && ji.retry < 0;
	if ((s == SFAILED || s == STIMEOUT) && !ji.allowed && ji.retry < 0)
		nbad++;
	logend(&ji);
	if (g >= 0) {
		nodes[g].nrunning--;
		if (nodes[g].calib && s == SOK)
			calibrated(g, j, ji.end - ji.start, bytes);
		release(&nodes[g].parked, &nodes[g].parktail, 1);
	}
	if (nodes[n].pool >= 0) {
		cfg.pools[nodes[n].pool].running--;
		release(&cfg.pools[nodes[n].pool].parked, &cfg.pools[nodes[n].pool].parktail, 1);
	}
	if (ji.retry >= 0) {
		retrylater(n, ji.retry);
		j->next = freejobs;
		freejobs = j;
		return;
	}
	dagdone(n, s);
	if ((s == SFAILED || s == STIMEOUT) && !ji.allowed && cfg.onfail != FCONTINUE) {
		stop();
		if (cfg.onfail == FABORT && nrun)
			killall(SIGTERM);
	}
	j->next = freejobs;
	freejobs = j;
}

/* a Slurm job ended: say so when Slurm, not its command, ended it (the
 * job fails, and is retried when retries allow); the queue is swept at the
 * end of a run that signalled one */
static void
slurmended(struct job *j, int status)
{
	char why[512];

	if (j->killed || j->timedout)
		slurmkilled = 1;
	else if (slurmlost(lanes[j->lane].fd[1], status, why, sizeof(why))) {
		loginfo("%s: lost by Slurm: %s", nodes[j->node].name, why);
		logwarn("%s: lost by Slurm: %s", nodes[j->node].name, why);
		jobmsg(j, "lost by Slurm: %s", why);
	}
}

/* RLIMIT_AS for the job: soft and hard, never above the hard limit now */
static int
memlimit(long long bytes)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_AS, &rl) < 0)
		return -1;
	if (rl.rlim_max != RLIM_INFINITY && (rlim_t)bytes > rl.rlim_max)
		bytes = rl.rlim_max;
	rl.rlim_cur = rl.rlim_max = (rlim_t)bytes;
	return setrlimit(RLIMIT_AS, &rl);
}

/* fork and exec for what posix_spawn cannot do (a working directory);
 * an exec failure comes back through a close-on-exec pipe */
static pid_t
forkexec(struct job *j, const char *path, char **argv, char **envp)
{
	int out = lanes[j->lane].fd[0], err = lanes[j->lane].fd[1];
	struct node *nd = &nodes[j->node];
	const char *dir = nd->dir;
	int alive[2], e[2] = {0, 0};
	ssize_t r;
	sigset_t none;
	pid_t pid;

	if (mkpipe(alive) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(alive[0]);
		close(alive[1]);
		return -1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (dup2(devnull, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
			e[0] = 1;
		else if (dir && chdir(dir) < 0)
			e[0] = 2;
		else if (nd->hasnice && (errno = 0, nice(nd->nice) == -1) && errno)
			e[0] = 4;
		else if (nd->memlimit && memlimit(nd->memlimit) < 0)
			e[0] = 5;
		else
			execve(path, argv, envp);
		if (!e[0])
			e[0] = 3;
		e[1] = errno;
		r = write(alive[1], e, sizeof(e));
		(void)r;
		_exit(e[0] == 3 && e[1] == ENOENT ? 127 : 126);
	}
	setpgid(pid, pid);
	close(alive[1]);
	while ((r = read(alive[0], e, sizeof(e))) < 0 && errno == EINTR)
		;
	close(alive[0]);
	if (r == sizeof(e) && e[0] == 2)
		jobmsg(j, "cannot change to directory '%s': %s", dir, strerror(e[1]));
	else if (r == sizeof(e) && e[0] == 4)
		jobmsg(j, "nice %d: %s", nd->nice, strerror(e[1]));
	else if (r == sizeof(e) && e[0] == 5)
		jobmsg(j, "mem_limit: %s", strerror(e[1]));
	else if (r == sizeof(e) && e[1] == ENOENT)
		jobmsg(j, "%s: command not found", argv[0]);
	else if (r == sizeof(e))
		jobmsg(j, "cannot run '%s': %s", argv[0], strerror(e[1]));
	return pid;
}

/* posix_spawn into the job's own process group; 0 or an errno; the
 * attributes and each lane's file actions are made once */
static int
spawn(struct job *j, const char *path, char **argv, char **envp)
{
	static posix_spawnattr_t at;
	static int haveat;
	struct lane *l = &lanes[j->lane];
	sigset_t none;

	if (!haveat) {
		posix_spawnattr_init(&at);
		sigemptyset(&none);
		posix_spawnattr_setsigmask(&at, &none);
		posix_spawnattr_setpgroup(&at, 0);
		posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
		haveat = 1;
	}
	if (l->fafd[0] != l->fd[0] || l->fafd[1] != l->fd[1]) {
		if (l->fafd[0] >= 0)
			posix_spawn_file_actions_destroy(&l->fa);
		posix_spawn_file_actions_init(&l->fa);
		posix_spawn_file_actions_adddup2(&l->fa, devnull, 0);
		posix_spawn_file_actions_adddup2(&l->fa, l->fd[0], 1);
		posix_spawn_file_actions_adddup2(&l->fa, l->fd[1], 2);
		l->fafd[0] = l->fd[0];
		l->fafd[1] = l->fd[1];
	}
	return posix_spawn(&j->pid, path, &l->fa, &at, argv, envp);
}

static int
retryable(int e)
{
	return e == EAGAIN || e == ENOMEM || e == EMFILE || e == ENFILE;
}

/* start job j's cmd (or its post): 0, or an errno; the job's stderr says
 * why unless it is worth a retry */
static int
jobexec(struct job *j, int post)
{
	int n = j->node, e = 0;
	const char *path, *pathenv = nodepath(n);
	char **argv = cmdargv(n, j->attempt, post), **envp = jobenv(j);
	const char *why;

	if (nodes[n].slurm) {
		if (!slurmsrun() && (why = slurmsetup(stateabs, n))) {
			jobmsg(j, "%s", strchr(why, ' ') + 1);
			return EINVAL;
		}
		argv = slurmargv(n, argv);
		path = slurmsrun();
	} else
		path = findprog(argv[0], pathenv, !nodes[n].dir, &e, 0);
	if (path && (nodes[n].dir || nodes[n].hasnice || nodes[n].memlimit)) {
		j->pid = forkexec(j, path, argv, envp);
		e = j->pid < 0 ? errno : 0;
	} else if (path) {
		e = spawn(j, path, argv, envp);
		if (e == ENOENT && !nodes[n].slurm && (path = findprog(argv[0], pathenv, 1, &e, 1)))
			e = spawn(j, path, argv, envp);
	}
	if (e == ENOENT)
		jobmsg(j, "%s: command not found", argv[0]);
	else if (e && !retryable(e))
		jobmsg(j, "cannot run '%s': %s", argv[0], strerror(e));
	return e;
}

/* start node n; 0 started or finished at once, -1 retry later */
static int
jobstart(int n)
{
	static char *shown;
	static size_t capshown;
	struct job *j;
	int e = 0, lane, g = nodes[n].parent;
	char *why;

	if ((lane = laneget()) < 0)
		return -1;
	if ((j = freejobs))
		freejobs = j->next;
	else
		j = xmalloc(sizeof(*j));
	memset(j, 0, sizeof(*j));
	j->node = n;
	if (cfg.resume && !nodes[n].attempts)
		nodes[n].attempts = showattempts(nodes[n].name);	/* retries go on */
	j->attempt = ++nodes[n].attempts;
	j->lane = lane;
	j->bol[0] = j->bol[1] = 1;
	if (g >= 0)
		nodes[n].stale = logstale(n);
	if (nodes[n].stale & 1)
		unlink(logpath(n, 1));
	if (nodes[n].stale & 2)
		unlink(logpath(n, 2));
	nodes[n].stale = 0;
	if (g >= 0)
		nodes[g].nrunning++;
	if (nodes[n].pool >= 0)
		cfg.pools[nodes[n].pool].running++;
	if (cfg.verbose)
		cmdexpand(n, j->attempt, 0, &shown, &capshown);
	j->t0 = mono();
	j->start = wall();
	if (nodes[n].output && fanprep(n, &why) < 0) {
		jobmsg(j, "%s: %s", why, strerror(errno));
		e = EACCES;
	} else
		e = jobexec(j, 0);
	if (retryable(e)) {
		nodes[n].attempts--;
		if (g >= 0)
			nodes[g].nrunning--;
		if (nodes[n].pool >= 0)
			cfg.pools[nodes[n].pool].running--;
		freelanes[nfreelanes++] = lane;
		j->next = freejobs;
		freejobs = j;
		errno = e;
		return -1;
	}
	if (e) {
		j->pid = 0;
		logstart(n, j->attempt, 0, cmdhash(n), shown);
		jobfinish(j, e == ENOENT ? 127 : 126);
		return 0;
	}
	if (nrun == caprun)
		run = xrealloc(run, (caprun = caprun ? caprun * 2 : 64) * sizeof(*run));
	run[nrun++] = j;
	if (!nodes[n].slurm)
		cpusrun += nodes[n].cpus;
	if (nodes[n].timeout > 0) {
		j->deadline = j->t0 + nodes[n].timeout;
		anytimers = 1;
	}
	logstart(n, j->attempt, j->pid, cmdhash(n), shown);
	if (g >= 0 && nodes[g].calib) {
		dagmark(n, SCALIBRATING);
		logcalibrating(n);
	}
	return 0;
}

/* after a cmd that succeeded, its post; 1 if it runs now */
static int
poststart(struct job *j, int *status)
{
	int e;

	if (*status || j->killed || j->post || !nodes[j->node].postcmd)
		return 0;
	j->post = 1;
	e = jobexec(j, 1);
	if (!e)
		return 1;
	if (retryable(e))
		jobmsg(j, "cannot run post: %s", strerror(e));
	*status = e == ENOENT ? 127 : 126;
	return 0;
}

static void
reap(void)
{
	struct rusage ru;
	struct job *j;
	pid_t pid;
	int st, i, status;

	for (;;) {
		pid = wait4(-1, &st, WNOHANG, &ru);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		for (i = 0; i < nrun && run[i]->pid != pid; i++)
			;
		status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
		if (i == nrun) {
			plugreap(pid, status);
			continue;	/* or an orphan we adopted as subreaper */
		}
		j = run[i];
		if (!j->post) {
			j->cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
			    ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
			j->maxrss = ru.ru_maxrss;
		}
		if (poststart(j, &status))
			continue;
		run[i] = run[--nrun];
		blocked = 0;
		jobfinish(j, status);
	}
}

/* does a lingering group still wait for its SIGKILL?  When none does,
 * the rest get a second to be reaped */
static int
killsdue(void)
{
	int i;

	for (i = 0; i < nlinger; i++)
		if (linger[i].killat)
			return 1;
	if (!lingerend)
		lingerend = mono() + 1;
	return 0;
}

/* forget the lingering groups that are gone */
static void
prune(void)
{
	int i;

	for (i = 0; i < nlinger; ) {
		if (linger[i].killat && mono() >= linger[i].killat) {
			kill(-linger[i].pg, SIGKILL);
			linger[i].killat = 0;
		}
		if (kill(-linger[i].pg, 0) < 0 && errno == ESRCH)
			linger[i] = linger[--nlinger];
		else
			i++;
	}
}

static void
onsignals(void)
{
	static int seen[65];
	unsigned char c[64];
	int sig, i;

	while (read(selfpipe[0], c, sizeof(c)) == sizeof(c))
		;
	for (sig = 1; sig < 65; sig++) {
		if (caught[sig] == seen[sig])
			continue;
		i = caught[sig] - seen[sig];
		seen[sig] = caught[sig];
		if (sig == SIGUSR1) {
			paused = 1;
			loginfo("SIGUSR1: launching paused");
		} else if (sig == SIGUSR2) {
			paused = 0;
			loginfo("SIGUSR2: launching resumed");
		} else if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
			interrupts++;
			if (termsig || i > 1) {
				killall(SIGKILL);
			} else {
				loginfo("%s: stopping, jobs get SIGTERM", sig == SIGINT ? "SIGINT" :
				    sig == SIGTERM ? "SIGTERM" : "SIGHUP");
				killall(SIGTERM);
			}
			if (!termsig)
				termsig = sig;
			stop();
		}
	}
}

/* read what the configured gates need, at most every 50ms */
static void
sample(void)
{
	double now = mono();
	long long b, t;

	if (now - rd.t < 0.05)
		return;
	rd.t = now;
	if (cfg.cpupct > 0 && rescputicks(&b, &t) == 0 && now - cput0t >= 0.25) {
		if (t > cput0)
			rd.cpu = 100.0 * (b - cpub0) / (t - cput0);
		cpub0 = b;
		cput0 = t;
		cput0t = now;
	}
	if (cfg.mempct > 0 || cfg.suspendpct > 0 || anymem)
		resmem(&rd.memused, &rd.memlimit);
	if (cfg.diskfree >= 0)
		rd.disk = resdiskfree(cfg.diskpath ? cfg.diskpath : cfg.statedir);
	if (cfg.loadmax > 0 && resload(&rd.load, &rd.runnable) == 0 && rd.load != loadprev) {
		if (loadprev >= 0)
			loadmoved = now;	/* the kernel averaged again */
		loadprev = rd.load;
	}
	if (cfg.cpupress > 0)
		rd.cpupress = respressure("cpu");
	if (cfg.mempress > 0)
		rd.mempress = respressure("memory");
}

static void
human(char *buf, size_t n, double bytes)
{
	static const char u[] = "BKMGT";
	int i = 0;

	while (bytes >= 1024 && i < 4) {
		bytes /= 1024;
		i++;
	}
	snprintf(buf, n, i ? "%.1f%c" : "%.0f%c", bytes, u[i]);
}

/* memory running jobs declared and may still take: declared less measured */
static long long
committed(void)
{
	long long sum = 0, left;
	double now = mono();
	struct job *j;
	int i;

	for (i = 0; i < nrun; i++) {
		j = run[i];
		if (!nodes[j->node].mem || nodes[j->node].slurm)
			continue;
		if (now - j->rsst > 0.2) {
			j->rss = resrss(j->pid);
			j->rsst = now;
		}
		left = nodes[j->node].mem - (j->rss > 0 ? j->rss : 0);
		if (left > 0)
			sum += left;
	}
	return sum;
}

/* may node n start now?  If not, waitwhy says which limit holds it */
static int
admit(int n)
{
	struct node *nd = &nodes[n];
	double pct, est;
	int i;
	long long need;
	char a[32], b[32];

	if (nd->slurm)	/* the cluster decides where and when; plugins still hold */
		return !nplug || plugadmit(nrun, waitwhy, sizeof(waitwhy));
	if (nsusp) {
		snprintf(waitwhy, sizeof(waitwhy), "memory_suspend_percent: a job is suspended");
		return 0;
	}
	if (nplug && !plugadmit(nrun, waitwhy, sizeof(waitwhy)))
		return 0;	/* a plugin's word holds even when nothing runs */
	if (!nrun)
		return 1;	/* one job may always start: a gate never deadlocks */
	if (nd->cpus > 0 && cpusrun + nd->cpus > ncpus + 1e-9) {
		snprintf(waitwhy, sizeof(waitwhy), "cpus: %g running + %g > %g", cpusrun,
		    nd->cpus, ncpus);
		return 0;
	}
	if (!gates && !nd->mem)
		return 1;
	sample();
	if (cfg.cpupct > 0 && rd.cpu >= cfg.cpupct) {
		snprintf(waitwhy, sizeof(waitwhy), "cpu_percent: %.0f%% >= %g%%", rd.cpu, cfg.cpupct);
		return 0;
	}
	if ((cfg.mempct > 0 || nd->mem) && rd.memlimit > 0) {
		need = rd.memused + committed() + nd->mem;
		pct = 100.0 * need / rd.memlimit;
		if (pct >= (cfg.mempct > 0 ? cfg.mempct : 100)) {
			human(a, sizeof(a), (double)(need - rd.memused));
			snprintf(waitwhy, sizeof(waitwhy), "%s: %.0f%% in use%s%s >= %g%%",
			    cfg.mempct > 0 ? "memory_percent" : "mem",
			    100.0 * rd.memused / rd.memlimit, need > rd.memused ? " + declared " : "",
			    need > rd.memused ? a : "", cfg.mempct > 0 ? cfg.mempct : 100);
			return 0;
		}
	}
	if (cfg.diskfree >= 0 && rd.disk >= 0 && rd.disk < cfg.diskfree) {
		human(a, sizeof(a), rd.disk);
		human(b, sizeof(b), cfg.diskfree);
		snprintf(waitwhy, sizeof(waitwhy), "disk_free: %s < %s", a, b);
		return 0;
	}
	if (cfg.loadmax > 0) {
		/* the average lags: add the running jobs that started since it
		 * last moved, and take the runnable count (less dagrun itself)
		 * when that is higher */
		est = rd.load;
		for (i = 0; i < nrun; i++)
			est += run[i]->t0 > loadmoved;
		if (rd.runnable - 1 > est)
			est = rd.runnable - 1;
		if (est >= cfg.loadmax) {
			snprintf(waitwhy, sizeof(waitwhy), "load_avg_1m: %.2f >= %g", est, cfg.loadmax);
			return 0;
		}
	}
	if (cfg.cpupress > 0 && rd.cpupress >= cfg.cpupress) {
		snprintf(waitwhy, sizeof(waitwhy), "cpu_pressure: %.1f >= %g", rd.cpupress, cfg.cpupress);
		return 0;
	}
	if (cfg.mempress > 0 && rd.mempress >= cfg.mempress) {
		snprintf(waitwhy, sizeof(waitwhy), "memory_pressure: %.1f >= %g", rd.mempress,
		    cfg.mempress);
		return 0;
	}
	return 1;
}

/* the end of the run for a reason of time: the deadline or a wait */
static void
expire(const char *fmt, const char *what)
{
	char msg[256];

	snprintf(msg, sizeof(msg), fmt, what);
	logerror("%s", msg);
	warn("%s", msg);
	timedout = 1;
	stop();
	if (nrun)
		killall(SIGTERM);
}

/* launching waits on waitwhy */
static void
gatewait(void)
{
	double now = mono();

	if (!waitsince)
		waitsince = now;
	if (now - lastwaitlog >= cfg.poll) {
		loginfo("waiting for resources: %s", waitwhy);
		lastwaitlog = now;
	}
	if (cfg.waittimeout > 0 && now - waitsince >= cfg.waittimeout)
		expire("resource wait timed out: %s", waitwhy);
}

/* memory_suspend_percent: stop the newest job above it, continue the last
 * stopped one below memory_percent; one step per poll interval */
static void
suspendcheck(void)
{
	struct job *j = NULL;
	double pct, low = cfg.mempct > 0 ? cfg.mempct : cfg.suspendpct;
	int i;

	if (cfg.suspendpct <= 0 || mono() < nextsuspend)
		return;
	nextsuspend = mono() + cfg.poll;
	rd.t = 0;
	sample();
	if (rd.memlimit <= 0)
		return;
	pct = 100.0 * rd.memused / rd.memlimit;
	if (pct > cfg.suspendpct && nrun - nsusp > 1 && !stopping) {
		for (i = 0; i < nrun; i++)
			if (!run[i]->suspended && !nodes[run[i]->node].slurm &&
			    (!j || run[i]->t0 > j->t0))
				j = run[i];
		if (!j)
			return;	/* only Slurm jobs run: stopping srun frees nothing here */
		kill(-j->pid, SIGSTOP);
		j->suspended = 1;
		nsusp++;
		dagmark(j->node, SSUSPENDED);
		logsuspend(j->node, 1, pct);
	} else if (nsusp && (pct < low || nsusp == nrun || stopping)) {
		/* below the mark, nothing left running to free memory, or the
		 * run is ending and its running jobs must finish */
		for (i = 0; i < nrun; i++)
			if (run[i]->suspended && (!j || run[i]->t0 < j->t0))
				j = run[i];
		kill(-j->pid, SIGCONT);
		j->suspended = 0;
		nsusp--;
		dagmark(j->node, SRUNNING);
		logsuspend(j->node, 0, pct);
	}
}

/* what this system cannot tell (no /proc, as in a bare chroot), said once
 * in main.log when the run starts */
static char unread[256];

/* refuse a gate that cannot be read here rather than ignore it */
static void
gatesetup(void)
{
	long long a, b;
	double d;
	int i, r;
	size_t k = 0;

	if (rescputicks(&a, &b) < 0)
		k += snprintf(unread + k, sizeof(unread) - k, ", cpu_percent");
	if (resmem(&a, &b) < 0)
		k += snprintf(unread + k, sizeof(unread) - k, ", memory_percent, "
		    "memory_suspend_percent, mem");
	if (resload(&d, &i) < 0)
		k += snprintf(unread + k, sizeof(unread) - k, ", load_avg_1m, -l");
	if (k && respressure("cpu") < 0)	/* alone, only an older kernel */
		k += snprintf(unread + k, sizeof(unread) - k, ", cpu_pressure, memory_pressure");

	gates = cfg.cpupct > 0 || cfg.mempct > 0 || cfg.diskfree >= 0 || cfg.loadmax > 0 ||
	    cfg.cpupress > 0 || cfg.mempress > 0;
	ncpus = rescpus();
	cpusrun = 0;
	if (cfg.cpupct > 0 && rescputicks(&cpub0, &cput0) < 0)
		fatal("cpu_percent: cannot read the CPU time on this system (%s/proc/stat)", resroot());
	cput0t = mono();
	for (i = 0, r = 0; i < nnodes; i++)
		r |= nodes[i].want && nodes[i].mem;
	anymem = r;
	if ((cfg.mempct > 0 || cfg.suspendpct > 0 || r) && resmem(&a, &b) < 0)
		fatal("%s: cannot read memory use on this system (%s/proc/meminfo)",
		    cfg.mempct > 0 ? "memory_percent" : cfg.suspendpct > 0 ?
		    "memory_suspend_percent" : "mem", resroot());
	if (cfg.diskfree >= 0 && resdiskfree(cfg.diskpath ? cfg.diskpath : ".") < 0)
		fatal("disk_free: cannot read free space of %s:", cfg.diskpath ? cfg.diskpath : ".");
	if (cfg.loadmax > 0 && resload(&d, &i) < 0)
		fatal("load_avg_1m: cannot read the load average on this system (%s/proc/loadavg)",
		    resroot());
	if (cfg.cpupress > 0 && respressure("cpu") < 0)
		fatal("cpu_pressure: no pressure information on this system (%s/proc/pressure/cpu)",
		    resroot());
	if (cfg.mempress > 0 && respressure("memory") < 0)
		fatal("memory_pressure: no pressure information on this system "
		    "(%s/proc/pressure/memory)", resroot());
}

/* how long a launch may wait for processes while nothing of ours runs */
static double
blockedlimit(void)
{
	return cfg.waittimeout > 0 ? cfg.waittimeout : 60;
}

static void
launch(void)
{
	int n, g, p, r;

	while (!stopping && !paused && !blocked && (!cfg.jobs || nrun < cfg.jobs) &&
	    !logbroken()) {
		if ((n = dagpop()) < 0) {
			waitsince = 0;
			return;
		}
		g = nodes[n].parent;
		if (g >= 0 && nodes[g].limit && nodes[g].nrunning >= nodes[g].limit) {
			hold(&nodes[g].parked, &nodes[g].parktail, n);
			continue;
		}
		if ((p = nodes[n].pool) >= 0 && cfg.pools[p].running >= cfg.pools[p].size) {
			hold(&cfg.pools[p].parked, &cfg.pools[p].parktail, n);
			continue;
		}
		if (!admit(n)) {
			dagpush(n);
			gatewait();
			return;
		}
		waitsince = 0;
		r = jobstart(n);
		if (r < 0 && !nrun && (errno == EMFILE || errno == ENFILE) && reclaim())
			r = jobstart(n);	/* with what idle lanes held */
		if (r < 0) {
			if (!nrun && (errno == EMFILE || errno == ENFILE ||
			    (blockedsince && mono() - blockedsince >= blockedlimit()))) {
				/* too few descriptors for one job, or the machine's
				 * processes have not let one start for so long */
				logerror("cannot start %s: %s", nodes[n].name, strerror(errno));
				warn("cannot start %s:", nodes[n].name);
				nbad++;
				dagdone(n, SFAILED);
				stop();
				return;
			}
			dagpush(n);
			if (!nblocked++)
				loginfo("cannot start a job now (%s): waiting until one ends or "
				    "the system has room, then trying again", strerror(errno));
			if (!nrun && !blockedsince)
				blockedsince = mono();
			blockedfor = blockedfor ? (blockedfor * 2 < 1 ? blockedfor * 2 : 1) : 0.01;
			blockedend = mono() + blockedfor;
			blocked = 1;
		} else
			blockedfor = blockedsince = 0;
	}
}

static void
status(void)
{
	int i, o = 0;

	if (!logtty())
		return;
	for (i = 1; i < nrun; i++)
		if (run[i]->t0 < run[o]->t0)
			o = i;
	logstatus(nrun, nrun ? run[o]->node : -1, nrun ? mono() - run[o]->t0 : 0,
	    waitsince ? waitwhy : NULL);
}

/* how long poll may sleep: until the next timer, or -1 for ever */
static int
nextwake(void)
{
	double t = 1e9, now = mono();

	if (killat)
		t = killat > now ? killat - now : 0;
	if (deadlineat && !timedout && t > deadlineat - now)
		t = deadlineat > now ? deadlineat - now : 0;
	if ((waitsince || (cfg.suspendpct > 0 && nrun)) && t > cfg.poll)
		t = cfg.poll;	/* limits are read again even if nothing ends */
	if (nlinger && t > 0.05)
		t = 0.05;
	if (blocked && t > blockedend - now)
		t = blockedend > now ? blockedend - now : 0;
	if (cfg.verbose && nrun && t > 0.1)
		t = 0.1;	/* live output, read from the lane files */
	if (logdirty() && t > 0.5)
		t = 0.5;
	if (nrun && logtty() && t > 1)
		t = 1;
	if (nrun && cfg.metrics && t > logmetricswake(now))
		t = logmetricswake(now);
	if (t > logsyncwake(now))
		t = logsyncwake(now);
	if (nplug && t > plugwake(now))
		t = plugwake(now);
	if (cfg.notify && t > plugnotifywake(now))
		t = plugnotifywake(now);
	if ((anytimers || nretries) && t > jobtimers(now))
		t = jobtimers(now);
	return t == 1e9 ? -1 : (int)(t * 1000) + 1;
}

/* the notify commands still queued run before the end, each bounded by
 * notify_timeout; a signal cuts it short */
static void
notifydrain(struct pollfd *pfd)
{
	int seen = interrupts;
	double t;

	for (plugnotifywork(mono()); plugbusy() && interrupts == seen; plugnotifywork(mono())) {
		logflush();
		t = plugnotifywake(mono());
		if (poll(pfd, 1, (int)(t * 1000) + 1) > 0) {
			onsignals();
			reap();
		}
	}
	plugnotifystop();
}

int
schedrun(void)
{
	double t0 = mono();
	char deadlinetext[32];
	struct pollfd *pfd;
	int i, code, npfd, sig;

	gatesetup();	/* refuse an unreadable gate before touching anything */
	if (lockacquire(cfg.statedir) < 0)
		return EXLOCK;
	closeinherited();
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		fatal("/dev/null:");
	envsetup();
	slurmready();
	fdlimit();
	showprior(cfg.statedir);	/* before logopen mends a torn last record */
	logopen(cfg.statedir);
	if (*unread)
		loginfo("unavailable on this system (%s/proc): %s", resroot(), unread + 2);
	orphans(0);
	guard();
	spawnsetup();
	loghistory(cfg.statedir);
	sigsetup();
#if defined(__linux__)
	/* orphaned grandchildren come to us, so a group's end can be seen */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
#endif
	plugsetup(devnull, cfg.statedir);
	nplug = plugcount();
	pfd = xmalloc((nplug + 1) * sizeof(*pfd));
	pfd[0].fd = selfpipe[0];
	pfd[0].events = POLLIN;
	/* a fan-out node counts as one until its expand record */
	for (i = 0, code = dagtotal(); i < nnodes; i++)
		if (nodes[i].expanded && nodes[i].want)
			code -= nodes[i].njobs - 1;
	logrunstart(code);
	for (i = 0; i < nnodes; i++)
		if (nodes[i].expanded && nodes[i].want) {
			logexpand(i);
			calsetup(i);
		}
	dagstart(onexpand, onskip, cfg.resume ? onresume : NULL);
	if (cfg.deadline > 0) {
		deadlineat = t0 + cfg.deadline;
		snprintf(deadlinetext, sizeof(deadlinetext), "%gs", cfg.deadline);
	}
	for (;;) {
		if (nplug)
			plugwork(mono(), !stopping);
		if (blocked && mono() >= blockedend)
			blocked = 0;
		launch();
		if (cfg.notify)
			plugnotifywork(mono());
		if (!nrun && (stopping || (!dagnready() && !nretries))) {
			prune();
			if (!nlinger || (!killat && !killsdue() && mono() >= lingerend))
				break;
		}
		status();
		logflush();
		npfd = 1 + (nplug ? plugfds(pfd + 1) : 0);
		if (poll(pfd, npfd, nextwake()) > 0) {
			onsignals();
			reap();
		}
		if (cfg.verbose)
			for (i = 0; i < nrun; i++) {
				show(run[i], 0);
				show(run[i], 1);
			}
		if (nlinger)
			prune();
		if (killat && mono() >= killat)
			killall(SIGKILL);
		if (deadlineat && !timedout && mono() >= deadlineat)
			expire("deadline passed (%s after the start): jobs terminated", deadlinetext);
		suspendcheck();
		if (logbroken() && !diskbad) {
			/* a state file cannot be written: nothing new starts, the
			 * running jobs end as on_failure says */
			diskbad = 1;
			stop();
			if (cfg.onfail == FABORT && nrun)
				killall(SIGTERM);
		}
		if (anytimers)
			timeouts();
		if (nretries)
			retrydue();
	}
	plugstop();
	laneclose();
	if (slurmkilled)
		slurmsweep(NULL, 0, 1);
	if (stopping)
		dagcancel(SCANCELLED, onskip);
	code = termsig ? 128 + termsig : timedout ? EXTIME :
	    nbad || diskbad || logbroken() || dagcount[SSKIPPED] || dagcount[SCANCELLED] ?
	    EXFAIL : EXOK;
	if (nblocked > 1)
		loginfo("%d launches waited for processes or descriptors", nblocked);
	logrunend(code, mono() - t0);
	sig = termsig;
	notifydrain(pfd);
	free(pfd);
	logclose();
	if (logbroken() && code == EXOK)
		code = EXFAIL;	/* the last flush of the logs failed */
	if (cfg.timeline && showtimeline(cfg.timeline, cfg.statedir) < 0 && code == EXOK)
		code = EXFAIL;
	unguard();
	if (sig) {
		/* a signal during the notifications only cuts them short */
		signal(sig, SIG_DFL);
		raise(sig);
	}
	return code;
}
