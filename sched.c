#define _DEFAULT_SOURCE
#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/resource.h>
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
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dagrun.h"

extern char **environ;

struct job {
	int node, attempt;
	pid_t pid;
	int fd[2];	/* read ends of the stdout and stderr pipes, -1 closed */
	int pi[2];	/* their places in pfds */
	int log[2];	/* log files, opened at the first byte */
	int bol[2];	/* -v: at the beginning of a line */
	int killed;	/* we signalled it */
	int slot;	/* place in run */
	double t0;	/* monotonic start */
	double start;	/* wall clock start */
	struct job *next;	/* free list */
};

static struct job **run, *freejobs;
static int nrun, caprun;
static struct pollfd *pfds;
static struct job **powner;
static int npfd, cappfd;
static int selfpipe[2] = {-1, -1}, devnull = -1;
static volatile sig_atomic_t caught[65];
static int stopping;	/* start nothing new */
static int termsig;	/* the signal that ends the run */
static int paused;	/* SIGUSR1 */
static int blocked;	/* out of processes or descriptors until a job ends */
static int nbad;	/* failures that count against the run */
static double killat;	/* when SIGKILL follows SIGTERM, 0 none */
static char **baseenv;	/* environ without our own variables */
static int nbaseenv;
static char *stateabs;	/* absolute state_dir for DAGRUN_STATE_DIR */

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

/* the job's environment: ours, less what the node sets, plus DAGRUN_* */
static char **
jobenv(struct job *j)
{
	static char **env, node[512], job[512], attempt[32], state[PATH_MAX + 32];
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
		env[e++] = n->env[k];
	snprintf(node, sizeof(node), "DAGRUN_NODE=%s", n->name);
	snprintf(job, sizeof(job), "DAGRUN_JOB=%s", n->name);
	snprintf(attempt, sizeof(attempt), "DAGRUN_ATTEMPT=%d", j->attempt);
	snprintf(state, sizeof(state), "DAGRUN_STATE_DIR=%s", stateabs);
	env[e++] = node;
	env[e++] = job;
	env[e++] = attempt;
	env[e++] = state;
	env[e] = NULL;
	return env;
}

/* a growable byte buffer */
struct buf {
	char *s;
	size_t len, cap;
};

static void
bufadd(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap)
		b->s = xrealloc(b->s, b->cap = 2 * (b->len + n) + 256);
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = 0;
}

