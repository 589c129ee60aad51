/* -s and -t: the journal read back, as text for people and scripts, and
 * as a timeline */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "dagrun.h"

static const char *const statenames[NSTATES] = {
	"waiting", "ready", "calibrating", "running", "suspended", "ok", "failed", "timeout",
	"cancelled", "skipped",
};

/* one job of the run as the journal tells it */
struct jobrec {
	char *name;
	int state, attempt, status;
	long pid;		/* of the last start */
	long slurm;		/* the Slurm job id of the last start, 0 none */
	unsigned long long hash, okhash;	/* of the last start, of the last success */
	int okrun;		/* the run it last succeeded in, 0 never */
	int run;		/* the run of its last start */
	double start, end;	/* wall clock of the last attempt, end 0 not yet */
	double dur;
	int lane;		/* for the timeline */
	struct attempt {
		double start, end;
		int state, attempt, status;
	} *att;
	int natt;
};

static struct jobrec *recs;
static int nrecs, caprecs;
static int *slots;
static size_t nslots;

static size_t
hash(const char *s)
{
	size_t h = 2166136261UL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619UL;
	return h;
}

static struct jobrec *
find(const char *name)
{
	size_t i, j;
	int *old;

	if (2 * (size_t)(nrecs + 1) > nslots) {
		old = slots;
		j = nslots;
		nslots = nslots ? 2 * nslots : 1024;
		slots = xcalloc(nslots, sizeof(*slots));
		while (j--)
			if (old[j]) {
				for (i = hash(recs[old[j] - 1].name) & (nslots - 1); slots[i];
				    i = (i + 1) & (nslots - 1))
					;
				slots[i] = old[j];
			}
		free(old);
	}
	for (i = hash(name) & (nslots - 1); slots[i]; i = (i + 1) & (nslots - 1))
		if (!strcmp(recs[slots[i] - 1].name, name))
			return &recs[slots[i] - 1];
	if (nrecs == caprecs)
		recs = xrealloc(recs, (caprecs = caprecs ? 2 * caprecs : 256) * sizeof(*recs));
	memset(&recs[nrecs], 0, sizeof(recs[nrecs]));
	recs[nrecs].name = strcpy(xmalloc(strlen(name) + 1), name);	/* freed again */
	recs[nrecs].state = SWAITING;
	recs[nrecs].status = -1;
	slots[i] = ++nrecs;
	return &recs[nrecs - 1];
}

static int
stateof(const char *s)
{
	int i;

	for (i = 0; i < NSTATES; i++)
		if (!strcmp(statenames[i], s))
			return i;
	return -1;
}

/* what the last run's records say */
static struct {
	long pid;
	int total, done, code;
	double t0, t1, secs;
} runinfo;

/* split a record at tabs into f[], up to n fields; returns the count */
static int
fields(char *s, char **f, int n)
{
	int k = 0;

	while (k < n) {
		f[k++] = s;
		if (!(s = strchr(s, '\t')))
			break;
		*s++ = 0;
	}
	return k;
}

static void
addattempt(struct jobrec *r, double end, int state, int status)
{
	struct attempt *a;

	r->att = xrealloc(r->att, (r->natt + 1) * sizeof(*r->att));
	a = &r->att[r->natt++];
	a->start = r->start;
	a->end = end;
	a->state = state;
	a->attempt = r->attempt;
	a->status = status;
}

/* forget what was read before */
static void
resetrecs(void)
{
	int i;

	for (i = 0; i < nrecs; i++) {
		free(recs[i].name);
		free(recs[i].att);
	}
	nrecs = 0;
	if (nslots)
		memset(slots, 0, nslots * sizeof(*slots));
	memset(&runinfo, 0, sizeof(runinfo));
}

