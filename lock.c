#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "dagrun.h"

/* mkdir -p */
static void
mkdirs(const char *dir)
{
	char *p, *s = xmalloc(strlen(dir) + 1);

	strcpy(s, dir);
	for (p = s + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(s, 0777) < 0 && errno != EEXIST)
			fatal("%s:", s);
		*p = '/';
	}
	if (mkdir(s, 0777) < 0 && errno != EEXIST)
		fatal("%s:", s);
	free(s);
}

/* an fcntl record lock, held until exit; the kernel drops it on crash,
 * so there is no stale lock to guess about */
int
lockacquire(const char *dir)
{
	struct flock fl;
	char path[4096], pid[32];
	int fd, n;

	mkdirs(dir);
	snprintf(path, sizeof(path), "%s/lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0)
		fatal("%s:", path);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(fd, F_SETLK, &fl) < 0) {
		if (errno != EACCES && errno != EAGAIN)
			fatal("%s: lock:", path);
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_whence = SEEK_SET;
		if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
			warn("%s: held by process %ld", path, (long)fl.l_pid);
		else
			warn("%s: held by another dagrun", path);
		exit(EXLOCK);
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, n, 0) != n)
		fatal("%s:", path);
	return fd;
}
