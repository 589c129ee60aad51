/* fan-out: inputs to jobs, outputs, and commands with their templates */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "dagrun.h"

/* a growable byte buffer */
struct buf {
	char *s;
	size_t len, cap;
};

/* the values a job's templates take */
struct vals {
	const char *input, *output, *node;
	int attempt;
};

static void
bufadd(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap)
		b->s = xrealloc(b->s, b->cap = 2 * (b->len + n) + 256);
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = 0;
}

/* what b holds, kept for the run at its exact size; b is emptied */
static char *
bufkeep(struct buf *b)
{
	char *s = arenastr(b->s, b->len);

	free(b->s);
	b->s = NULL;
	b->len = b->cap = 0;
	return s;
}

/* value single-quoted for the shell, unless nothing in it needs quoting */
static void
bufquote(struct buf *b, const char *s, size_t n)
{
	const char *q, *end = s + n;
	size_t i;

	for (i = 0; i < n && strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789_-+@%.,:/", s[i]) && s[i]; i++)
		;
	if (n && i == n) {
		bufadd(b, s, n);
		return;
	}
	bufadd(b, "'", 1);
	while ((q = memchr(s, '\'', end - s))) {
		bufadd(b, s, q - s);
		bufadd(b, "'\\''", 4);
		s = q + 1;
	}
	bufadd(b, s, end - s);
	bufadd(b, "'", 1);
}

/* the parts of a path: its directory, file name, stem and extension */
static size_t
basestart(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? (size_t)(s - p) + 1 : 0;
}

static const char *
extof(const char *p)
{
	const char *name = p + basestart(p), *dot = strrchr(name, '.');

	return dot && dot > name ? dot : name + strlen(name);
}

/* the template named by s[0..n) for v, as a pointer and length; 0 if
 * there is no such template */
static int
value(const char *s, size_t n, const struct vals *v, char *num, const char **p, size_t *len)
{
	const char *in = v->input ? v->input : "";
	size_t b = basestart(in);

#define IS(w) (n == sizeof(w) - 1 && !memcmp(s, w, n))
	if (IS("node"))
		*p = v->node;
	else if (IS("attempt"))
		*p = (sprintf(num, "%d", v->attempt), num);
	else if (IS("input") || IS("input_file"))
		*p = in;
	else if (IS("output") || IS("output_file"))
		*p = v->output ? v->output : "";
	else if (IS("name"))
		*p = in + b;
	else if (IS("ext"))
		*p = extof(in);
	else if (IS("stem")) {
		*p = in + b;
		*len = extof(in) - *p;
		return 1;
	} else if (IS("dir")) {
		*p = b ? in : ".";
		*len = b > 1 ? b - 1 : 1;
		return 1;
	} else
		return 0;
#undef IS
	*len = strlen(*p);
	return 1;
}

/* fill the templates of s[0..n) into b; quote: for the shell */
static void
fill(struct buf *b, const struct vals *v, const char *s, size_t n, const char *start, int quote)
{
	const char *e, *end = s + n, *p;
	char num[32];
	size_t k, len;

	while (s < end) {
		k = strcspn(s, "{}");
		if (s + k > end)
			k = end - s;
		bufadd(b, s, k);
		s += k;
		if (s >= end)
			break;
		if (s + 1 < end && s[1] == s[0]) {
			bufadd(b, s, 1);
			s += 2;
			continue;
		}
		e = s + 1;
		while (e < end && ((*e >= 'a' && *e <= 'z') || *e == '_'))
			e++;
		if (*s == '{' && e < end && *e == '}' && (s == start || s[-1] != '$') &&
		    value(s + 1, e - s - 1, v, num, &p, &len)) {
			if (quote)
				bufquote(b, p, len);
			else
				bufadd(b, p, len);
			s = e + 1;
			continue;
		}
		bufadd(b, s, 1);
		s++;
	}
}

/* what node n's templates stand for in this attempt */
static void
vals(int n, int attempt, struct vals *v)
{
	v->node = nodes[nodes[n].parent >= 0 ? nodes[n].parent : n].name;
	v->input = nodes[n].input;
	v->output = nodes[n].output ? fantmp(n) : NULL;
	v->attempt = attempt;
}

void
cmdexpand(int n, int attempt, int post, char **out, size_t *cap)
{
	struct buf b = {*out, 0, *cap};
	const char *cmd = post ? nodes[n].postcmd : nodes[n].cmd;
	struct vals v;

	vals(n, attempt, &v);
	bufadd(&b, "", 0);
	fill(&b, &v, cmd, strlen(cmd), cmd, !(post ? nodes[n].postdirect : nodes[n].direct));
	*out = b.s;
	*cap = b.cap;
}

char **
cmdargv(int node, int attempt, int post)
{
	static struct buf b;
	static char **argv;
	static size_t cap;
	static size_t *offs;
	struct node *n = &nodes[node];
	const char *s, *w, *sh, *cmd = post ? n->postcmd : n->cmd;
	size_t k, na = 0, i;
	int direct = post ? n->postdirect : n->direct;
	struct vals v;

	vals(node, attempt, &v);
	b.len = 0;
	sh = n->shell ? n->shell : cfg.shell;
	for (s = direct ? cmd : sh; ; ) {
		s += strspn(s, " \t");
		if (!*s)
			break;
		k = strcspn(s, " \t");
		if (na + 4 > cap) {
			cap = 2 * cap + 16;
			argv = xrealloc(argv, cap * sizeof(*argv));
			offs = xrealloc(offs, cap * sizeof(*offs));
		}
		offs[na++] = b.len;
		if (direct)
			fill(&b, &v, s, k, cmd, 0);
		else
			bufadd(&b, s, k);
		bufadd(&b, "", 1);
		s += k;
	}
	if (!direct) {
		w = strpbrk(sh, " \t");
		if (!w || !w[strspn(w, " \t")]) {
			offs[na++] = b.len;
			bufadd(&b, "-c", 3);
		}
		offs[na++] = b.len;
		fill(&b, &v, cmd, strlen(cmd), cmd, 1);
		bufadd(&b, "", 1);
	}
	for (i = 0; i < na; i++)
		argv[i] = b.s + offs[i];
	argv[na] = NULL;
	return argv;
}

char **
shellargv(const char *cmd)
{
	static char **argv, *words;
	static int cap;
	const char *s;
	char *w;
	int n = 0;
	size_t k;

	if (!words) {
		words = xmalloc(strlen(cfg.shell) + 1);
		for (s = cfg.shell, w = words; *(s += strspn(s, " \t")); s += k) {
			k = strcspn(s, " \t");
			memcpy(w, s, k);
			w[k] = 0;
			if (n + 4 > cap)
				argv = xrealloc(argv, (cap = 2 * cap + 8) * sizeof(*argv));
			argv[n++] = w;
			w += k + 1;
		}
		if (n == 1)
			argv[n++] = "-c";
		cap = n;	/* the shell's own words end here */
	}
	argv[cap] = (char *)cmd;
	argv[cap + 1] = NULL;
	return argv;
}

const char *
fantmp(int n)
{
	static struct buf b;
	const char *out = nodes[n].output, *ext = extof(out);
	size_t base = basestart(out);

	b.len = 0;
	bufadd(&b, out, base);
	bufadd(&b, ".", 1);
	bufadd(&b, out + base, ext - out - base);
	bufadd(&b, "~dagrun-tmp", 11);
	bufadd(&b, ext, strlen(ext));
	return b.s;
}

/* a set of strings: inputs of one node, outputs of the whole run */
struct set {
	int *slot;	/* node index + 1, 0 empty */
	size_t cap, n;
};

static unsigned long
hash(const char *s)
{
	unsigned long h = 2166136261UL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619UL;
	return h;
}

/* the slot for key in set s, whose entries' keys come from key() */
static int *
setslot(struct set *s, const char *k, const char *(*key)(int))
{
	size_t i, j;
	int *old;

	if (2 * (s->n + 1) > s->cap) {
		old = s->slot;
		j = s->cap;
		s->cap = s->cap ? 2 * s->cap : 1024;
		s->slot = xcalloc(s->cap, sizeof(*s->slot));
		while (j--)
			if (old[j])
				*setslot(s, key(old[j] - 1), key) = old[j];
		free(old);
	}
	for (i = hash(k) & (s->cap - 1); s->slot[i]; i = (i + 1) & (s->cap - 1))
		if (!strcmp(key(s->slot[i] - 1), k))
			break;
	return &s->slot[i];
}

/* the inputs of one node seen so far, as absolute paths without "." or
 * doubled slashes, so that one file spelled two ways is one job */
struct strset {
	char **s;
	size_t cap, n;
};

static int
strsetadd(struct strset *set, char *str)
{
	size_t i, j;
	char **old;

	if (2 * (set->n + 1) > set->cap) {
		old = set->s;
		j = set->cap;
		set->cap = set->cap ? 2 * set->cap : 1024;
		set->s = xcalloc(set->cap, sizeof(*set->s));
		set->n = 0;
		while (j--)
			if (old[j])
				strsetadd(set, old[j]);
		free(old);
	}
	for (i = hash(str) & (set->cap - 1); set->s[i]; i = (i + 1) & (set->cap - 1))
		if (!strcmp(set->s[i], str))
			return 0;
	set->s[i] = str;
	set->n++;
	return 1;
}

static void
strsetfree(struct strset *set)
{
	size_t i;

	for (i = 0; i < set->cap; i++)
		free(set->s[i]);
	free(set->s);
}

static char *
canonical(const char *p, size_t n)
{
	static char *cwd;
	char here[PATH_MAX], *c, *w;
	const char *r;
	size_t cn;

	if (!cwd)
		cwd = xstrdup(getcwd(here, sizeof(here)) ? here : ".");
	cn = *p == '/' ? 0 : strlen(cwd) + 1;
	c = xmalloc(cn + n + 1);
	if (cn)
		sprintf(c, "%s/", cwd);
	memcpy(c + cn, p, n);
	c[cn + n] = 0;
	for (w = c, r = c; *r; ) {
		if (*r == '/' && (r[1] == '/' || (r[1] == '.' && (r[2] == '/' || !r[2])))) {
			r += r[1] == '/' ? 1 : 2;
			continue;
		}
		*w++ = *r++;
	}
	*w = 0;
	return c;
}

static const char *
outputof(int n)
{
	return nodes[n].output;
}

static struct set outputs;
static int absolute;		/* paths for a node with its own dir */

/* a path as a command will read it: never taken for an option, and
 * absolute when the job runs in a directory of its own (dir) */
static char *
safepath(const char *dir, size_t dn, const char *p, size_t n)
{
	static char *cwd;
	struct buf b = {NULL, 0, 0};
	char here[PATH_MAX];

	if (absolute && (dn ? *dir : *p) != '/') {
		if (!cwd)
			cwd = xstrdup(getcwd(here, sizeof(here)) ? here : ".");
		bufadd(&b, cwd, strlen(cwd));
		bufadd(&b, "/", 1);
	} else if ((dn ? *dir : *p) == '-')
		bufadd(&b, "./", 2);
	if (dn) {
		bufadd(&b, dir, dn);
		if (dir[dn - 1] != '/')
			bufadd(&b, "/", 1);
	}
	bufadd(&b, p, n);
	return bufkeep(&b);
}

/* job k's output from its input */
static char *
outpath(int g, const char *in)
{
	struct fan *f = nodes[g].fan;
	struct buf b = {NULL, 0, 0};
	struct vals v;
	const char *dir = f->outdir, *ext = extof(in);
	size_t base = basestart(in);
	char *p;

	if (f->output) {
		v.node = nodes[g].name;
		v.input = in;
		v.output = NULL;
		v.attempt = 1;
		fill(&b, &v, f->output, strlen(f->output), f->output, 0);
	} else {
		bufadd(&b, in + base, ext - in - base);
		if (f->suffix)
			bufadd(&b, f->suffix, strlen(f->suffix));
		bufadd(&b, ext, strlen(ext));
		if (!dir) {
			dir = in;
			if (!base)
				dir = NULL;
		}
	}
	if (b.s[0] == '/' || (!dir && f->output))
		dir = NULL;
	p = safepath(dir ? dir : "", dir ? (dir == in ? base : strlen(dir)) : 0, b.s, b.len);
	free(b.s);
	return p;
}

/* the job name for an input: node:input, with no tab or newline in it */
static char *
jobname(const char *node, const char *in)
{
	struct buf b = {NULL, 0, 0};
	char hex[8];

	bufadd(&b, node, strlen(node));
	bufadd(&b, ":", 1);
	for (; *in; in++) {
		if (*in == '\\')
			bufadd(&b, "\\\\", 2);
		else if (*in == '\n')
			bufadd(&b, "\\n", 2);
		else if (*in == '\t')
			bufadd(&b, "\\t", 2);
		else if ((unsigned char)*in < 32 || *in == 127) {
			snprintf(hex, sizeof(hex), "\\x%02x", (unsigned char)*in);
			bufadd(&b, hex, 4);
		} else
			bufadd(&b, in, 1);
	}
	return bufkeep(&b);
}

/* a job of node g for input in; returns 0, or -1 with *msg */
static int
addjob(int g, const char *in, size_t n, struct strset *seen, char **msg)
{
	int k, *o;
	char *input, *c = canonical(in, n);
	struct stat a, b;

	if (!strsetadd(seen, c)) {
		free(c);
		return 0;	/* listed twice: one job */
	}
	input = safepath("", 0, in, n);
	k = cfgaddnode();
	memcpy(&nodes[k], &nodes[g], sizeof(nodes[k]));
	nodes[k].parent = g;
	nodes[k].pre = nodes[k].post = NULL;
	nodes[k].npre = nodes[k].npost = 0;
	nodes[k].input = input;
	nodes[k].name = jobname(nodes[g].name, input);
	nodes[k].output = NULL;
	nodes[k].expanded = 0;
	nodes[g].njobs++;
	if (!nodes[g].fan->outdir && !nodes[g].fan->suffix && !nodes[g].fan->output)
		return 0;
	nodes[k].output = outpath(g, input);
	if (!strcmp(nodes[k].output, input) || (stat(nodes[k].output, &b) == 0 &&
	    stat(input, &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)) {
		*msg = xmalloc(strlen(input) * 2 + 64);
		sprintf(*msg, "the output of input '%s' is the input itself", input);
		return -1;
	}
	o = setslot(&outputs, nodes[k].output, outputof);
	if (*o) {
		*msg = xmalloc(strlen(input) + strlen(nodes[*o - 1].name) +
		    strlen(nodes[k].output) + 64);
		sprintf(*msg, "input '%s' and job '%s' map to the same output '%s'", input,
		    nodes[*o - 1].name, nodes[k].output);
		return -1;
	}
	*o = k + 1;
	outputs.n++;
	return 0;
}

/* the blank-separated words of a patterns value, backslash escapes kept */
static int
globall(int g, struct strset *seen, char **msg)
{
	struct fan *f = nodes[g].fan;
	char *p, *w, *word;
	glob_t gl;
	size_t i;
	int k, r;

	for (k = 0; k < f->npat; k++) {
		for (p = f->pat[k]; *p; ) {
			p += strspn(p, " \t");
			if (!*p)
				break;
			for (w = p; *p && *p != ' ' && *p != '\t'; p++)
				if (*p == '\\' && p[1])
					p++;
			word = arenastr(w, p - w);
			r = glob(word, 0, NULL, &gl);
			if (r == GLOB_NOMATCH)
				continue;
			if (r) {
				*msg = xmalloc(strlen(word) + 64);
				sprintf(*msg, "inputs: cannot read '%s'", word);
				return -1;
			}
			for (i = 0; i < gl.gl_pathc; i++)
				if (addjob(g, gl.gl_pathv[i], strlen(gl.gl_pathv[i]), seen, msg) < 0) {
					globfree(&gl);
					return -1;
				}
			globfree(&gl);
		}
	}
	return 0;
}

/* input_list: one path a line */
static int
readlist(int g, struct strset *seen, char **msg)
{
	const char *file = nodes[g].fan->list;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int r = 0;

	if (!(f = fopen(file, "r"))) {
		*msg = xmalloc(strlen(file) + 128);
		sprintf(*msg, "input_list: %s: %s", file, strerror(errno));
		return -1;
	}
	while (r == 0 && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] == '\n')
			n--;
		if (n && line[n - 1] == '\r')
			n--;
		if (n && memchr(line, 0, n)) {
			*msg = xmalloc(strlen(file) + 64);
			sprintf(*msg, "input_list: %s: a NUL byte in a path", file);
			r = -1;
		} else if (n)
			r = addjob(g, line, n, seen, msg);
	}
	if (!r && ferror(f)) {
		*msg = xmalloc(strlen(file) + 128);
		sprintf(*msg, "input_list: %s: %s", file, strerror(errno));
		r = -1;
	}
	free(line);
	fclose(f);
	return r;
}

