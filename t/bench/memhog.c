/*
 * memhog -- take SIZE MiB, touching it page by page over GROW seconds, hold
 * it for HOLD seconds, exit.  The load of the memory benchmark.
 *
 *   memhog SIZE_MIB GROW_S HOLD_S
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void
nap(double s)
{
	struct timespec ts;

	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

int
main(int argc, char **argv)
{
	size_t size, page = (size_t)sysconf(_SC_PAGESIZE), i, step;
	double grow, hold;
	char *p;
	int k;

	if (argc != 4)
		return 2;
	size = (size_t)atol(argv[1]) << 20;
	grow = atof(argv[2]);
	hold = atof(argv[3]);
	if (!(p = malloc(size)))
		return 1;
	/* 50 slices over the growth time */
	step = size / 50;
	for (k = 0; k < 50; k++) {
		for (i = k * step; i < (size_t)(k + 1) * step && i < size; i += page)
			p[i] = 1;
		nap(grow / 50);
	}
	nap(hold);
	return p[0] == 1 ? 0 : 1;
}