/* the whole journal in dir, read afresh: NUL-ended, or NULL */
static char *
slurp(const char *dir)
{
	char path[4096], *buf;
	size_t len = 0, cap = 1 << 16;
	ssize_t k;
	int fd;

	resetrecs();
	snprintf(path, sizeof(path), "%s/journal", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return NULL;
	buf = xmalloc(cap + 1);
	while ((k = read(fd, buf + len, cap - len)) > 0)
		if ((len += k) == cap)
			buf = xrealloc(buf, (cap *= 2) + 1);
	close(fd);
	buf[len] = 0;
	return buf;
}

/* read the journal from the last run record; 0, or -1 with no run */
static int
readjournal(const char *dir)
{
	char *buf, *line, *nl, *f[8];
	int n, st;
	double t;
	struct jobrec *r;
	char *last = NULL;

	if (!(buf = slurp(dir)))
		return -1;
	/* the last run; a torn last line (no newline) is ignored */
	for (line = buf; (nl = strchr(line, '\n')); line = nl + 1)
		if (!strncmp(strchr(line, '\t') ? strchr(line, '\t') + 1 : line, "run\t", 4) &&
		    strchr(line, '\t') < nl)
			last = line;
	if (!last) {
		free(buf);
		return -1;
	}
	for (line = last; (nl = strchr(line, '\n')); line = nl + 1) {
		*nl = 0;
		n = fields(line, f, 8);
		if (n < 2)
			continue;
		t = strtod(f[0], NULL);
		if (!strcmp(f[1], "run") && n >= 4) {
			runinfo.pid = strtol(f[2], NULL, 10);
			runinfo.total = atoi(f[3]);
			runinfo.t0 = t;
		} else if (!strcmp(f[1], "spawn") && n >= 4) {
			runinfo.total += atoi(f[3]);
		} else if (!strcmp(f[1], "expand") && n >= 4) {
			runinfo.total += atoi(f[3]) - 1;
		} else if (!strcmp(f[1], "start") && n >= 4) {
			r = find(f[2]);
			r->state = SRUNNING;
			r->attempt = atoi(f[3]);
			r->start = t;
			r->end = 0;
			r->slurm = 0;
		} else if (!strcmp(f[1], "slurm") && n >= 5) {
			r = find(f[2]);
			if (r->attempt == atoi(f[3]))
				r->slurm = strtol(f[4], NULL, 10);
		} else if (!strcmp(f[1], "end") && n >= 7 && (st = stateof(f[4])) >= 0) {
			r = find(f[2]);
			r->state = st;
			r->attempt = atoi(f[3]);
			r->status = atoi(f[5]);
			r->dur = strtod(f[6], NULL);
			r->end = t;
			if (r->attempt > 0)
				addattempt(r, t, st, r->status);
		} else if (!strcmp(f[1], "retry") && n >= 3) {
			find(f[2])->state = SREADY;
		} else if ((!strcmp(f[1], "suspend") || !strcmp(f[1], "resume")) && n >= 3) {
			find(f[2])->state = f[1][0] == 's' ? SSUSPENDED : SRUNNING;
		} else if (!strcmp(f[1], "resumed") && n >= 3) {
			find(f[2])->state = SOK;
		} else if (!strcmp(f[1], "calibrate") && n >= 3) {
			find(f[2])->state = SCALIBRATING;
		} else if (!strcmp(f[1], "done") && n >= 4) {
			runinfo.done = 1;
			runinfo.code = atoi(f[2]);
			runinfo.secs = strtod(f[3], NULL);
		}
		runinfo.t1 = t;
	}
	free(buf);
	return 0;
}

/* is the state directory's lock held by a live dagrun? */
static long
holder(const char *dir)
{
	char path[4096];
	struct flock fl;
	int fd;

	snprintf(path, sizeof(path), "%s/lock", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type == F_UNLCK) {
		close(fd);
		return 0;
	}
	close(fd);
	return fl.l_pid;
}

int
showstatus(const char *dir, int tsv)
{
	int count[NSTATES], i, s, seen = 0;
	long pid = holder(dir);
	double now = wall();
	const char *what;
	struct jobrec *r;

	if (readjournal(dir) < 0) {
		warn("%s/journal: no run recorded", dir);
		return EXFAIL;
	}
	memset(count, 0, sizeof(count));
	for (i = 0; i < nrecs; i++)
		count[recs[i].state]++;
	count[SWAITING] += runinfo.total > nrecs ? runinfo.total - nrecs : 0;
	what = runinfo.done ? "ended" : pid && pid == runinfo.pid ? "running" : "stopped";
	if (tsv) {
		printf("run\t%ld\t%s\t%d\t%.3f\t%d\n", runinfo.pid, what,
		    runinfo.done ? runinfo.code : -1,
		    runinfo.done ? runinfo.secs : (*what == 'r' ? now : runinfo.t1) - runinfo.t0,
		    runinfo.total);
		for (s = 0; s < NSTATES; s++)
			printf("count\t%s\t%d\n", statenames[s], count[s]);
		for (i = 0; i < nrecs; i++) {
			r = &recs[i];
			if (r->state == SRUNNING || r->state == SCALIBRATING || r->state == SSUSPENDED)
				printf("job\t%s\t%s\t%d\t-1\t%.3f\n", r->name, statenames[r->state],
				    r->attempt, (*what == 'r' ? now : runinfo.t1) - r->start);
			else if (r->state == SFAILED || r->state == STIMEOUT)
				printf("job\t%s\t%s\t%d\t%d\t%.3f\n", r->name, statenames[r->state],
				    r->attempt, r->status, r->dur);
		}
		return EXOK;
	}
	if (runinfo.done)
		printf("run %ld ended: exit %d after %.2fs\n", runinfo.pid, runinfo.code, runinfo.secs);
	else if (*what == 'r')
		printf("run %ld running for %.0fs\n", runinfo.pid, now - runinfo.t0);
	else
		printf("run %ld stopped without finishing, %.0fs after its start (killed?)\n",
		    runinfo.pid, runinfo.t1 - runinfo.t0);
	printf("%d jobs:", runinfo.total);
	for (s = 0; s < NSTATES; s++)
		if (count[s])
			printf("%s %d %s", seen++ ? "," : "", count[s], statenames[s]);
	putchar('\n');
	for (i = 0; i < nrecs; i++) {
		r = &recs[i];
		if (*what == 'r' && (r->state == SRUNNING || r->state == SCALIBRATING ||
		    r->state == SSUSPENDED)) {
			printf("  %-11s %6.1fs  %s%s", statenames[r->state], now - r->start, r->name,
			    r->attempt > 1 ? " (retry)" : "");
			if (r->slurm)
				printf(" (Slurm job %ld)", r->slurm);
			putchar('\n');
		} else if (r->state == SFAILED || r->state == STIMEOUT)
			printf("  %-11s exit %d  %s (attempt %d)\n", statenames[r->state], r->status,
			    r->name, r->attempt);
	}
	return EXOK;
}

/* a name for JSON or XML: valid UTF-8 kept, other bytes as U+FFFD */
static void
putname(FILE *f, const char *s, int json)
{
	const unsigned char *p = (const unsigned char *)s;
	int n, i;

	for (; *p; p++) {
		n = *p < 0x80 ? 0 : (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2 :
		    (*p & 0xf8) == 0xf0 ? 3 : -1;
		for (i = 1; i <= n; i++)
			if ((p[i] & 0xc0) != 0x80)
				n = -1;
		if (n < 0 || (n == 1 && *p < 0xc2)) {
			fputs(json ? "\\ufffd" : "\xef\xbf\xbd", f);
			continue;
		}
		if (n) {
			fwrite(p, 1, n + 1, f);
			p += n;
		} else if (json && (*p == '"' || *p == '\\'))
			fprintf(f, "\\%c", *p);
		else if (json && *p < 32)
			fprintf(f, "\\u%04x", *p);
		else if (!json && *p == '&')
			fputs("&amp;", f);
		else if (!json && *p == '<')
			fputs("&lt;", f);
		else if (!json && *p == '>')
			fputs("&gt;", f);
		else if (!json && *p == '"')
			fputs("&quot;", f);
		else if (!json && *p < 32)
			fputc(' ', f);
		else
			fputc(*p, f);
	}
}

/* the attempts, each on the first lane free when it starts */
struct bar {
	struct jobrec *r;
	struct attempt *a;
	int lane, critical;
};

static int
bystart(const void *x, const void *y)
{
	const struct bar *a = x, *b = y;

	return a->a->start < b->a->start ? -1 : a->a->start > b->a->start;
}

static struct bar *
lay(int *nbars, int *nlanes)
{
	struct bar *b;
	double *free_at = NULL;
	int i, k, n = 0, lanes = 0;

	for (i = 0; i < nrecs; i++)
		n += recs[i].natt;
	b = xcalloc(n ? n : 1, sizeof(*b));
	for (n = 0, i = 0; i < nrecs; i++)
		for (k = 0; k < recs[i].natt; k++) {
			b[n].r = &recs[i];
			b[n++].a = &recs[i].att[k];
		}
	qsort(b, n, sizeof(*b), bystart);
	for (i = 0; i < n; i++) {
		for (k = 0; k < lanes && free_at[k] > b[i].a->start + 1e-6; k++)
			;
		if (k == lanes) {
			free_at = xrealloc(free_at, (lanes + 1) * sizeof(*free_at));
			lanes++;
		}
		free_at[k] = b[i].a->end;
		b[i].lane = k;
	}
	free(free_at);
	*nbars = n;
	*nlanes = lanes;
	return b;
}

/* the record of node k's last attempt, or NULL */
static struct jobrec *
recof(int k)
{
	size_t i;

	if (!nslots)
		return NULL;
	for (i = hash(nodes[k].name) & (nslots - 1); slots[i]; i = (i + 1) & (nslots - 1))
		if (!strcmp(recs[slots[i] - 1].name, nodes[k].name))
			return &recs[slots[i] - 1];
	return NULL;
}

/* mark the critical path: back from the job that ended last, through the
 * prerequisite that ended last before it */
static void
critical(struct bar *b, int nb)
{
	struct jobrec *r, *best, *c;
	int i, k, p, q, m, node = -1, g;

	for (i = 0, r = NULL; i < nb; i++)
		if (!r || b[i].a->end > r->end)
			r = b[i].r;
	while (r) {
		r->lane = -2;	/* on the path */
		for (k = 0; k < nnodes && strcmp(nodes[k].name, r->name); k++)
			;
		if (k == nnodes)
			break;
		node = nodes[k].parent >= 0 ? nodes[k].parent : k;
		best = NULL;
		for (p = 0; p < nodes[node].npre; p++) {
			q = nodes[node].pre[p];
			g = fanout(q) && nodes[q].expanded;
			for (m = g ? nodes[q].first : q; m < (g ? nodes[q].first + nodes[q].njobs : q + 1);
			    m++)
				if ((c = recof(m)) && c->end && c->end <= r->start + 1e-3 &&
				    (!best || c->end > best->end))
					best = c;
		}
		r = best && best->lane != -2 ? best : NULL;
	}
	for (i = 0; i < nb; i++)
		b[i].critical = b[i].r->lane == -2 && b[i].a == &b[i].r->att[b[i].r->natt - 1];
}

static const char *
colour(int s)
{
	return s == SOK ? "#4caf50" : s == SFAILED ? "#e53935" : s == STIMEOUT ? "#fb8c00" :
	    "#9e9e9e";
}

static void
svg(FILE *f, struct bar *b, int nb, int lanes)
{
	double span = runinfo.t1 - runinfo.t0, step, x, w, sc;
	int W = 1000, L = 60, H = 18, top = 40, i, h = top + lanes * H + 44;

	if (span <= 0)
		span = 1e-3;
	sc = W / span;
	/* ticks 1, 2 or 5 times a power of ten apart, at most ten of them */
	for (i = 0, step = 1e-3; span / step > 10; i++)
		step *= i % 3 == 1 ? 2.5 : 2;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
	    "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"11\">\n"
	    "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
	    "<text x=\"%d\" y=\"20\" font-size=\"14\">dagrun: %d jobs in %.2fs"
	    " (exit %d); outlined: the critical path</text>\n",
	    W + L + 20, h, W + L + 20, h, L, nrecs, span, runinfo.code);
	for (x = 0; x <= span + 1e-9; x += step) {
		fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n",
		    L + x * sc, top - 5, L + x * sc, top + lanes * H);
		fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%gs</text>\n",
		    L + x * sc, top + lanes * H + 15, x);
	}
	for (i = 0; i < lanes; i++)
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d</text>\n", L - 6,
		    top + i * H + H - 5, i + 1);
	for (i = 0; i < nb; i++) {
		x = L + (b[i].a->start - runinfo.t0) * sc;
		w = (b[i].a->end - b[i].a->start) * sc;
		if (w < 1)
			w = 1;
		fprintf(f, "<rect class=\"bar %s%s\" x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" "
		    "fill=\"%s\"%s><title>", statenames[b[i].a->state],
		    b[i].critical ? " critical" : "", x, top + b[i].lane * H, w, H - 3,
		    colour(b[i].a->state), b[i].critical ? " stroke=\"black\" stroke-width=\"2\"" : "");
		putname(f, b[i].r->name, 0);
		fprintf(f, ": %s, exit %d, %.3fs, attempt %d</title></rect>\n",
		    statenames[b[i].a->state], b[i].a->status, b[i].a->end - b[i].a->start,
		    b[i].a->attempt);
		if (w >= 30) {
			/* the name, as much as fits */
			fprintf(f, "<svg x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\">"
			    "<text x=\"3\" y=\"%d\" fill=\"white\">", x, top + b[i].lane * H,
			    w - 2, H - 3, H - 7);
			putname(f, b[i].r->name, 0);
			fputs("</text></svg>\n", f);
		}
	}
	for (i = 0; i < 4; i++)
		fprintf(f, "<rect class=\"legend\" x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" "
		    "fill=\"%s\"/>"
		    "<text x=\"%d\" y=\"%d\">%s</text>\n", L + 330 + i * 80, h - 14,
		    colour(i == 0 ? SOK : i == 1 ? SFAILED : i == 2 ? STIMEOUT : SCANCELLED),
		    L + 344 + i * 80, h - 5, i == 0 ? "ok" : i == 1 ? "failed" : i == 2 ? "timeout" :
		    "cancelled");
	fprintf(f, "<text x=\"%d\" y=\"%d\">seconds since the start; rows: worker lanes</text>\n"
	    "</svg>\n", L, h - 5);
}