int
fanexpand(int g, char **msg)
{
	struct strset seen = {NULL, 0, 0};
	int r;

	nodes[g].first = nnodes;
	nodes[g].njobs = 0;
	absolute = nodes[g].dir != NULL;
	r = globall(g, &seen, msg);
	if (!r && nodes[g].fan->list)
		r = readlist(g, &seen, msg);
	strsetfree(&seen);
	if (r < 0) {
		for (r = nodes[g].first; r < nnodes; r++)
			nodes[r].want = 0;	/* made, but never run */
		return nodes[g].fan->line;
	}
	nodes[g].expanded = 1;
	return 0;
}

int
fanout(int n)
{
	return nodes[n].parent < 0 && nodes[n].fan && (nodes[n].fan->npat || nodes[n].fan->list);
}

int
fanprepare(char **msg)
{
	int i, *o;

	for (i = 0; i < nnodes; i++) {
		if (!nodes[i].fan || fanout(i) || !nodes[i].fan->output)
			continue;
		absolute = nodes[i].dir != NULL;
		nodes[i].output = outpath(i, "");
		o = setslot(&outputs, nodes[i].output, outputof);
		if (*o) {
			*msg = xmalloc(strlen(nodes[i].output) + strlen(nodes[*o - 1].name) + 64);
			sprintf(*msg, "output '%s' is also the output of '%s'", nodes[i].output,
			    nodes[*o - 1].name);
			return nodes[i].fan->outline;
		}
		*o = i + 1;
		outputs.n++;
	}
	return 0;
}

