#if defined(__linux__)
#define _GNU_SOURCE
#include <sched.h>
#endif
#if defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__) || defined(__APPLE__)
#define BSD_SYSCTL 1
#include <sys/types.h>
#include <sys/sysctl.h>
#else
#define _POSIX_C_SOURCE 200809L	/* the BSDs hide sysctl and getloadavg under it */
#endif
#include <sys/statvfs.h>
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dagrun.h"

/* DAGRUN_SYSROOT prefixes every /proc and /sys path, so tests can supply
 * fixture files */
const char *
resroot(void)
{
	static const char *root;

	if (!root) {
		root = getenv("DAGRUN_SYSROOT");
		if (!root)
			root = "";
	}
	return root;
}

/* read a small file under the sysroot into buf; length or -1 */
static ssize_t
readsys(const char *path, char *buf, size_t cap)
{
	char full[4096];
	ssize_t n, len = 0;
	int fd;

	snprintf(full, sizeof(full), "%s%s", resroot(), path);
	if ((fd = open(full, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	while ((size_t)len < cap - 1) {
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	buf[len] = 0;
	return len;
}

/* up to n whole numbers separated by blanks from s into v; how many
 * (the reading stops at anything else) */
static int
nums(const char *s, long long *v, int n)
{
	char *e;
	int k;

	for (k = 0; k < n; k++, s = e) {
		s += strspn(s, " \t");
		if (*s < '0' || *s > '9')
			break;
		v[k] = strtoll(s, &e, 10);
	}
	return k;
}

#if defined(__linux__)
/* the tightest cgroup v2 cpu.max quota on the way to the root, or 0 */
static int
cgroupcpus(void)
{
	char buf[4096], path[4096], max[256], *p, *nl;
	long long quota, period, v[2];
	int best = 0, n;

	if (readsys("/proc/self/cgroup", buf, sizeof(buf)) < 0)
		return 0;
	for (p = buf; p && strncmp(p, "0::", 3); p = strchr(p, '\n'), p = p ? p + 1 : p)
		;
	if (!p)
		return 0;
	p += 3;
	if ((nl = strchr(p, '\n')))
		*nl = 0;
	for (;;) {
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s%scpu.max", p,
		    p[strlen(p) ? strlen(p) - 1 : 0] == '/' ? "" : "/");
		if (readsys(path, max, sizeof(max)) > 0 &&
		    nums(max, v, 2) == 2 && (quota = v[0]) > 0 && (period = v[1]) > 0) {
			n = (int)((quota + period - 1) / period);
			if (!best || n < best)
				best = n;
		}
		if (!*p || !strcmp(p, "/"))
			break;
		nl = strrchr(p, '/');
		if (nl == p)
			p[1] = 0;
		else if (nl)
			*nl = 0;
		else
			break;
	}
	return best;
}
#endif

int
rescpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__linux__)
	cpu_set_t set;
	int q;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		n = CPU_COUNT(&set);
	q = cgroupcpus();
	if (q > 0 && q < n)
		n = q;
#endif
	return n > 0 ? (int)n : 1;
}

/* the first number after key in a "key value" text, or -1 */
static long long
field(const char *text, const char *key)
{
	const char *p = text;
	size_t n = strlen(key);

	while ((p = strstr(p, key))) {
		if ((p == text || p[-1] == '\n') && (p[n] == ':' || p[n] == ' ' || p[n] == '='))
			return strtoll(p + n + 1 + strspn(p + n + 1, " \t"), NULL, 10);
		p += n;
	}
	return -1;
}

#if defined(__linux__)
/* the cgroup with the tightest v2 memory.max on the way to the root, and
 * that limit; looked for again every few seconds, not at every check */
static const char *
cgroupmemdir(long long *limit)
{
	static char best[4096];
	static long long bestmax;
	static time_t when;
	char buf[4096], path[4096], val[64], *p, *nl;
	long long max;
	time_t now = time(NULL);

	if (when && now - when < 5) {
		*limit = bestmax;
		return *best ? best : NULL;
	}
	when = now;
	*best = 0;
	if (readsys("/proc/self/cgroup", buf, sizeof(buf)) < 0)
		return NULL;
	for (p = buf; p && strncmp(p, "0::", 3); p = strchr(p, '\n'), p = p ? p + 1 : p)
		;
	if (!p)
		return NULL;
	p += 3;
	if ((nl = strchr(p, '\n')))
		*nl = 0;
	while (*p && strcmp(p, "/")) {
		snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", p);
		if (readsys(path, val, sizeof(val)) > 0 && strncmp(val, "max", 3) &&
		    (max = strtoll(val, NULL, 10)) > 0 && (!*best || max < bestmax)) {
			snprintf(best, sizeof(best), "/sys/fs/cgroup%s/memory.current", p);
			bestmax = max;
		}
		if (!(nl = strrchr(p, '/')) || nl == p)
			break;
		*nl = 0;
	}
	*limit = bestmax;
	return *best ? best : NULL;
}

static int
cgroupmem(long long *used, long long *limit)
{
	const char *cur = cgroupmemdir(limit);
	char val[64];

	if (!cur || readsys(cur, val, sizeof(val)) <= 0)
		return -1;
	*used = strtoll(val, NULL, 10);
	return 0;
}
#endif

int
resmem(long long *used, long long *limit)
{
#if defined(__linux__)
	char buf[8192];
	long long total, avail, cu = 0, cl = 0;

	if (readsys("/proc/meminfo", buf, sizeof(buf)) <= 0)
		return -1;
	total = field(buf, "MemTotal");
	avail = field(buf, "MemAvailable");
	if (total <= 0 || avail < 0)
		return -1;
	*limit = total * 1024;
	*used = (total - avail) * 1024;
	if (cgroupmem(&cu, &cl) == 0 && cl < *limit) {
		*limit = cl;
		*used = cu;
	}
	return 0;
#elif defined(BSD_SYSCTL) && defined(__FreeBSD__)
	unsigned long phys;
	unsigned int freep, inact, pg;
	size_t n;

	n = sizeof(phys);
	if (sysctlbyname("hw.physmem", &phys, &n, NULL, 0) < 0)
		return -1;
	n = sizeof(freep);
	if (sysctlbyname("vm.stats.vm.v_free_count", &freep, &n, NULL, 0) < 0 ||
	    sysctlbyname("vm.stats.vm.v_inactive_count", &inact, &n, NULL, 0) < 0 ||
	    sysctlbyname("vm.stats.vm.v_page_size", &pg, &n, NULL, 0) < 0)
		return -1;
	*limit = (long long)phys;
	*used = *limit - ((long long)freep + inact) * pg;
	return 0;
#else
	(void)used;
	(void)limit;
	return -1;
#endif
}

/* cumulative busy and total CPU ticks */
int
rescputicks(long long *busy, long long *total)
{
#if defined(__linux__)
	char buf[512];
	long long v[8] = {0};

	if (readsys("/proc/stat", buf, sizeof(buf)) <= 0 || strncmp(buf, "cpu ", 4) ||
	    nums(buf + 4, v, 8) < 4)
		return -1;
	/* user nice system idle iowait irq softirq steal */
	*total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
	*busy = *total - v[3] - v[4];
	return 0;
#elif defined(BSD_SYSCTL) && defined(__FreeBSD__)
	long t[5];
	size_t n = sizeof(t);

	if (sysctlbyname("kern.cp_time", t, &n, NULL, 0) < 0)
		return -1;
	/* user nice sys intr idle */
	*total = t[0] + t[1] + t[2] + t[3] + t[4];
	*busy = *total - t[4];
	return 0;
#else
	(void)busy;
	(void)total;
	return -1;
#endif
}

int
resload(double *l1, int *runnable)
{
#if defined(__linux__)
	char buf[256];

	char *p, *e;
	long long r[1];

	if (readsys("/proc/loadavg", buf, sizeof(buf)) <= 0)
		return -1;
	*l1 = strtod(buf, &e);
	/* the 1, 5 and 15 minute averages, then runnable/total */
	if (e == buf || !(p = strchr(e + 1, ' ')) || !(p = strchr(p + 1, ' ')) ||
	    nums(p, r, 1) != 1)
		return -1;
	*runnable = (int)r[0];
	return 0;
#elif defined(BSD_SYSCTL)
	*runnable = -1;
	return getloadavg(l1, 1) == 1 ? 0 : -1;
#else
	(void)l1;
	(void)runnable;
	return -1;
#endif
}

double
respressure(const char *what)
{
#if defined(__linux__)
	char path[64], buf[512], *p;

	snprintf(path, sizeof(path), "/proc/pressure/%s", what);
	if (readsys(path, buf, sizeof(buf)) <= 0 || strncmp(buf, "some ", 5) ||
	    !(p = strstr(buf, "avg10=")))
		return -1;
	return strtod(p + 6, NULL);
#else
	(void)what;
	return -1;
#endif
}

long long
resdiskfree(const char *path)
{
	struct statvfs sv;

	if (statvfs(path, &sv) < 0)
		return -1;
	return (long long)sv.f_bavail * (long long)sv.f_frsize;
}

long long
resrss(long pid)
{
#if defined(__linux__)
	char path[64], buf[128];
	long long pages[2];

	snprintf(path, sizeof(path), "/proc/%ld/statm", pid);
	if (readsys(path, buf, sizeof(buf)) <= 0 || nums(buf, pages, 2) != 2)
		return -1;
	return pages[1] * sysconf(_SC_PAGESIZE);
#else
	(void)pid;
	return -1;
#endif
}

double
resstarted(long pid)
{
#if defined(__linux__)
	static char buf[1 << 16];
	char path[64], *p, *line;
	long long ticks;
	double boot = -1;
	int i;

	if (readsys("/proc/stat", buf, sizeof(buf)) <= 0)
		return -1;
	for (line = buf; line; line = (p = strchr(line, '\n')) ? p + 1 : NULL)
		if (!strncmp(line, "btime ", 6))
			boot = strtod(line + 6, NULL);
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (boot < 0 || readsys(path, buf, sizeof(buf)) <= 0 || !(p = strrchr(buf, ')')))
		return -1;
	/* field 22, counted after the command name's closing parenthesis */
	for (i = 3, p++; i < 22 && p; i++)
		p = strchr(p + 1, ' ');
	if (!p || nums(p, &ticks, 1) != 1)
		return -1;
	return boot + (double)ticks / sysconf(_SC_CLK_TCK);
#else
	(void)pid;
	return -1;
#endif
}

int
resgroupalive(long pg)
{
#if defined(__linux__)
	char path[300], buf[512], *p, st;
	struct dirent *e;
	long grp;
	long long v[2];
	DIR *d;
	ssize_t n;
	int alive = 0, fd;

	if (!(d = opendir("/proc")))
		return kill(-pg, 0) == 0;
	while (!alive && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		if (!(p = strrchr(buf, ')')))
			continue;
		/* state, ppid, pgrp after the command name; zombies are gone */
		p += strspn(p + 1, " ") + 1;
		st = *p;
		if (st && nums(p + 1, v, 2) == 2 && (grp = (long)v[1]) == pg && st != 'Z' &&
		    st != 'X')
			alive = 1;
	}
	closedir(d);
	return alive;
#else
	return kill(-pg, 0) == 0;
#endif
}

int
resjobs(const char *statedir, long *pg, int max)
{
#if defined(__linux__)
	char path[300], want[PATH_MAX + 32], *buf = NULL, *p;
	size_t cap = 0, len, wn;
	struct dirent *e;
	ssize_t r;
	long pid;
	int n = 0, fd;
	DIR *d;

	wn = (size_t)snprintf(want, sizeof(want), "DAGRUN_STATE_DIR=%s", statedir) + 1;
	if (!(d = opendir("/proc")))
		return -1;
	while (n < max && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		pid = strtol(e->d_name, NULL, 10);
		/* a job leads its own process group */
		if (pid == getpid() || getpgid(pid) != pid)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/environ", e->d_name);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		for (len = 0;; len += r) {
			if (len + 4096 > cap)
				buf = xrealloc(buf, cap = 2 * cap + 8192);
			if ((r = read(fd, buf + len, cap - len - 1)) <= 0)
				break;
		}
		close(fd);
		buf[len] = 0;
		for (p = buf; p < buf + len; p += strlen(p) + 1)
			if (strlen(p) + 1 == wn && !memcmp(p, want, wn)) {
				pg[n++] = pid;
				break;
			}
	}
	closedir(d);
	free(buf);
	return n;
#else
	(void)statedir;
	(void)pg;
	(void)max;
	return -1;
#endif
}
