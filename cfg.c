#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "dagrun.h"

struct config cfg;
struct node *nodes;
int nnodes;

static int capnodes;
static jmp_buf *errjmp;		/* reading a spawn file: errors return here */
static const char *errfile;
static int errline;		/* of the error that returned */
static int spawnstart;		/* the first node of the spawn file read now */
static char errbuf[1024];
static int *htab;		/* node indices, -1 empty */
static size_t hcap;
static struct var *defs;	/* -D */
static struct var *vars;	/* [vars], newest first */
static char *text;		/* the config file, which names and values point into */
static unsigned runseen, resseen;	/* keys given in [run], [resources] */
static struct plugin *capacity;	/* [run] capacity, once a capacity key is read */

struct lexer {
	char *p, *end;
	int line;
	int mutate;		/* join continuations in place */
};

enum section {
	SECNONE,
	SECVARS,
	SECRUN,
	SECRES,
	SECNODE,
	SECPROBE,
	SECPOOL,
};

void
cfgerror(int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (errjmp) {
		/* a spawn file: the error fails the job that wrote it */
		n = snprintf(errbuf, sizeof(errbuf), "%s:%d: ", errfile, line);
		if (n < 0 || n >= (int)sizeof(errbuf))
			n = sizeof(errbuf) - 1;	/* a long path: the message cut short */
		va_start(ap, fmt);
		vsnprintf(errbuf + n, sizeof(errbuf) - n, fmt, ap);
		va_end(ap);
		errline = line;
		longjmp(*errjmp, line);
	}
	fflush(stdout);
	fprintf(stderr, "%s:%d: ", cfg.file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXUSAGE);
}

static char *
readfile(const char *file, size_t *len)
{
	struct stat st;
	size_t cap, n = 0;
	ssize_t r;
	char *buf;
	int fd;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fatal("%s:", file);
	cap = fstat(fd, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size + 2 : 4096;
	buf = xmalloc(cap);
	for (;;) {
		if (cap - n < 2)
			buf = xrealloc(buf, cap *= 2);
		r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fatal("%s:", file);
		if (r == 0)
			break;
		n += r;
	}
	close(fd);
	buf[n] = 0;
	*len = n;
	return buf;
}

/* one physical line, without its newline and a carriage return */
static char *
physline(struct lexer *lx, size_t *len)
{
	char *b = lx->p, *e;

	e = memchr(b, '\n', lx->end - b);
	if (!e)
		e = lx->end;
	lx->p = e < lx->end ? e + 1 : e;
	*len = e - b;
	if (*len && b[*len - 1] == '\r')
		--*len;
	return b;
}

/* the next logical line (continuations joined) in *s, *n; 0 at the end */
static int
nextline(struct lexer *lx, char **s, size_t *n, int *line)
{
	static char *scratch;
	static size_t scap;
	char *b, *w;
	size_t len, wn;
	int more;

	if (lx->p >= lx->end)
		return 0;
	*line = ++lx->line;
	b = physline(lx, &len);
	if (!len || b[len - 1] != '\\') {
		*s = b;
		*n = len;
		return 1;
	}
	/* continuation: join the following lines, dropping each backslash */
	wn = len - 1;
	if (lx->mutate) {
		w = b;
	} else {
		if (scap < len + 1)
			scratch = xrealloc(scratch, scap = len + 64);
		memcpy(scratch, b, wn);
		w = scratch;
	}
	do {
		if (lx->p >= lx->end)
			break;
		lx->line++;
		b = physline(lx, &len);
		more = len && b[len - 1] == '\\';
		if (more)
			len--;
		if (!lx->mutate && scap < wn + len + 1)
			w = scratch = xrealloc(scratch, scap = 2 * (wn + len) + 64);
		memmove(w + wn, b, len);
		wn += len;
	} while (more);
	*s = w;
	*n = wn;
	return 1;
}

static int
isblank_(int c)
{
	return c == ' ' || c == '\t';
}

static void
trim(char **s, size_t *n)
{
	while (*n && isblank_(**s)) {
		++*s;
		--*n;
	}
	while (*n && isblank_((*s)[*n - 1]))
		--*n;
}

static int
namechar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || strchr("._-+@", c);
}

static int
varchar(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

static const char *
lookup(const char *name, size_t n)
{
	struct var *v;
	char key[256];

	for (v = defs; v; v = v->next)
		if (strlen(v->name) == n && !memcmp(v->name, name, n))
			return v->value;
	for (v = vars; v; v = v->next)
		if (strlen(v->name) == n && !memcmp(v->name, name, n))
			return v->value;
	if (n >= sizeof(key))
		return NULL;
	memcpy(key, name, n);
	key[n] = 0;
	return getenv(key);
}

/* ${name} expanded into a new string; s itself when there is no '$' */
static char *
expand(char *s, size_t n, int line)
{
	static char *buf;
	static size_t cap;
	size_t len = 0, vn, i, k;
	const char *v;

	if (!memchr(s, '$', n))
		return NULL;
	for (i = 0; i < n; i++) {
		v = NULL;
		vn = 1;
		if (s[i] == '$' && i + 2 < n && s[i + 1] == '$' && s[i + 2] == '{') {
			v = "${";
			vn = 2;
			i += 2;
		} else if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
			for (k = i + 2; k < n && s[k] != '}'; k++)
				;
			if (k == n)
				cfgerror(line, "unterminated '${' (write '$${' for a literal '${')");
			for (vn = i + 2; vn < k && varchar(s[vn]); vn++)
				;
			if (vn != k || k == i + 2)
				cfgerror(line, "bad variable name '${%.*s}' (write '$${' for the shell's own '${')",
				    (int)(k - i - 2), s + i + 2);
			v = lookup(s + i + 2, k - i - 2);
			if (!v)
				cfgerror(line, "undefined variable '%.*s'", (int)(k - i - 2), s + i + 2);
			vn = strlen(v);
			i = k;
		} else {
			v = s + i;
		}
		if (len + vn + 1 > cap)
			buf = xrealloc(buf, cap = 2 * (len + vn) + 64);
		memcpy(buf + len, v, vn);
		len += vn;
	}
	return arenastr(buf ? buf : "", len);
}