static void
json(FILE *f, struct bar *b, int nb)
{
	int i;

	fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", f);
	for (i = 0; i < nb; i++) {
		fputs(i ? ",\n{\"name\":\"" : "{\"name\":\"", f);
		putname(f, b[i].r->name, 1);
		fprintf(f, "\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.0f,\"dur\":%.0f,\"pid\":1,"
		    "\"tid\":%d,\"args\":{\"state\":\"%s\",\"exit\":%d,\"attempt\":%d,"
		    "\"critical\":%s}}", statenames[b[i].a->state],
		    (b[i].a->start - runinfo.t0) * 1e6, (b[i].a->end - b[i].a->start) * 1e6,
		    b[i].lane + 1, statenames[b[i].a->state], b[i].a->status, b[i].a->attempt,
		    b[i].critical ? "true" : "false");
	}
	fputs("\n]}\n", f);
}

int
showtimeline(const char *file, const char *dir)
{
	char tmp[4096];
	struct bar *b;
	int nb, lanes, fd;
	size_t n = strlen(file);
	FILE *f;

	if (readjournal(dir) < 0)
		return -1;
	b = lay(&nb, &lanes);
	critical(b, nb);
	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0 ||
	    !(f = fdopen(fd, "w"))) {
		warn("%s:", tmp);
		free(b);
		return -1;
	}
	if (n > 5 && !strcmp(file + n - 5, ".json"))
		json(f, b, nb);
	else
		svg(f, b, nb, lanes);
	free(b);
	if (fclose(f) != 0 || rename(tmp, file) < 0) {
		warn("%s:", file);
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* -r and the start of every run: what earlier runs say, all of them */
static int nrun_;		/* runs seen */

static void
readall(const char *dir)
{
	char *buf, *line, *nl, *f[8];
	struct jobrec *r;
	int n;

	if (!(buf = slurp(dir)))
		return;
	for (line = buf; (nl = strchr(line, '\n')); line = nl + 1) {
		*nl = 0;
		if ((n = fields(line, f, 8)) < 2)
			continue;
		if (!strcmp(f[1], "run") && n >= 4) {
			nrun_++;
			runinfo.pid = strtol(f[2], NULL, 10);
			runinfo.t0 = strtod(f[0], NULL);
			runinfo.done = 0;
		} else if (!strcmp(f[1], "done")) {
			runinfo.done = 1;
		} else if (!strcmp(f[1], "start") && n >= 5) {
			r = find(f[2]);
			r->attempt = atoi(f[3]);
			r->pid = strtol(f[4], NULL, 10);
			r->hash = n >= 6 ? strtoull(f[5], NULL, 16) : 0;
			r->start = strtod(f[0], NULL);
			r->state = SRUNNING;
			r->run = nrun_;
			r->slurm = 0;
			r->okrun = 0;	/* begun again: an earlier success no longer stands */
		} else if (!strcmp(f[1], "slurm") && n >= 5) {
			r = find(f[2]);
			if (r->attempt == atoi(f[3]))
				r->slurm = strtol(f[4], NULL, 10);
		} else if (!strcmp(f[1], "end") && n >= 5 && strcmp(f[3], "0")) {
			r = find(f[2]);
			r->state = stateof(f[4]);
			if (r->state == SOK && r->hash) {
				r->okhash = r->hash;
				r->okrun = nrun_;
			}
		} else if (!strcmp(f[1], "resumed") && n >= 3) {
			r = find(f[2]);
			if (r->okrun)
				r->okrun = nrun_;	/* still good, carried on */
			r->state = SOK;
		}
	}
	free(buf);
}

static struct jobrec *
lookup(const char *name)
{
	size_t i;

	if (!nslots)
		return NULL;
	for (i = hash(name) & (nslots - 1); slots[i]; i = (i + 1) & (nslots - 1))
		if (!strcmp(recs[slots[i] - 1].name, name))
			return &recs[slots[i] - 1];
	return NULL;
}

void
showprior(const char *dir)
{
	readall(dir);
}

int
showdone(const char *name, unsigned long long hash)
{
	struct jobrec *r = lookup(name);

	return r && r->okrun && r->okhash == hash;
}

int
showattempts(const char *name)
{
	struct jobrec *r = lookup(name);

	return r && r->run == nrun_ && r->state != SOK ? r->attempt : 0;
}

int
showorphans(long *pg, double *start, const char **name, int max)
{
	int i, n = 0;

	if (runinfo.done || !nrun_)
		return 0;
	for (i = 0; i < nrecs && n < max; i++)
		if (recs[i].run == nrun_ && recs[i].state == SRUNNING && recs[i].pid > 0) {
			pg[n] = recs[i].pid;
			start[n] = recs[i].start;
			name[n++] = recs[i].name;
		}
	return n;
}

int
showslurm(long *ids, int max)
{
	int i, n = 0;

	if (runinfo.done || !nrun_)
		return 0;
	for (i = 0; i < nrecs && n < max; i++)
		if (recs[i].run == nrun_ && recs[i].state == SRUNNING && recs[i].slurm > 0)
			ids[n++] = recs[i].slurm;
	return n;
}
