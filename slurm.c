/* executor = slurm: a job runs through srun; the cluster is asked with
 * squeue and told with scancel, each a short command run to its end */
#define _POSIX_C_SOURCE 200809L
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dagrun.h"

extern char **environ;

static char *srun;		/* srun's path, once found */
static char self[PATH_MAX];	/* dagrun's own path: srun's --prolog */
static char tag[64];		/* --comment: the state directory's mark */
static int used;		/* a Slurm job started in this run */

/*
 * srun runs its --prolog on this machine once the cluster has given the
 * job its resources, with SLURM_JOB_ID set and the job's environment.
 * dagrun is its own prolog: it appends one record to the journal, so the
 * job id is there before the job's command starts.
 */
int
slurmprolog(void)
{
	const char *ctx = getenv("SLURM_SCRIPT_CONTEXT"), *dir = getenv("DAGRUN_STATE_DIR");
	const char *job = getenv("DAGRUN_JOB"), *att = getenv("DAGRUN_ATTEMPT");
	const char *id = getenv("SLURM_JOB_ID");
	char path[PATH_MAX], line[8192];
	struct timespec ts;
	int fd, n;

	if (!ctx || strcmp(ctx, "prolog_srun") || !dir || !job || !att || !id)
		return 0;
	if (strpbrk(job, "\t\n") || strspn(id, "0123456789") != strlen(id) || !*id)
		return 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof(line), "%.6f\tslurm\t%s\t%d\t%s\n",
	    ts.tv_sec + ts.tv_nsec / 1e9, job, atoi(att), id);
	snprintf(path, sizeof(path), "%s/journal", dir);
	if (n > 0 && (size_t)n < sizeof(line) &&
	    (fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)) >= 0) {
		if (write(fd, line, n) != n)
			n = -1;	/* the record is lost; the job runs all the same */
		close(fd);
	}
	return 1;
}

/*
 * Run argv to its end with its stdout and stderr into out (NUL-ended,
 * cut at cap); killed after limit seconds.  Its exit status, 128+N for a
 * signal, or -1 when it could not run.
 */