/* a value: expanded, or NUL-terminated in place */
static char *
value(char *s, size_t n, int line)
{
	char *e = expand(s, n, line);

	if (e)
		return e;
	s[n] = 0;
	return s;
}

static size_t
hashstr(const char *s)
{
	size_t h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

static int *
hslot(const char *name)
{
	size_t i = hashstr(name) & (hcap - 1);

	while (htab[i] >= 0 && strcmp(nodes[htab[i]].name, name))
		i = (i + 1) & (hcap - 1);
	return &htab[i];
}

static void
hgrow(void)
{
	int *old = htab;
	size_t i, ocap = hcap;

	hcap = hcap ? hcap * 2 : 1024;
	htab = xmalloc(hcap * sizeof(*htab));
	memset(htab, 0xff, hcap * sizeof(*htab));
	for (i = 0; i < ocap; i++)
		if (old[i] >= 0)
			*hslot(nodes[old[i]].name) = old[i];
	free(old);
}

int
cfgfind(const char *name)
{
	return hcap ? *hslot(name) : -1;
}

int
cfgaddnode(void)
{
	if (nnodes == capnodes)
		nodes = xrealloc(nodes, (capnodes = capnodes ? capnodes * 2 : 256) * sizeof(*nodes));
	memset(&nodes[nnodes], 0, sizeof(nodes[nnodes]));
	return nnodes++;
}

static int
newnode(char *name, int line)
{
	struct node *n;
	char *p;
	int *slot, k;

	if (!*name)
		cfgerror(line, "node needs a name: [node NAME]");
	for (p = name; *p; p++)
		if (!namechar((unsigned char)*p))
			cfgerror(line, "bad node name '%s' (letters, digits and ._-+@)", name);
	if ((size_t)nnodes * 2 >= hcap)
		hgrow();
	slot = hslot(name);
	if (*slot >= 0 && errjmp && *slot < spawnstart)
		cfgerror(line, "duplicate node '%s' (already in the graph)", name);
	if (*slot >= 0)
		cfgerror(line, "duplicate node '%s' (first at line %d)", name, nodes[*slot].line);
	*slot = nnodes;
	k = cfgaddnode();
	n = &nodes[k];
	n->name = name;
	n->line = line;
	return k;
}

static long long
integer(const char *key, const char *v, long long lo, long long hi, int line)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		cfgerror(line, "%s: expected a whole number from %lld to %lld, got '%s'",
		    key, lo, hi, v);
	return x;
}

double
cfgdecimal(const char *v, const char **end)
{
	size_t n = strspn(v, "0123456789.");
	char *e;
	double x;

	if (!n || *v < '0' || *v > '9')
		return -1;
	errno = 0;
	x = strtod(v, &e);
	if (errno || e != v + n)
		return -1;	/* "1.2.3", or strtod went on: 1e3, 0x10, inf */
	*end = e;
	return x;
}

static double
duration(const char *key, const char *v, int line)
{
	static const struct { const char *u; double f; } units[] = {
		{"", 1}, {"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400},
	};
	const char *end;
	double x = cfgdecimal(v, &end);
	size_t i;

	if (x >= 0)
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (!strcmp(end, units[i].u))
				return x * units[i].f;
	cfgerror(line, "%s: expected a duration (number with ms, s, m, h or d), got '%s'", key, v);
}

static long long
size(const char *key, const char *v, int line)
{
	static const char units[] = "KMGT";
	const char *end, *u = NULL;
	double x = cfgdecimal(v, &end);
	long i;

	if (x >= 0 && (!*end || (!end[1] && (u = strchr(units, *end))))) {
		for (i = u ? u - units + 1 : 0; i > 0; i--)
			x *= 1024;
		if (x < 9e18)
			return (long long)x;
	}
	cfgerror(line, "%s: expected a size (bytes, or a number with K, M, G or T), got '%s'", key, v);
}

static double
percent(const char *key, const char *v, int line)
{
	const char *end;
	double x = cfgdecimal(v, &end);

	if (x <= 0 || *end || x > 100)
		cfgerror(line, "%s: expected a percentage above 0 and up to 100, got '%s'", key, v);
	return x;
}

static double
decimal(const char *key, const char *v, int line)
{
	const char *end;
	double x = cfgdecimal(v, &end);

	if (x <= 0 || *end)
		cfgerror(line, "%s: expected a number above 0, got '%s'", key, v);
	return x;
}

static int
boolean(const char *key, const char *v, int line)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1"))
		return 1;
	if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0"))
		return 0;
	cfgerror(line, "%s: expected yes or no, got '%s'", key, v);
}