/* value single-quoted for the shell, unless nothing in it needs quoting */
static void
bufquote(struct buf *b, const char *s)
{
	const char *q;

	if (*s && !s[strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789_-+@%.,:/")]) {
		bufadd(b, s, strlen(s));
		return;
	}
	bufadd(b, "'", 1);
	while ((q = strchr(s, '\''))) {
		bufadd(b, s, q - s);
		bufadd(b, "'\\''", 4);
		s = q + 1;
	}
	bufadd(b, s, strlen(s));
	bufadd(b, "'", 1);
}

/* fill the templates of s[0..n) into b; quote: for the shell */
static void
fill(struct buf *b, int node, int attempt, const char *s, size_t n, int quote)
{
	const char *e, *start = nodes[node].cmd, *end = s + n;
	char num[32];
	size_t k;

	while (s < end) {
		k = strcspn(s, "{}");
		if (s + k > end)
			k = end - s;
		bufadd(b, s, k);
		s += k;
		if (s >= end)
			break;
		if (s + 1 < end && s[1] == s[0]) {
			bufadd(b, s, 1);
			s += 2;
			continue;
		}
		e = s + 1;
		while (e < end && ((*e >= 'a' && *e <= 'z') || *e == '_'))
			e++;
		if (*s == '{' && e < end && *e == '}' && (s == start || s[-1] != '$')) {
			const char *v = NULL;
			if (e - s - 1 == 4 && !memcmp(s + 1, "node", 4))
				v = nodes[node].name;
			else if (e - s - 1 == 7 && !memcmp(s + 1, "attempt", 7))
				v = (snprintf(num, sizeof(num), "%d", attempt), num);
			if (v) {
				if (quote)
					bufquote(b, v);
				else
					bufadd(b, v, strlen(v));
				s = e + 1;
				continue;
			}
		}
		bufadd(b, s, 1);
		s++;
	}
}

void
cmdexpand(int n, int attempt, char **out, size_t *cap)
{
	struct buf b = {*out, 0, *cap};

	bufadd(&b, "", 0);
	fill(&b, n, attempt, nodes[n].cmd, strlen(nodes[n].cmd), !nodes[n].direct);
	*out = b.s;
	*cap = b.cap;
}

/* where PATH finds prog; cached, since most graphs run few programs */
static const char *
findprog(const char *prog, int *err, int fresh)
{
	static struct { char *name, *path; } *cache;
	static int ncache, capcache;
	const char *path, *p, *e;
	char full[PATH_MAX];
	struct stat st;
	int i, why = ENOENT;

	if (strchr(prog, '/'))
		return prog;
	for (i = 0; i < ncache; i++)
		if (!strcmp(cache[i].name, prog))
			break;
	if (i < ncache && !fresh)
		return cache[i].path;
	if (!(path = getenv("PATH")) || !*path)
		path = "/usr/local/bin:/bin:/usr/bin";
	for (p = path; ; p = e + 1) {
		e = strchr(p, ':');
		if (!e)
			e = p + strlen(p);
		snprintf(full, sizeof(full), "%.*s%s%s", (int)(e - p), p, e > p ? "/" : "", prog);
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(full, X_OK) == 0)
				break;
			why = EACCES;
		}
		if (!*e) {
			*err = why;
			return NULL;
		}
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

/* argv for node n: direct words, or the shell with the command */
static char **
jobargv(int node, int attempt, struct buf *b)
{
	static char **argv;
	static size_t cap;
	static size_t *offs;
	struct node *n = &nodes[node];
	const char *s, *w, *sh;
	size_t k, na = 0, i;
	int direct = n->direct;

	b->len = 0;
	sh = n->shell ? n->shell : cfg.shell;
	for (s = direct ? n->cmd : sh; ; ) {
		s += strspn(s, " \t");
		if (!*s)
			break;
		k = strcspn(s, " \t");
		if (na + 4 > cap) {
			cap = 2 * cap + 16;
			argv = xrealloc(argv, cap * sizeof(*argv));
			offs = xrealloc(offs, cap * sizeof(*offs));
		}
		offs[na++] = b->len;
		if (direct)
			fill(b, node, attempt, s, k, 0);
		else
			bufadd(b, s, k);
		bufadd(b, "", 1);
		s += k;
	}
	if (!direct) {
		w = strpbrk(sh, " \t");
		if (!w || !w[strspn(w, " \t")]) {
			offs[na++] = b->len;
			bufadd(b, "-c", 3);
		}
		offs[na++] = b->len;
		fill(b, node, attempt, n->cmd, strlen(n->cmd), 1);
		bufadd(b, "", 1);
	}
	for (i = 0; i < na; i++)
		argv[i] = b->s + offs[i];
	argv[na] = NULL;
	return argv;
}

static void
pfdadd(struct job *j, int which)
{
	if (npfd == cappfd) {
		cappfd = cappfd ? cappfd * 2 : 64;
		pfds = xrealloc(pfds, cappfd * sizeof(*pfds));
		powner = xrealloc(powner, cappfd * sizeof(*powner));
	}
	pfds[npfd].fd = j->fd[which];
	pfds[npfd].events = POLLIN;
	pfds[npfd].revents = 0;
	powner[npfd] = j;
	j->pi[which] = npfd++;
}

static void
pfddel(struct job *j, int which)
{
	int i = j->pi[which];
	struct job *o;

	npfd--;
	if (i != npfd) {
		pfds[i] = pfds[npfd];
		o = powner[i] = powner[npfd];
		o->pi[o->fd[0] == pfds[i].fd ? 0 : 1] = i;
	}
	j->pi[which] = -1;
}

/* copy what the job wrote into its log (and, with -v, the console) */
static int
drain(struct job *j, int which)
{
	char buf[16384], *path;
	ssize_t r;

	for (;;) {
		r = read(j->fd[which], buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 || errno != EAGAIN;
		if (j->log[which] < 0) {
			path = logpath(j->node, which + 1);
			j->log[which] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
			if (j->log[which] < 0)
				logerror("%s: %s", path, strerror(errno));
		}
		if (j->log[which] >= 0 && write(j->log[which], buf, r) != r)
			logerror("%s: %s", logpath(j->node, which + 1), strerror(errno));
		if (cfg.verbose)
			logoutput(j->node, which + 1, buf, r, &j->bol[which]);
		if ((size_t)r < sizeof(buf))
			return 0;
	}
}

static void
closestream(struct job *j, int which)
{
	if (j->fd[which] >= 0) {
		if (j->pi[which] >= 0)
			pfddel(j, which);
		close(j->fd[which]);
		j->fd[which] = -1;
	}
	if (j->log[which] >= 0) {
		close(j->log[which]);
		j->log[which] = -1;
	}
}

/* a message from dagrun itself into the job's stderr log */
static void
jobmsg(struct job *j, const char *fmt, ...)
{
	char msg[PATH_MAX + 256], *path = logpath(j->node, 2);
	va_list ap;
	int fd, n;

	n = snprintf(msg, sizeof(msg), "%s: %s: ", argv0, nodes[j->node].name);
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof(msg) - n - 1, fmt, ap);
	va_end(ap);
	if ((size_t)n >= sizeof(msg) - 1)
		n = sizeof(msg) - 2;
	msg[n++] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
	if (fd < 0)
		return;
	if (write(fd, msg, n) != n)
		logerror("%s: %s", path, strerror(errno));
	close(fd);
}

static void
onskip(int n)
{
	logskip(n);
}

static void
killall(int sig)
{
	int i;

	for (i = 0; i < nrun; i++) {
		kill(-run[i]->pid, sig);
		run[i]->killed = 1;
	}
	if (sig == SIGTERM && cfg.killgrace > 0)
		killat = mono() + cfg.killgrace;
	else if (sig == SIGTERM)
		killall(SIGKILL);
	else
		killat = 0;
}

static void
stop(void)
{
	stopping = 1;
}

/* the job ended with status (128+n for signal n) */
static void
jobfinish(struct job *j, int status, const struct rusage *ru)
{
	struct jobinfo ji;
	int n = j->node, s;

	closestream(j, 0);
	closestream(j, 1);
	s = status == 0 ? SOK : j->killed ? SCANCELLED : SFAILED;
	memset(&ji, 0, sizeof(ji));
	ji.node = n;
	ji.state = s;
	ji.status = status;
	ji.attempt = j->attempt;
	ji.pid = j->pid;
	ji.start = j->start;
	ji.end = j->start + (mono() - j->t0);
	ji.allowed = s == SFAILED && nodes[n].allowfail;
	if (ru) {
		ji.cpu = ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 +
		    ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
		ji.maxrss = ru->ru_maxrss;
	}
	if (s == SFAILED && !ji.allowed)
		nbad++;
	logend(&ji);
	dagdone(n, s, onskip);
	if (s == SFAILED && !ji.allowed && cfg.onfail != FCONTINUE) {
		stop();
		if (cfg.onfail == FABORT && nrun)
			killall(SIGTERM);
	}
	j->next = freejobs;
	freejobs = j;
}

/* fork and exec for what posix_spawn cannot do (a working directory);
 * an exec failure comes back through a close-on-exec pipe */
static pid_t
forkexec(struct job *j, const char *path, char **argv, char **envp, int out, int err)
{
	const char *dir = nodes[j->node].dir;
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
	else if (r == sizeof(e) && e[1] == ENOENT)
		jobmsg(j, "%s: command not found", argv[0]);
	else if (r == sizeof(e))
		jobmsg(j, "cannot run '%s': %s", argv[0], strerror(e[1]));
	return pid;
}

/* start node n; 0 started or finished at once, -1 retry later */
static int
jobstart(int n)
{
	static struct buf b, shown;
	struct job *j;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	int out[2], err[2], e = 0, i;
	const char *path;
	char **argv, **envp;
	sigset_t none;

	if (mkpipe(out) < 0)
		return -1;
	if (mkpipe(err) < 0) {
		close(out[0]);
		close(out[1]);
		return -1;
	}
	if ((j = freejobs))
		freejobs = j->next;
	else
		j = xmalloc(sizeof(*j));
	memset(j, 0, sizeof(*j));
	j->node = n;
	j->attempt = 1;
	j->fd[0] = out[0];
	j->fd[1] = err[0];
	j->log[0] = j->log[1] = -1;
	j->pi[0] = j->pi[1] = -1;
	j->bol[0] = j->bol[1] = 1;
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	if (nodes[n].stale & 1)
		unlink(logpath(n, 1));
	if (nodes[n].stale & 2)
		unlink(logpath(n, 2));
	nodes[n].stale = 0;
	argv = jobargv(n, 1, &b);
	envp = jobenv(j);
	if (cfg.verbose)
		cmdexpand(n, 1, &shown.s, &shown.cap);
	j->t0 = mono();
	j->start = wall();
	path = findprog(argv[0], &e, 0);
	if (nodes[n].dir) {
		j->pid = forkexec(j, path ? path : argv[0], argv, envp, out[1], err[1]);
		e = j->pid < 0 ? errno : 0;
	} else if (path) {
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_adddup2(&fa, devnull, 0);
		posix_spawn_file_actions_adddup2(&fa, out[1], 1);
		posix_spawn_file_actions_adddup2(&fa, err[1], 2);
		posix_spawnattr_init(&at);
		sigemptyset(&none);
		posix_spawnattr_setsigmask(&at, &none);
		posix_spawnattr_setpgroup(&at, 0);
		posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
		for (i = 0; i < 2; i++) {
			e = posix_spawn(&j->pid, path, &fa, &at, argv, envp);
			if (e != ENOENT || i || !(path = findprog(argv[0], &e, 1)))
				break;
		}
		posix_spawn_file_actions_destroy(&fa);
		posix_spawnattr_destroy(&at);
	}
	close(out[1]);
	close(err[1]);
	if (e == EAGAIN || e == ENOMEM || e == EMFILE || e == ENFILE) {
		close(out[0]);
		close(err[0]);
		j->next = freejobs;
		freejobs = j;
		errno = e;
		return -1;
	}
	if (nrun == caprun)
		run = xrealloc(run, (caprun = caprun ? caprun * 2 : 64) * sizeof(*run));
	if (e || !path) {
		if (!e)
			e = ENOENT;
		if (e == ENOENT)
			jobmsg(j, "%s: command not found", argv[0]);
		else
			jobmsg(j, "cannot run '%s': %s", argv[0], strerror(e));
		j->pid = 0;
		logstart(n, 1, 0, shown.s);
		jobfinish(j, e == ENOENT ? 127 : 126, NULL);
		return 0;
	}
	pfdadd(j, 0);
	pfdadd(j, 1);
	j->slot = nrun;
	run[nrun++] = j;
	logstart(n, 1, j->pid, shown.s);
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
		if (i == nrun)
			continue;
		j = run[i];
		run[i] = run[--nrun];
		run[i]->slot = i;
		for (i = 0; i < 2; i++)
			if (j->fd[i] >= 0)
				drain(j, i);
		status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
		blocked = 0;
		jobfinish(j, status, &ru);
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

static void
launch(void)
{
	int n;

	while (!stopping && !paused && !blocked && (!cfg.jobs || nrun < cfg.jobs)) {
		if ((n = dagpop()) < 0)
			return;
		if (jobstart(n) < 0) {
			if (!nrun) {
				/* nothing will free a process or descriptor: give up */
				logerror("cannot start %s: %s", nodes[n].name, strerror(errno));
				warn("cannot start %s:", nodes[n].name);
				nbad++;
				dagdone(n, SFAILED, onskip);
				stop();
				return;
			}
			dagpush(n);
			if (!blocked)
				loginfo("cannot start a job now (%s): waiting for one to end",
				    strerror(errno));
			blocked = 1;
		}
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
	logstatus(nrun, nrun ? run[o]->node : -1, nrun ? mono() - run[o]->t0 : 0);
}

int
schedrun(void)
{
	double t0 = mono(), now;
	int timeout, r, i, code;

	if (lockacquire(cfg.statedir) < 0)
		return EXLOCK;
	closeinherited();
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0)
		fatal("/dev/null:");
	envsetup();
	fdlimit();
	logopen(cfg.statedir);
	loghistory(cfg.statedir);
	sigsetup();
	pfds = xmalloc((cappfd = 64) * sizeof(*pfds));
	powner = xmalloc(cappfd * sizeof(*powner));
	pfds[0].fd = selfpipe[0];
	pfds[0].events = POLLIN;
	powner[0] = NULL;
	npfd = 1;
	dagstart();
	logrunstart(dagtotal());
	for (;;) {
		launch();
		if (!nrun && (stopping || !dagnready()))
			break;
		status();
		logflush();
		now = mono();
		timeout = -1;
		if (killat)
			timeout = killat <= now ? 0 : (int)((killat - now) * 1000) + 1;
		if (logdirty() && (timeout < 0 || timeout > 500))
			timeout = 500;
		if (nrun && logtty() && (timeout < 0 || timeout > 1000))
			timeout = 1000;
		r = poll(pfds, npfd, timeout);
		if (r < 0 && errno != EINTR)
			fatal("poll:");
		if (r > 0) {
			for (i = npfd - 1; i >= 1; i--) {
				struct job *j = powner[i];
				int w = j->pi[0] == i ? 0 : 1;
				if (pfds[i].revents && drain(j, w))
					closestream(j, w);
			}
		}
		if (r > 0 && pfds[0].revents) {
			onsignals();
			reap();
		}
		if (killat && mono() >= killat)
			killall(SIGKILL);
	}
	if (stopping)
		dagcancel(SCANCELLED, onskip);
	code = termsig ? 128 + termsig : nbad || dagcount[SSKIPPED] || dagcount[SCANCELLED] ? EXFAIL : EXOK;
	logrunend(code, mono() - t0);
	logclose();
	if (termsig) {
		signal(termsig, SIG_DFL);
		raise(termsig);
	}
	return code;
}
