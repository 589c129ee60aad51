/* floor.c -- the cost floor of running N commands, K at once: posix_spawn
 * and waitpid, nothing else.  Prints the wall seconds.
 *
 *   floor K N PROG [ARG]
 */
#define _POSIX_C_SOURCE 200809L
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	int k, n, started = 0, alive = 0, st, bad = 0;
	char *args[3];
	double t0;
	pid_t pid;

	if (argc < 4)
		return 2;
	k = atoi(argv[1]);
	n = atoi(argv[2]);
	args[0] = argv[3];
	args[1] = argc > 4 ? argv[4] : NULL;
	args[2] = NULL;
	t0 = now();
	while (started < n || alive) {
		while (started < n && alive < k) {
			if (posix_spawn(&pid, argv[3], NULL, NULL, args, environ))
				return 1;
			started++;
			alive++;
		}
		if (wait(&st) > 0) {
			alive--;
			bad |= !WIFEXITED(st) || WEXITSTATUS(st);
		}
	}
	printf("%.4f\n", now() - t0);
	return bad;
}