int
cfgneedshell(const char *cmd)
{
	/* reserved words and builtins that only the shell can run */
	static const struct { char len, w[9]; } words[] = {
		{1, "!"}, {1, "{"}, {1, "}"}, {2, "[["}, {4, "case"}, {2, "do"},
		{4, "done"}, {4, "elif"}, {4, "else"}, {4, "esac"}, {2, "fi"},
		{3, "for"}, {8, "function"}, {2, "if"}, {2, "in"}, {6, "select"},
		{4, "then"}, {4, "time"}, {5, "until"}, {5, "while"}, {1, "."},
		{1, ":"}, {5, "alias"}, {2, "bg"}, {5, "break"}, {2, "cd"},
		{7, "command"}, {8, "continue"}, {4, "eval"}, {4, "exec"},
		{4, "exit"}, {6, "export"}, {2, "fg"}, {7, "getopts"}, {4, "hash"},
		{4, "jobs"}, {4, "read"}, {8, "readonly"}, {6, "return"}, {3, "set"},
		{5, "shift"}, {6, "source"}, {5, "times"}, {4, "trap"}, {4, "type"},
		{6, "ulimit"}, {5, "umask"}, {7, "unalias"}, {5, "unset"}, {4, "wait"},
	};
	static unsigned char first[256];
	const char *p, *e;
	size_t i, n;

	if (!first[0]) {
		first[0] = 1;
		for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
			first[(unsigned char)words[i].w[0]] = 1;
	}
	if (strpbrk(cmd, "|&;<>()$`\\\"'*?[]#~\n"))
		return 1;
	for (p = cmd; isblank_(*p); p++)
		;
	for (e = p; *e && !isblank_(*e); e++)
		if (*e == '=')
			return 1;
	n = e - p;
	if (!n || n > 8 || !first[(unsigned char)*p])
		return 0;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if ((size_t)words[i].len == n && words[i].w[0] == *p && !memcmp(words[i].w, p, n))
			return 1;
	return 0;
}

/* check every {word} template of a cmd */
/* what a template may stand for where it is written */
enum {
	TNODE = 1,	/* {node}: anywhere */
	TIN = 2,	/* {input} and its parts: a fan-out node */
	TOUT = 4,	/* {output}: a node with outputs */
	TATTEMPT = 8,	/* {attempt}: commands */
};

static void
templates(const char *s, int line, int allow)
{
	static const struct { const char *name; int kind; } names[] = {
		{"node", TNODE}, {"attempt", TATTEMPT}, {"input", TIN}, {"input_file", TIN},
		{"name", TIN}, {"stem", TIN}, {"ext", TIN}, {"dir", TIN}, {"output", TOUT},
		{"output_file", TOUT},
	};
	const char *p, *e;
	size_t i, n;

	for (p = s; *p; p++) {
		if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
			p++;
			continue;
		}
		if (*p != '{' || (p > s && p[-1] == '$'))
			continue;
		for (e = p + 1; (*e >= 'a' && *e <= 'z') || *e == '_'; e++)
			;
		if (*e != '}' || e == p + 1)
			continue;
		n = e - p - 1;
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i].name) == n && !memcmp(names[i].name, p + 1, n))
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			cfgerror(line, "unknown template '{%.*s}' (write '{{' and '}}' for literal "
			    "braces)", (int)n, p + 1);
		if (!(allow & names[i].kind)) {
			if (names[i].kind == TIN)
				cfgerror(line, "template '{%.*s}' needs a fan-out node (inputs or "
				    "input_list)", (int)n, p + 1);
			if (names[i].kind == TOUT && allow & TATTEMPT)
				cfgerror(line, "template '{%.*s}' needs output, output_dir or "
				    "output_suffix", (int)n, p + 1);
			cfgerror(line, "template '{%.*s}' cannot be used in output", (int)n, p + 1);
		}
		p = e;
	}
}

/* the index of key in keys, checking it is known and, unless repeatable
 * (a bit per index), given once; section names the place for errors */
static unsigned
lookupkey(const char *const *keys, unsigned n, const char *key, unsigned *seen,
    unsigned repeatable, const char *section, int line)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (!strcmp(key, keys[i]))
			break;
	if (i == n)
		cfgerror(line, "unknown key '%s' in %s", key, section);
	if (*seen & ~repeatable & 1u << i)
		cfgerror(line, "duplicate key '%s' in %s", key, section);
	*seen |= 1u << i;
	return i;
}

static struct plugin *newplugin(char *, int);

static int
executor(const char *v, int line)
{
	if (!strcmp(v, "local"))
		return 1;
	if (!strcmp(v, "slurm"))
		return 2;
	cfgerror(line, "executor: expected local or slurm, got '%s'", v);
}

