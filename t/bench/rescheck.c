/*
 * rescheck -- the cost of one full resource check: every reading the gates
 * take (CPU ticks, memory, free disk, load, CPU and memory pressure), timed
 * over many rounds.  Linked with res.c alone.
 *
 *   cc -O2 -I../.. -o rescheck rescheck.c ../../res.c && ./rescheck [rounds]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "dagrun.h"

/* res.c's neighbours, unused here */
const char *argv0 = "rescheck";
void
fatal(const char *fmt, ...)
{
	(void)fmt;
	exit(2);
}

int
main(int argc, char **argv)
{
	struct timespec a, b;
	long long used, limit, busy, total, disk = 0;
	double l1, p = 0;
	int run, i, n = argc > 1 ? atoi(argv[1]) : 20000;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < n; i++) {
		rescputicks(&busy, &total);
		resmem(&used, &limit);
		disk += resdiskfree(".");
		resload(&l1, &run);
		p += respressure("cpu") + respressure("memory");
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.2f us per full check (%d rounds)\n",
	    ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n, n);
	return disk < 0 || p < -1e9;
}
