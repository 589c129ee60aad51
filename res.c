#if defined(__linux__)
#define _GNU_SOURCE
#include <sched.h>
#endif
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#if defined(__linux__)
/* the tightest cgroup v2 cpu.max quota on the way to the root, or 0 */
static int
cgroupcpus(void)
{
	char buf[4096], path[4096], max[256], *p, *nl;
	long long quota, period;
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
		    sscanf(max, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0) {
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