/* v split at blanks into *w (no quoting); the count */
static int
words(const char *v, char ***w)
{
	int n = 0, cap = 0;
	size_t k;

	*w = NULL;
	for (;;) {
		v += strspn(v, " \t");
		if (!*v)
			return n;
		k = strcspn(v, " \t");
		if (n == cap) {
			char **a = arena(sizeof(*a) * (cap = cap ? 2 * cap : 4));
			if (n)
				memcpy(a, *w, sizeof(*a) * n);
			*w = a;
		}
		(*w)[n++] = arenastr(v, k);
		v += k;
	}
}

static void
runkey(const char *key, char *v, int line)
{
	static const char *const keys[] = {
		"jobs", "on_failure", "state_dir", "shell", "kill_grace", "deadline",
		"capacity", "capacity_every", "capacity_timeout", "notify", "notify_timeout",
		"metrics_file", "executor", "slurm_args",
	};
	struct plugin *cap;

	switch (lookupkey(keys, sizeof(keys) / sizeof(keys[0]), key, &runseen, 0, "[run]", line)) {
	case 0:
		cfg.jobs = (int)integer(key, v, 0, INT_MAX, line);
		break;
	case 1:
		if (!strcmp(v, "stop"))
			cfg.onfail = FSTOP;
		else if (!strcmp(v, "continue"))
			cfg.onfail = FCONTINUE;
		else if (!strcmp(v, "abort"))
			cfg.onfail = FABORT;
		else
			cfgerror(line, "on_failure: expected stop, continue or abort, got '%s'", v);
		break;
	case 2:
		if (!*v)
			cfgerror(line, "state_dir: expected a directory");
		cfg.statedir = v;
		break;
	case 3:
		if (!*v)
			cfgerror(line, "shell: expected a command");
		cfg.shell = v;
		break;
	case 4:
		cfg.killgrace = duration(key, v, line);
		break;
	case 5:
		if ((cfg.deadline = duration(key, v, line)) <= 0)
			cfgerror(line, "deadline: expected a duration above 0");
		break;
	case 9:
		if (!v[strspn(v, " \t")])
			cfgerror(line, "notify: expected a command");
		cfg.notify = v;
		break;
	case 10:
		if ((cfg.notifytimeout = duration(key, v, line)) <= 0)
			cfgerror(line, "notify_timeout: expected a duration above 0");
		break;
	case 11:
		if (!*v)
			cfgerror(line, "metrics_file: expected a file");
		cfg.metrics = v;
		break;
	case 12:
		cfg.executor = executor(v, line);
		break;
	case 13:
		cfg.nslurm = words(v, &cfg.slurmargs);
		break;
	default:
		if (!(cap = capacity)) {
			cap = capacity = newplugin("capacity", line);
			cap->next = cfg.plugins;
			cfg.plugins = cap;
		}
		if (!strcmp(key, "capacity")) {
			if (!v[strspn(v, " \t")])
				cfgerror(line, "capacity: expected a command");
			cap->cmd = v;
			cap->line = line;
		} else if (!strcmp(key, "capacity_every")) {
			if ((cap->every = duration(key, v, line)) < 0.01)
				cfgerror(line, "capacity_every: expected at least 10ms");
		} else if ((cap->timeout = duration(key, v, line)) <= 0)
			cfgerror(line, "capacity_timeout: expected a duration above 0");
	}
}

static struct plugin *
newplugin(char *name, int line)
{
	struct plugin *p = arena(sizeof(*p));

	memset(p, 0, sizeof(*p));
	p->name = name;
	p->line = line;
	p->every = 5;
	p->timeout = 10;
	return p;
}

/* [probe NAME]: a command that prints one number */
static void
probekey(struct plugin *p, unsigned *seen, const char *key, char *v, int line)
{
	static const char *const keys[] = {"cmd", "min", "max", "every", "timeout"};
	char section[300], *end;
	double x;

	snprintf(section, sizeof(section), "[probe %s]", p->name);
	switch (lookupkey(keys, sizeof(keys) / sizeof(keys[0]), key, seen, 0, section, line)) {
	case 0:
		if (!v[strspn(v, " \t")])
			cfgerror(line, "cmd: empty command");
		p->cmd = v;
		break;
	case 1:
	case 2:
		x = strtod(v, &end);
		if (!*v || *end || x != x || x > 1e300 || x < -1e300)
			cfgerror(line, "%s: expected a number, got '%s'", key, v);
		if (*key == 'm' && key[1] == 'i') {
			p->min = x;
			p->hasmin = 1;
		} else {
			p->max = x;
			p->hasmax = 1;
		}
		break;
	case 3:
		if ((p->every = duration(key, v, line)) < 0.01)
			cfgerror(line, "every: expected at least 10ms");
		break;
	case 4:
		if ((p->timeout = duration(key, v, line)) <= 0)
			cfgerror(line, "timeout: expected a duration above 0");
		break;
	}
}