/* mkdir -p, without the last component of path */
static int
mkparents(char *path)
{
	char *p;

	for (p = path + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		if (mkdir(path, 0777) < 0 && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}

int
fanprep(int n, char **why)
{
	static char *made;	/* the directory made last */
	const char *tmp = fantmp(n);
	size_t d = basestart(tmp);

	*why = NULL;
	if (d > 1 && (!made || strlen(made) != d || memcmp(made, tmp, d))) {
		free(made);
		made = xmalloc(d + 1);
		memcpy(made, tmp, d);
		made[d] = 0;
		if (mkparents(made) < 0) {
			*why = made;
			made = NULL;
			return -1;
		}
	}
	if (unlink(tmp) < 0 && errno != ENOENT) {
		*why = (char *)tmp;
		return -1;
	}
	return 0;
}

unsigned long long
cmdhash(int n)
{
	struct node *nd = &nodes[n];
	unsigned long long h = 14695981039346656037ULL;
	const char *parts[6];
	struct stat st;
	char num[64];
	int i;
	const char *s;

	parts[0] = nd->cmd;
	parts[1] = nd->postcmd;
	parts[2] = nd->dir;
	parts[3] = nd->shell ? nd->shell : cfg.shell;
	parts[4] = nd->input;
	parts[5] = nd->output;
	for (i = 0; i < 6 + nd->nenv; i++) {
		s = i < 6 ? parts[i] : nd->env[i - 6];
		for (; s && *s; s++)
			h = (h ^ (unsigned char)*s) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL;	/* a part ends: a|bc is not ab|c */
	}
	if (nd->input && stat(nd->input, &st) == 0) {
		snprintf(num, sizeof(num), "%lld %lld.%09ld", (long long)st.st_size,
		    (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
		for (s = num; *s; s++)
			h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	}
	return h;
}
