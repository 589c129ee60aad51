/* maxrss CMD [ARG...]: run CMD, its output to /dev/null, and print its
 * peak resident set in KiB.  Small and static on purpose: Linux keeps the
 * peak across exec, so whatever starts CMD must be smaller than CMD. */
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	struct rusage ru;
	int st, fd;
	pid_t pid;

	if (argc < 2)
		return 2;
	if ((pid = fork()) == 0) {
		if ((fd = open("/dev/null", O_WRONLY)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[1], argv + 1);
		_exit(127);
	}
	if (pid < 0 || wait4(pid, &st, 0, &ru) < 0)
		return 1;
	printf("%ld\n", ru.ru_maxrss);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