static void
reskey(const char *key, char *v, int line)
{
	static const char *const keys[] = {
		"cpu_percent", "memory_percent", "disk_free", "disk_path", "load_avg_1m",
		"memory_suspend_percent", "poll", "wait_timeout", "cpu_pressure",
		"memory_pressure",
	};
	switch (lookupkey(keys, sizeof(keys) / sizeof(keys[0]), key, &resseen, 0, "[resources]",
	    line)) {
	case 0: cfg.cpupct = percent(key, v, line); break;
	case 1: cfg.mempct = percent(key, v, line); break;
	case 2: cfg.diskfree = size(key, v, line); break;
	case 3:
		if (!*v)
			cfgerror(line, "disk_path: expected a path");
		cfg.diskpath = v;
		break;
	case 4: cfg.loadmax = decimal(key, v, line); break;
	case 5: cfg.suspendpct = percent(key, v, line); break;
	case 6:
		if ((cfg.poll = duration(key, v, line)) < 0.01)
			cfgerror(line, "poll: expected at least 10ms");
		break;
	case 7: cfg.waittimeout = duration(key, v, line); break;
	case 8: cfg.cpupress = percent(key, v, line); break;
	case 9: cfg.mempress = percent(key, v, line); break;
	}
}

static void fankey(struct node *, const char *, char *, int);

static void
nodekey(struct node *n, unsigned *seen, const char *key, char *v, int line)
{
	static const char *const keys[] = {
		"cmd", "after", "dir", "env", "shell", "priority", "allow_failure", "cpus", "mem",
		"post", "nice", "mem_limit", "inputs", "input_list", "output_dir",
		"output_suffix", "output", "calibrate", "calibrate_cpu_percent",
		"calibrate_memory_percent", "calibrate_disk_percent", "timeout", "retries",
		"retry_delay", "pool", "executor", "slurm_args",
	};
	char section[300];
	struct dep *d;

	snprintf(section, sizeof(section), "[node %s]", n->name);
	/* after (1), env (3) and inputs (12) may be given more than once */
	switch (lookupkey(keys, sizeof(keys) / sizeof(keys[0]), key, seen,
	    1u << 1 | 1u << 3 | 1u << 12, section, line)) {
	case 0:
		if (!v[strspn(v, " \t")])
			cfgerror(line, "cmd: empty command");
		n->cmd = v;
		n->cmdline = line;
		break;
	case 1:
		d = arena(sizeof(*d));
		d->name = v;
		d->line = line;
		d->next = n->deps;
		n->deps = d;
		break;
	case 2:
		if (!*v)
			cfgerror(line, "dir: expected a directory");
		n->dir = v;
		break;
	case 3:
		if (!strchr(v, '=') || *v == '=')
			cfgerror(line, "env: expected NAME=value, got '%s'", v);
		if (!(n->nenv & (n->nenv - 1))) {
			char **e = arena(sizeof(*e) * (n->nenv ? 2 * n->nenv : 1));
			if (n->nenv)
				memcpy(e, n->env, sizeof(*e) * n->nenv);
			n->env = e;
		}
		n->env[n->nenv++] = v;
		break;
	case 4:
		if (!v[strspn(v, " \t")])
			cfgerror(line, "shell: expected a command");
		n->shell = v;
		break;
	case 5:
		n->priority = (int)integer(key, v, INT_MIN, INT_MAX, line);
		break;
	case 6:
		n->allowfail = boolean(key, v, line);
		break;
	case 7:
		n->cpus = decimal(key, v, line);
		break;
	case 8:
		if (!(n->mem = size(key, v, line)))
			cfgerror(line, "mem: expected a size above 0");
		break;
	case 9:
		if (!v[strspn(v, " \t")])
			cfgerror(line, "post: empty command");
		n->postcmd = v;
		n->postline = line;
		break;
	case 10:
		n->nice = (int)integer(key, v, -40, 40, line);
		n->hasnice = 1;
		break;
	case 11:
		if (!(n->memlimit = size(key, v, line)))
			cfgerror(line, "mem_limit: expected a size above 0");
		break;
	case 21:
		if ((n->timeout = duration(key, v, line)) <= 0)
			cfgerror(line, "timeout: expected a duration above 0");
		break;
	case 22:
		n->retries = (int)integer(key, v, 0, 1000, line);
		break;
	case 23:
		n->retrydelay = duration(key, v, line);
		break;
	case 24:
		if (!*v)
			cfgerror(line, "pool: expected a pool name");
		n->poolname = v;
		n->poolline = line;
		break;
	case 25:
		n->executor = (unsigned char)executor(v, line);
		n->execline = line;
		break;
	case 26:
		n->nslurm = words(v, &n->slurmargs);
		n->execline = line;
		break;
	default:
		fankey(n, key, v, line);
	}
}

/* [pool NAME] size = N */
static void
poolkey(int p, unsigned *seen, const char *key, char *v, int line)
{
	static const char *const keys[] = {"size"};
	char section[300];

	snprintf(section, sizeof(section), "[pool %s]", cfg.pools[p].name);
	lookupkey(keys, 1, key, seen, 0, section, line);
	cfg.pools[p].size = (int)integer(key, v, 1, INT_MAX, line);
}