static int
capture(char **argv, char *out, size_t cap, double limit)
{
	posix_spawn_file_actions_t fa;
	struct pollfd pfd;
	size_t len = 0;
	double end = mono() + limit;
	char sink[512];
	int p[2], st, left;
	ssize_t r;
	pid_t pid;

	out[0] = 0;
	if (pipe(p) < 0)
		return -1;
	fcntl(p[0], F_SETFD, FD_CLOEXEC);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_adddup2(&fa, p[1], 2);
	posix_spawn_file_actions_addclose(&fa, p[1]);
	r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (r) {
		close(p[0]);
		errno = (int)r;
		return -1;
	}
	pfd.fd = p[0];
	pfd.events = POLLIN;
	for (;;) {
		left = (int)((end - mono()) * 1000);
		if (left <= 0) {
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			break;
		if (!(pfd.revents & (POLLIN | POLLHUP)))
			continue;
		if (len + 1 < cap)
			r = read(p[0], out + len, cap - 1 - len);
		else
			r = read(p[0], sink, sizeof(sink));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (len + 1 < cap)
			len += (size_t)r;
	}
	out[len] = 0;
	close(p[0]);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* the first line of s, for a message */
static const char *
firstline(char *s)
{
	s[strcspn(s, "\n")] = 0;
	return s;
}

/* the Slurm jobs of this state directory in the queue (marked by the
 * comment, or among ids), into found; how many, or -1 with the reason in
 * out when the cluster does not answer */
static int
queued(const long *ids, int nids, long *found, int max, char *out, size_t cap)
{
	char uid[32], *line, *nl, *sp;
	char *argv[] = {"squeue", "--noheader", "--user", uid, "--format=%i %k", NULL};
	long id;
	int i, n = 0;

	snprintf(uid, sizeof(uid), "%ld", (long)getuid());
	if (capture(argv, out, cap, 30) != 0)
		return -1;
	for (line = out; *line && n < max; line = nl ? nl + 1 : line + strlen(line)) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		id = strtol(line, &sp, 10);
		if (id <= 0 || *sp != ' ')
			continue;
		for (i = 0; i < nids && ids[i] != id; i++)
			;
		if (i < nids || !strcmp(sp + 1, tag))
			found[n++] = id;
	}
	return n;
}

/* prog found in PATH, into full (PATH_MAX); full, or NULL */
static char *
pathfind(const char *prog, char *full)
{
	const char *p = getenv("PATH"), *e;

	for (p = p ? p : "/usr/local/bin:/bin:/usr/bin"; ; p = e + 1) {
		if (!(e = strchr(p, ':')))
			e = p + strlen(p);
		snprintf(full, PATH_MAX, "%.*s%s%s", (int)(e - p), p, e > p ? "/" : "", prog);
		if (access(full, X_OK) == 0)
			return full;
		if (!*e)
			return NULL;
	}
}

const char *
slurmsetup(const char *stateabs, int node)
{
	static char out[4096], msg[4096 + 512];
	unsigned long long h = 14695981039346656037ULL;
	const char *s, *p;
	char full[PATH_MAX];
	long found[1];
	ssize_t k;

	for (s = stateabs; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	snprintf(tag, sizeof(tag), "dagrun:%016llx", h);
	if ((k = readlink("/proc/self/exe", self, sizeof(self) - 1)) > 0)
		self[k] = 0;
	else if (argv0[0] == '/')
		snprintf(self, sizeof(self), "%s", argv0);
	else if (!strchr(argv0, '/') && (p = pathfind(argv0, full)))
		snprintf(self, sizeof(self), "%s", p);
	if (node < 0)
		return NULL;
	if (!pathfind("srun", full)) {
		snprintf(msg, sizeof(msg), "%s: executor = slurm, but srun is not in PATH",
		    nodes[node].name);
		return msg;
	}
	srun = xstrdup(full);
	if (!*self) {
		snprintf(msg, sizeof(msg), "%s: executor = slurm: dagrun cannot find its own "
		    "path for srun --prolog", nodes[node].name);
		return msg;
	}
	if (queued(NULL, 0, found, 1, out, sizeof(out)) < 0) {
		snprintf(msg, sizeof(msg), "%s: executor = slurm, but the Slurm cluster does not "
		    "answer: %s", nodes[node].name, *out ? firstline(out) : strerror(errno));
		srun = NULL;
		return msg;
	}
	return NULL;
}

const char *
slurmsrun(void)
{
	return srun;
}

/* the whole number at or above x (x >= 0) */
static long
roundup(double x)
{
	long k = (long)x;

	return k + (x > k);
}

/* argv: job n's command through srun, with its name, cpus, mem, timeout
 * and slurm_args */
char **
slurmargv(int n, char **argv)
{
	static char **av, name[256], cpus[48], mem[48], tim[48], pro[PATH_MAX + 16], com[96];
	static int cap;
	struct node *nd = &nodes[n];
	int i, k = 0, na;
	size_t j;

	for (na = 0; argv[na]; na++)
		;
	if (cap < na + nd->nslurm + 16)
		av = xrealloc(av, (cap = na + nd->nslurm + 16) * sizeof(*av));
	av[k++] = "srun";
	snprintf(name, sizeof(name), "--job-name=%s", nd->name);
	for (j = 0; name[j]; j++)
		if ((unsigned char)name[j] < 32 || name[j] == 127)
			name[j] = '?';
	av[k++] = name;
	av[k++] = "--ntasks=1";
	av[k++] = "--quiet";
	snprintf(com, sizeof(com), "--comment=%s", tag);
	av[k++] = com;
	snprintf(pro, sizeof(pro), "--prolog=%s", self);
	av[k++] = pro;
	if (nd->cpus > 0) {
		snprintf(cpus, sizeof(cpus), "--cpus-per-task=%ld", roundup(nd->cpus));
		av[k++] = cpus;
	}
	if (nd->mem > 0) {
		snprintf(mem, sizeof(mem), "--mem=%lldM", (nd->mem + (1 << 20) - 1) >> 20);
		av[k++] = mem;
	}
	if (nd->timeout > 0) {
		/* Slurm counts minutes; dagrun ends the job at its timeout */
		snprintf(tim, sizeof(tim), "--time=%ld", roundup((nd->timeout + cfg.killgrace) / 60));
		av[k++] = tim;
	}
	for (i = 0; i < nd->nslurm; i++)
		av[k++] = nd->slurmargs[i];
	av[k++] = "--";
	for (i = 0; i < na; i++)
		av[k++] = argv[i];
	av[k] = NULL;
	used = 1;
	return av;
}

/*
 * srun ended job n with status, its stderr in fd: NULL when the job's own
 * command made it (srun says "task 0: Exited with exit code N", or no
 * word at all), else the reason Slurm gave (a cancel, a time limit, a
 * node failure, no resources) in buf.
 */
const char *
slurmlost(int fd, int status, char *buf, size_t cap)
{
	char tail[4096 + 1], *line, *nl, *why = NULL, *star = NULL;
	struct stat st;
	ssize_t r;
	off_t off;
	int own = 0;

	if (!status || fstat(fd, &st) < 0)
		return NULL;
	off = st.st_size > 4096 ? st.st_size - 4096 : 0;
	if ((r = pread(fd, tail, sizeof(tail) - 1, off)) < 0)
		return NULL;
	tail[r] = 0;
	for (line = tail; *line; line = nl ? nl + 1 : line + strlen(line)) {
		if ((nl = strchr(line, '\n')))
			*nl = 0;
		if (!strncmp(line, "srun: error: ", 13) && strstr(line, ": task ") &&
		    !strstr(line, "CANCELLED"))
			own = 1;
		else if (!strncmp(line, "slurmstepd", 10) && strstr(line, "*** ") && !star)
			star = line;	/* slurmstepd's reason: CANCELLED, TIME LIMIT... */
		else if ((!strncmp(line, "srun: error: ", 13) || !strncmp(line, "srun: fatal: ", 13)) &&
		    !strstr(line, "Exited with exit code"))
			why = line;
		if (!nl)
			break;
	}
	if (star || (why && !own)) {
		snprintf(buf, cap, "%s", star ? star : why);
		return buf;
	}
	if (own)
		return NULL;
	if (status == 1 || status >= 128) {
		/* srun's own failure says nothing of a task */
		snprintf(buf, cap, "srun exit %d and no word of the job's end", status);
		return buf;
	}
	return NULL;
}

/*
 * Cancel the Slurm jobs of this state directory still in the queue, and
 * wait until they have left it: those marked with its comment, and ids
 * (from the journal).  Used when a run begins, by the guard, and when a
 * run ends after cancelling Slurm jobs.  Quiet when there are none.
 */
void
slurmsweep(const long *ids, int nids, int always)
{
	static char out[1 << 16];
	enum { MAX = 4096 };
	static long found[MAX];
	char *argv[MAX + 4], num[MAX][24];
	struct timespec nap = {0, 200000000};
	double t0 = mono(), limit = cfg.killgrace + 60;
	int n, i, said = 0;

	if (!always && !used && !nids)
		return;
	if (!*tag)
		slurmsetup(".", -1);
	for (;;) {
		if ((n = queued(ids, nids, found, MAX, out, sizeof(out))) < 0) {
			logerror("squeue: %s: the Slurm jobs of this run may still be queued",
			    *out ? firstline(out) : strerror(errno));
			return;
		}
		if (!n)
			break;
		if (mono() - t0 >= limit) {
			logerror("Slurm job %ld is still in the queue %.0fs after scancel",
			    found[0], limit);
			return;
		}
		if (!said) {
			argv[0] = "scancel";
			argv[1] = "--quiet";
			for (i = 0; i < n; i++) {
				snprintf(num[i], sizeof(num[i]), "%ld", found[i]);
				argv[i + 2] = num[i];
				loginfo("Slurm job %ld of this state directory is still queued: scancel",
				    found[i]);
			}
			argv[n + 2] = NULL;
			if (capture(argv, out, sizeof(out), 30) != 0 && *out)
				logerror("scancel: %s", firstline(out));
			said = 1;
		}
		nanosleep(&nap, NULL);
	}
	if (said)
		loginfo("the Slurm jobs cancelled have left the queue after %.1fs", mono() - t0);
}