static int
addpool(char *name, int line)
{
	char *c;
	int i;

	if (!*name)
		cfgerror(line, "pool needs a name: [pool NAME]");
	for (c = name; *c; c++)
		if (!namechar((unsigned char)*c))
			cfgerror(line, "bad pool name '%s' (letters, digits and ._-+@)", name);
	for (i = 0; i < cfg.npools; i++)
		if (!strcmp(cfg.pools[i].name, name))
			cfgerror(line, "duplicate pool '%s' (first at line %d)", name, cfg.pools[i].line);
	cfg.pools = xrealloc(cfg.pools, (cfg.npools + 1) * sizeof(*cfg.pools));
	memset(&cfg.pools[cfg.npools], 0, sizeof(*cfg.pools));
	cfg.pools[cfg.npools].name = name;
	cfg.pools[cfg.npools].line = line;
	cfg.pools[cfg.npools].parked = cfg.pools[cfg.npools].parktail = -1;
	return cfg.npools++;
}

/* the fan-out keys, numbered as in nodekey */
static void
fankey(struct node *n, const char *key, char *v, int line)
{
	struct fan *f = n->fan;

	if (!f) {
		f = n->fan = arena(sizeof(*f));
		memset(f, 0, sizeof(*f));
		f->calpct[0] = f->calpct[1] = f->calpct[2] = 80;
		f->line = line;
	}
	if (!strcmp(key, "inputs")) {
		if (!v[strspn(v, " \t")])
			cfgerror(line, "inputs: expected a file pattern");
		if (!(f->npat & (f->npat - 1))) {
			char **p = arena(sizeof(*p) * (f->npat ? 2 * f->npat : 1));
			if (f->npat)
				memcpy(p, f->pat, sizeof(*p) * f->npat);
			f->pat = p;
		}
		f->pat[f->npat++] = v;
	} else if (!strcmp(key, "input_list")) {
		if (!*v)
			cfgerror(line, "input_list: expected a file");
		f->list = v;
	} else if (!strcmp(key, "output_dir")) {
		if (!*v)
			cfgerror(line, "output_dir: expected a directory");
		f->outdir = v;
	} else if (!strcmp(key, "output_suffix")) {
		f->suffix = v;
	} else if (!strcmp(key, "output")) {
		if (!*v)
			cfgerror(line, "output: expected a file name");
		templates(v, line, TIN | TNODE);
		f->output = v;
		f->outline = line;
	} else if (!strcmp(key, "calibrate")) {
		if (!strcmp(v, "always"))
			f->calibrate = 2;
		else if (!strcmp(v, "yes") || !strcmp(v, "no"))
			f->calibrate = *v == 'y';
		else
			cfgerror(line, "calibrate: expected yes, no or always, got '%s'", v);
	} else {
		f->calpct[!strcmp(key, "calibrate_cpu_percent") ? 0 :
		    !strcmp(key, "calibrate_memory_percent") ? 1 : 2] = percent(key, v, line);
	}
}

/* checks that need the whole section: templates, fan-out keys together */
static void
nodecheck(struct node *n)
{
	struct fan *f = n->fan;
	int fan = f && (f->npat || f->list);
	int outs = f && (f->outdir || f->suffix || f->output);
	int allow = TNODE | TATTEMPT | (fan ? TIN : 0) | (outs ? TOUT : 0);

	if (!n->cmd)
		cfgerror(n->line, "node '%s' has no cmd", n->name);
	templates(n->cmd, n->cmdline, allow);
	if (n->postcmd)
		templates(n->postcmd, n->postline, allow);
	if (f && !fan && f->suffix)
		cfgerror(f->line, "output_suffix needs inputs or input_list");
	if (f && !fan && f->calibrate)
		cfgerror(f->line, "calibrate needs inputs or input_list");
	if (f && !fan && f->output)
		templates(f->output, f->outline, TNODE);
	if (f && !fan && f->outdir && !f->output)
		cfgerror(f->line, "output_dir needs output, inputs or input_list");
	n->direct = !n->shell && !cfgneedshell(n->cmd);
	n->postdirect = n->postcmd && !n->shell && !cfgneedshell(n->postcmd);
	n->parent = -1;
	n->parked = n->parktail = -1;
	for (n->pool = 0; n->poolname && n->pool < cfg.npools; n->pool++)
		if (!strcmp(cfg.pools[n->pool].name, n->poolname))
			break;
	if (!n->poolname)
		n->pool = -1;
	else if (n->pool == cfg.npools)
		cfgerror(n->poolline, "unknown pool '%s'", n->poolname);
	n->slurm = (n->executor ? n->executor : cfg.executor) == 2;
	if (n->nslurm && !n->slurm)
		cfgerror(n->execline, "slurm_args needs executor = slurm");
	if (n->slurm && f && f->calibrate)
		cfgerror(f->line, "calibrate measures jobs on this machine: not with executor = slurm");
	if (n->slurm && cfg.nslurm) {
		char **a = arena(sizeof(*a) * (cfg.nslurm + n->nslurm));

		memcpy(a, cfg.slurmargs, sizeof(*a) * cfg.nslurm);
		if (n->nslurm)
			memcpy(a + cfg.nslurm, n->slurmargs, sizeof(*a) * n->nslurm);
		n->slurmargs = a;
		n->nslurm += cfg.nslurm;
	}
}

/* a new [probe NAME], after the others */
static struct plugin *
addprobe(char *name, int line)
{
	struct plugin *p, **pp;
	char *c;

	if (!*name)
		cfgerror(line, "probe needs a name: [probe NAME]");
	for (c = name; *c; c++)
		if (!namechar((unsigned char)*c))
			cfgerror(line, "bad probe name '%s' (letters, digits and ._-+@)", name);
	for (pp = &cfg.plugins; *pp; pp = &(*pp)->next)
		if ((*pp)->probe && !strcmp((*pp)->name, name))
			cfgerror(line, "duplicate probe '%s' (first at line %d)", name, (*pp)->line);
	p = *pp = newplugin(name, line);
	p->probe = 1;
	return p;
}

/* a section header's type and, for [node NAME], its name */
static int
header(char *s, size_t n, int line, char **name)
{
	char *w, *e;
	size_t wn, all;

	if (n < 2 || s[n - 1] != ']')
		cfgerror(line, "expected ']' at the end of a section header");
	s++;
	n -= 2;
	trim(&s, &n);
	all = n;
	for (e = s; e < s + n && !isblank_(*e); e++)
		;
	wn = e - s;
	w = e;
	n -= wn;
	trim(&w, &n);
	*name = NULL;
	if (wn == 4 && !memcmp(s, "vars", 4) && !n)
		return SECVARS;
	if (wn == 3 && !memcmp(s, "run", 3) && !n)
		return SECRUN;
	if (wn == 9 && !memcmp(s, "resources", 9) && !n)
		return SECRES;
	if ((wn == 4 && !memcmp(s, "node", 4)) || (wn == 5 && !memcmp(s, "probe", 5)) ||
	    (wn == 4 && !memcmp(s, "pool", 4))) {
		for (e = w; e < w + n; e++)
			if (isblank_(*e))
				cfgerror(line, "bad %s name '%.*s' (letters, digits and ._-+@)",
				    *s == 'n' ? "node" : s[1] == 'r' ? "probe" : "pool", (int)n, w);
		*name = w;
		w[n] = 0;
		return *s == 'n' ? SECNODE : *s == 'p' && s[1] == 'r' ? SECPROBE : SECPOOL;
	}
	cfgerror(line, "unknown section [%.*s]", (int)all, s);
}

/* split a key = value line; 0 for a blank or comment line */
static int
keyvalue(char *s, size_t n, int line, char **k, size_t *kn, char **v, size_t *vn)
{
	char *eq;

	trim(&s, &n);
	if (!n || *s == '#' || *s == ';')
		return 0;
	eq = memchr(s, '=', n);
	if (!eq)
		cfgerror(line, "expected 'key = value'");
	*k = s;
	*kn = eq - s;
	*v = eq + 1;
	*vn = n - (eq + 1 - s);
	trim(k, kn);
	trim(v, vn);
	if (!*kn)
		cfgerror(line, "expected 'key = value' (no key before '=')");
	return 1;
}

/* pass one: [vars], so that a value may use a variable defined later */
static void
readvars(char *buf, size_t len)
{
	struct lexer lx = {buf, buf + len, 0, 0};
	struct var *v;
	char *s, *k, *val, *e;
	size_t n, kn, vn;
	int line, invars = 0;

	while (nextline(&lx, &s, &n, &line)) {
		trim(&s, &n);
		if (n && *s == '[') {
			k = s + 1;
			kn = n - 1;
			if (kn && k[kn - 1] == ']')
				kn--;
			trim(&k, &kn);
			invars = kn == 4 && !memcmp(k, "vars", 4);
			continue;
		}
		if (!invars || !keyvalue(s, n, line, &k, &kn, &val, &vn))
			continue;
		for (v = vars; v; v = v->next)
			if (strlen(v->name) == kn && !memcmp(v->name, k, kn))
				cfgerror(line, "duplicate variable '%.*s'", (int)kn, k);
		for (n = 0; n < kn; n++)
			if (!varchar((unsigned char)k[n]))
				cfgerror(line, "bad variable name '%.*s' (letters, digits and _.-)", (int)kn, k);
		e = expand(val, vn, line);
		v = xmalloc(sizeof(*v));
		v->name = arenastr(k, kn);
		v->value = e ? e : arenastr(val, vn);
		v->next = vars;
		vars = v;
	}
}

/* the hash anew, for the first n nodes only */
static void
hrebuild(int n)
{
	int i;

	memset(htab, 0xff, hcap * sizeof(*htab));
	for (i = 0; i < n; i++)
		if (nodes[i].parent < 0)
			*hslot(nodes[i].name) = i;
}

int
cfgspawn(const char *file, char **msg)
{
	static jmp_buf jb;
	static int start, line;
	struct lexer lx;
	char *buf, *s, *k, *v, *name;
	size_t len, n, kn, vn;
	static int sec, cur;
	int i, fd;
	unsigned seen = 0;
	struct stat st;
	ssize_t r;

	start = spawnstart = nnodes;
	sec = SECNONE;
	cur = -1;
	if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(errbuf, sizeof(errbuf), "%s: %s", file, strerror(errno));
		*msg = errbuf;
		return -1;
	}
	len = fstat(fd, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size : 0;
	buf = arena(len + 1);
	for (n = 0; n < len && (r = read(fd, buf + n, len - n)) > 0; n += r)
		;
	close(fd);
	buf[len = n] = 0;
	errfile = file;
	errjmp = &jb;
	if ((line = setjmp(jb))) {
		errjmp = NULL;
		nnodes = start;
		hrebuild(start);
		*msg = errbuf;
		return -1;
	}
	lx.p = buf;
	lx.end = buf + len;
	lx.line = 0;
	lx.mutate = 1;
	while (nextline(&lx, &s, &n, &line)) {
		trim(&s, &n);
		if (n && *s == '[') {
			if ((sec = header(s, n, line, &name)) != SECNODE)
				cfgerror(line, "only [node NAME] sections may be in a spawn file");
			cur = newnode(name, line);
			seen = 0;
			continue;
		}
		if (!keyvalue(s, n, line, &k, &kn, &v, &vn))
			continue;
		k[kn] = 0;
		if (sec != SECNODE)
			cfgerror(line, "'%s' outside of a section", k);
		nodekey(&nodes[cur], &seen, k, value(v, vn, line), line);
	}
	for (i = start; i < nnodes; i++)
		nodecheck(&nodes[i]);
	errjmp = NULL;
	return nnodes - start;
}

/* a spawn file's nodes did not join after all */
void
cfgunspawn(int first)
{
	nnodes = first;
	hrebuild(first);
}

void
cfgparse(const char *file, struct var *d)
{
	struct lexer lx;
	char *buf, *s, *k, *v, *name, *slash;
	size_t len, n, kn, vn;
	int line, sec = SECNONE, cur = -1, i;
	unsigned seen = 0;
	struct plugin *probe = NULL;
	int pool = -1;

	cfg.file = file;
	cfg.jobs = -1;
	cfg.onfail = FSTOP;
	cfg.statedir = ".dagrun";
	cfg.shell = "/bin/sh";
	cfg.killgrace = 10;
	cfg.cpupct = cfg.mempct = cfg.loadmax = cfg.suspendpct = -1;
	cfg.cpupress = cfg.mempress = -1;
	cfg.diskfree = -1;
	cfg.poll = 1;
	cfg.notifytimeout = 10;
	cfg.executor = 1;
	defs = d;
	buf = text = readfile(file, &len);
	readvars(buf, len);
	lx.p = buf;
	lx.end = buf + len;
	lx.line = 0;
	lx.mutate = 1;
	while (nextline(&lx, &s, &n, &line)) {
		trim(&s, &n);
		if (n && *s == '[') {
			sec = header(s, n, line, &name);
			if (sec == SECPOOL) {
				pool = addpool(name, line);
				seen = 0;
			}
			if (sec == SECPROBE) {
				probe = addprobe(name, line);
				seen = 0;
			}
			if (sec == SECNODE) {
				cur = newnode(name, line);
				seen = 0;
			}
			continue;
		}
		if (!keyvalue(s, n, line, &k, &kn, &v, &vn))
			continue;
		k[kn] = 0;
		switch (sec) {
		case SECNONE:
			cfgerror(line, "'%s' outside of a section", k);
		case SECVARS:
			break;
		case SECRUN:
			runkey(k, value(v, vn, line), line);
			break;
		case SECRES:
			reskey(k, value(v, vn, line), line);
			break;
		case SECPOOL:
			poolkey(pool, &seen, k, value(v, vn, line), line);
			break;
		case SECPROBE:
			probekey(probe, &seen, k, value(v, vn, line), line);
			break;
		case SECNODE:
			nodekey(&nodes[cur], &seen, k, value(v, vn, line), line);
			break;
		}
	}
	for (i = 0; i < nnodes; i++)
		nodecheck(&nodes[i]);
	for (i = 0; i < cfg.npools; i++)
		if (!cfg.pools[i].size)
			cfgerror(cfg.pools[i].line, "pool '%s' has no size", cfg.pools[i].name);
	for (probe = cfg.plugins; probe; probe = probe->next) {
		if (!probe->cmd)
			cfgerror(probe->line, probe->probe ? "probe '%s' has no cmd" :
			    "%s_every or %s_timeout without capacity", probe->name, probe->name);
		if (probe->hasmin && probe->hasmax && probe->min > probe->max)
			cfgerror(probe->line, "probe '%s': min is above max", probe->name);
	}
	slash = strrchr(file, '/');
	cfg.dir = slash ? arenastr(file, slash == file ? 1 : slash - file) : ".";
}

int
cfgtry(const char *file, struct var *d, char **msg)
{
	static jmp_buf jb;

	errfile = file;
	errjmp = &jb;
	spawnstart = 0;
	if (setjmp(jb)) {
		errjmp = NULL;
		*msg = errbuf;
		return errline;
	}
	cfgparse(file, d);
	errjmp = NULL;
	return 0;
}

void
cfgreset(void)
{
	struct var *v;

	while ((v = vars)) {
		vars = v->next;
		free(v);
	}
	free(text);
	free(cfg.pools);
	free(nodes);
	free(htab);
	memset(&cfg, 0, sizeof(cfg));
	nodes = NULL;
	nnodes = capnodes = 0;
	text = NULL;
	htab = NULL;
	hcap = 0;
	errjmp = NULL;
	errfile = NULL;
	errline = spawnstart = 0;
	defs = NULL;
	runseen = resseen = 0;
	capacity = NULL;
}
