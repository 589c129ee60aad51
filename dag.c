#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dagrun.h"

int dagcount[NSTATES];

/* ready nodes, best first: a binary heap keyed by priority, then the
 * longest remaining path, then file order */
struct entry {
	long long key;
	int n;
};

static int (*expandcb)(int);	/* make a fan-out node's jobs */
static int (*donecb)(int);	/* -r: did an earlier run do this job? */
static int *work, nwork, capwork;	/* nodes whose prerequisites are done */
int *dagedges;		/* the dependents of the config's nodes, one array: kept
			 * here when a node's slice of it gives way to its own */
static void (*skipcb)(int);	/* a node was skipped */
static struct entry *heap;
static int nheap, capheap;
static int *topo;	/* every node, prerequisites first */
static int ntopo;	/* the nodes of the config, before any job */
static int *alledges;	/* the prerequisites of the config's nodes, one array */

static long long
key(int n)
{
	long w = nodes[n].weight < 0x7fffffff ? nodes[n].weight : 0x7fffffff;

	return (long long)nodes[n].priority * 0x100000000LL + w;
}

static int
before(const struct entry *a, const struct entry *b)
{
	return a->key != b->key ? a->key > b->key : a->n < b->n;
}

/* a fan-out node counts as one job until its jobs exist */
static void
setstate(int n, int s)
{
	if (!nodes[n].expanded) {
		dagcount[nodes[n].state]--;
		dagcount[s]++;
	}
	nodes[n].state = s;
}

void
dagpush(int n)
{
	struct entry e;
	int i, p;

	if (nheap == capheap)
		heap = xrealloc(heap, (capheap = capheap ? capheap * 2 : 1024) * sizeof(*heap));
	setstate(n, SREADY);
	e.key = key(n);
	e.n = n;
	for (i = nheap++; i > 0 && before(&e, &heap[p = (i - 1) / 2]); i = p)
		heap[i] = heap[p];
	heap[i] = e;
}

int
dagpop(void)
{
	struct entry last;
	int top, i, c;

	if (!nheap)
		return -1;
	top = heap[0].n;
	last = heap[--nheap];
	for (i = 0; (c = 2 * i + 1) < nheap; i = c) {
		if (c + 1 < nheap && before(&heap[c + 1], &heap[c]))
			c++;
		if (!before(&heap[c], &last))
			break;
		heap[i] = heap[c];
	}
	heap[i] = last;
	setstate(top, SRUNNING);
	return top;
}

int
dagnready(void)
{
	return nheap;
}

/* tokenize every node's deps into pre, in file order, without repeats */
static int
resolve(char **msg)
{
	int *edges = NULL, *stamp, *off;
	size_t nedges = 0, cap = 0;
	struct dep *d, *rev;
	char *p, *t;
	int i, m;

	stamp = xmalloc(nnodes * sizeof(*stamp));
	off = xmalloc((nnodes + 1) * sizeof(*off));
	memset(stamp, 0xff, nnodes * sizeof(*stamp));
	for (i = 0; i < nnodes; i++) {
		off[i] = nedges;
		for (rev = NULL, d = nodes[i].deps; d; ) {
			struct dep *next = d->next;
			d->next = rev;
			rev = d;
			d = next;
		}
		for (d = rev; d; d = d->next) {
			for (p = d->name; *p; ) {
				p += strspn(p, " \t");
				if (!*p)
					break;
				t = p;
				p += strcspn(p, " \t");
				if (*p)
					*p++ = 0;
				if ((m = cfgfind(t)) < 0) {
					*msg = arena(strlen(t) + strlen(nodes[i].name) + 64);
					sprintf(*msg, "node '%s' depends on unknown node '%s'", nodes[i].name, t);
					free(edges);
					free(stamp);
					free(off);
					return d->line;
				}
				if (stamp[m] == i)
					continue;
				stamp[m] = i;
				if (nedges == cap)
					edges = xrealloc(edges, (cap = cap ? cap * 2 : 4096) * sizeof(*edges));
				edges[nedges++] = m;
			}
		}
		nodes[i].deps = NULL;
	}
	off[nnodes] = nedges;
	alledges = edges;
	for (i = 0; i < nnodes; i++) {
		nodes[i].pre = edges ? edges + off[i] : NULL;	/* none at all: no array */
		nodes[i].npre = off[i + 1] - off[i];
	}
	free(stamp);
	free(off);
	return 0;
}

/* dependents from prerequisites, one array for all */
static void
invert(void)
{
	int *all, *fill, i, j, total = 0;

	for (i = 0; i < nnodes; i++) {
		total += nodes[i].npre;
		for (j = 0; j < nodes[i].npre; j++)
			nodes[nodes[i].pre[j]].npost++;
	}
	all = dagedges = xmalloc((total ? total : 1) * sizeof(*all));
	fill = xmalloc(nnodes * sizeof(*fill));
	for (i = 0, total = 0; i < nnodes; i++) {
		nodes[i].post = all + total;
		fill[i] = 0;
		total += nodes[i].npost;
	}
	for (i = 0; i < nnodes; i++)
		for (j = 0; j < nodes[i].npre; j++) {
			int p = nodes[i].pre[j];
			nodes[p].post[fill[p]++] = i;
		}
	free(fill);
}

/* a cycle among the nodes Kahn's algorithm left, as text */
static int
cycle(const int *left, char **msg)
{
	int *seen, *next, i, n, start, best;
	size_t len = 64;
	char *s;

	seen = xcalloc(nnodes, sizeof(*seen));
	next = xmalloc(nnodes * sizeof(*next));
	for (n = 0; !left[n]; n++)
		;
	/* walk back along unfinished prerequisites until one repeats */
	while (!seen[n]) {
		seen[n] = 1;
		for (i = 0; !left[nodes[n].pre[i]]; i++)
			;
		next[n] = nodes[n].pre[i];
		n = next[n];
	}
	start = best = n;
	do {
		if (n < best)
			best = n;
		len += strlen(nodes[n].name) + 4;
		n = next[n];
	} while (n != start);
	len += strlen(nodes[best].name);
	s = *msg = arena(len);
	s += sprintf(s, "dependency cycle: %s", nodes[best].name);
	n = best;
	do {
		n = next[n];
		s += sprintf(s, " -> %s", nodes[n].name);
	} while (n != best);
	free(seen);
	free(next);
	return nodes[best].line;
}

int
dagbuild(char **msg)
{
	int *order, *left, i, j, n, head = 0, tail = 0, line;

	if ((line = resolve(msg)))
		return line;
	invert();
	order = xmalloc(nnodes * sizeof(*order));
	left = xmalloc(nnodes * sizeof(*left));
	for (i = 0; i < nnodes; i++)
		if (!(left[i] = nodes[i].npre))
			order[tail++] = i;
	while (head < tail) {
		n = order[head++];
		for (j = 0; j < nodes[n].npost; j++)
			if (!--left[nodes[n].post[j]])
				order[tail++] = nodes[n].post[j];
	}
	if (tail < nnodes) {
		line = cycle(left, msg);
		free(order);
		free(left);
		return line;
	}
	free(left);
	topo = order;
	ntopo = nnodes;
	return 0;
}

/* longest remaining path among the selected nodes, in milliseconds of
 * earlier runs; a node never timed counts as the mean of those that were */
static void
weigh(void)
{
	int i, j, n, m, known = 0;
	double sum = 0, mean;
	long w;

	for (i = 0; i < nnodes; i++)
		if (nodes[i].want && nodes[i].cost > 0) {
			sum += nodes[i].cost;
			known++;
		}
	mean = known ? sum / known : 1;
	for (i = ntopo - 1; i >= 0; i--) {
		n = topo[i];
		if (!nodes[n].want)
			continue;
		w = 0;
		for (j = 0; j < nodes[n].npost; j++) {
			m = nodes[n].post[j];
			if (nodes[m].want && nodes[m].weight > w)
				w = nodes[m].weight;
		}
		nodes[n].weight = w + 1 + (long)(1000 * (nodes[n].cost > 0 ? nodes[n].cost : mean));
	}
}

int
dagselect(char **targets, int ntargets)
{
	int *stack, sp = 0, i, j, n;

	if (!ntargets) {
		for (i = 0; i < nnodes; i++)
			nodes[i].want = 1;
		return -1;
	}
	stack = xmalloc((nnodes + 1) * sizeof(*stack));
	for (i = 0; i < ntargets; i++) {
		if ((n = cfgfind(targets[i])) < 0) {
			free(stack);
			return i;
		}
		if (nodes[n].want)
			continue;
		nodes[n].want = 1;
		stack[sp++] = n;
		while (sp) {
			n = stack[--sp];
			for (j = 0; j < nodes[n].npre; j++)
				if (!nodes[nodes[n].pre[j]].want) {
					nodes[nodes[n].pre[j]].want = 1;
					stack[sp++] = nodes[n].pre[j];
				}
		}
	}
	free(stack);
	return -1;
}

int
dagtotal(void)
{
	int i, t = 0;

	for (i = 0; i < nnodes; i++)
		t += nodes[i].want && !nodes[i].expanded;
	return t;
}

static void finish(int, int);

static void
later(int n)
{
	if (nwork == capwork)
		work = xrealloc(work, (capwork = capwork ? 2 * capwork : 256) * sizeof(*work));
	work[nwork++] = n;
}

/* does n follow a job that runs in this run? */
static int
freshpre(int n)
{
	int j;

	for (j = 0; j < nodes[n].npre; j++)
		if (nodes[nodes[n].pre[j]].fresh)
			return 1;
	return 0;
}

static void jobend(int, int);

/* n's prerequisites are done: queue it, or its jobs (or, with -r, take
 * what an earlier run did) */
static void
ready(int n)
{
	int k, end, must;

	if (!fanout(n)) {
		if (donecb && !freshpre(n) && donecb(n))
			finish(n, SOK);
		else
			dagpush(n);
		return;
	}
	if (!nodes[n].expanded) {
		if (expandcb(n) < 0) {
			finish(n, SFAILED);
			return;
		}
		dagcount[nodes[n].state]--;
		for (k = nodes[n].first; k < nodes[n].first + nodes[n].njobs; k++) {
			nodes[k].state = SWAITING;
			dagcount[SWAITING]++;
		}
	}
	nodes[n].state = SRUNNING;
	nodes[n].pending = nodes[n].njobs;
	nodes[n].failed = 0;
	must = freshpre(n);
	end = nodes[n].first + nodes[n].njobs;
	for (k = nodes[n].first; k < end; k++) {
		nodes[k].weight = nodes[n].weight;
		if (donecb && !must && donecb(k))
			jobend(k, SOK);
		else
			dagpush(k);
	}
	if (!nodes[n].njobs)
		finish(n, SOK);
}

static void
drain(void)
{
	while (nwork)
		ready(work[--nwork]);
}

void
dagstart(int (*expand)(int), void (*skipped)(int), int (*done)(int))
{
	int i;

	expandcb = expand;
	skipcb = skipped;
	donecb = done;
	weigh();
	for (i = 0; i < nnodes; i++) {
		if (!nodes[i].want)
			continue;
		nodes[i].state = SWAITING;
		nodes[i].pending = nodes[i].npre;
		if (!nodes[i].expanded)
			dagcount[SWAITING]++;
	}
	for (i = 0; i < nnodes; i++)
		if (nodes[i].want && nodes[i].parent < 0 && !nodes[i].npre)
			later(i);
	drain();
}

/* skip everything downstream of n that has not started */
static void
skipfrom(int n, void (*cb)(int))
{
	int *stack, sp = 0, j, m;

	stack = xmalloc((dagcount[SWAITING] + 1) * sizeof(*stack));
	stack[sp++] = n;
	while (sp) {
		n = stack[--sp];
		for (j = 0; j < nodes[n].npost; j++) {
			m = nodes[n].post[j];
			if (!nodes[m].want || nodes[m].state != SWAITING)
				continue;
			setstate(m, SSKIPPED);
			if (cb)
				cb(m);
			stack[sp++] = m;
		}
	}
	free(stack);
}

/* n ended in state s: on to its dependents */
static void
finish(int n, int s)
{
	int j, m;

	setstate(n, s);
	nodes[n].failed = s != SOK;
	if (s == SCANCELLED)
		return;	/* dependents are cancelled with the rest of the run */
	if (s != SOK && !nodes[n].allowfail) {
		skipfrom(n, skipcb);
		return;
	}
	for (j = 0; j < nodes[n].npost; j++) {
		m = nodes[n].post[j];
		if (nodes[m].want && !--nodes[m].pending && nodes[m].state == SWAITING)
			later(m);
	}
}

void
dagdone(int n, int s)
{
	nodes[n].fresh = 1;
	if (nodes[n].parent >= 0)
		nodes[nodes[n].parent].fresh = 1;
	jobend(n, s);
	drain();
}

/* n ended: on to its dependents, or its fan-out node's */
static void
jobend(int n, int s)
{
	int g = nodes[n].parent;

	finish(n, s);
	if (g < 0)
		return;
	if (s != SOK && !nodes[n].allowfail) {
		nodes[g].failed |= s == SCANCELLED ? 2 : 1;
		if (s != SCANCELLED)
			skipfrom(g, skipcb);	/* the node cannot succeed now */
	}
	if (!--nodes[g].pending)
		finish(g, nodes[g].failed & 1 ? SFAILED : nodes[g].failed ? SCANCELLED : SOK);
}

void
dagmark(int n, int s)
{
	setstate(n, s);
}

void
dagcancel(int s, void (*cb)(int))
{
	int i;

	nheap = 0;
	for (i = 0; i < nnodes; i++) {
		if (!nodes[i].want || (nodes[i].state != SWAITING && nodes[i].state != SREADY))
			continue;
		setstate(i, s);
		if (cb)
			cb(i);
	}
}

/* the prerequisites of new node i, resolved; 0 or a line with *msg */
static int
resolvenew(int i, int *stamp, char **msg)
{
	struct dep *d, *rev = NULL, *next;
	int *pre = NULL, npre = 0, m;
	char *p, *t;

	for (d = nodes[i].deps; d; d = next) {
		next = d->next;
		d->next = rev;
		rev = d;
	}
	nodes[i].deps = NULL;
	for (d = rev; d; d = d->next)
		for (p = d->name; *p; ) {
			p += strspn(p, " \t");
			if (!*p)
				break;
			t = p;
			p += strcspn(p, " \t");
			if (*p)
				*p++ = 0;
			if ((m = cfgfind(t)) < 0) {
				*msg = arena(strlen(t) + strlen(nodes[i].name) + 64);
				sprintf(*msg, "node '%s' depends on unknown node '%s'", nodes[i].name, t);
				free(pre);
				return d->line;
			}
			if (stamp[m] == i)
				continue;
			stamp[m] = i;
			pre = xrealloc(pre, (npre + 1) * sizeof(*pre));
			pre[npre++] = m;
		}
	nodes[i].pre = pre;
	nodes[i].npre = npre;
	return 0;
}

/* a prerequisite's state: 1 done well, -1 never will be, 0 not yet */
static int
settled(int p)
{
	int s = nodes[p].state;

	if (!nodes[p].want)
		return 1;	/* not part of this run: nothing to wait for */
	if (s == SOK || (nodes[p].allowfail && (s == SFAILED || s == STIMEOUT)))
		return 1;
	if (s == SFAILED || s == STIMEOUT || s == SSKIPPED || s == SCANCELLED)
		return -1;
	return 0;
}

/* one more dependent for p: its own array from now on (the slice of the
 * shared one stays where it is) */
static void
addpost(int p, int i)
{
	int *post;

	if (nodes[p].ownpost) {
		post = xrealloc(nodes[p].post, (nodes[p].npost + 1) * sizeof(*post));
	} else {
		post = xmalloc((nodes[p].npost + 1) * sizeof(*post));
		memcpy(post, nodes[p].post, nodes[p].npost * sizeof(*post));
		nodes[p].ownpost = 1;
	}
	post[nodes[p].npost++] = i;
	nodes[p].post = post;
}

/* the arrays of nodes from first on, which do not join after all */
static void
dropnew(int first)
{
	int i;

	for (i = first; i < nnodes; i++) {
		free(nodes[i].pre);
		free(nodes[i].post);
		nodes[i].pre = nodes[i].post = NULL;
	}
}

int
dagadd(int first, char **msg)
{
	int *stamp, *left, *order, *bad, i, j, p, n, line = 0, head = 0, tail = 0, total;

	stamp = xmalloc(nnodes * sizeof(*stamp));
	memset(stamp, 0xff, nnodes * sizeof(*stamp));
	for (i = first; i < nnodes; i++)
		nodes[i].pre = nodes[i].post = NULL;
	for (i = first; i < nnodes && !line; i++)
		line = resolvenew(i, stamp, msg);
	free(stamp);
	if (line) {
		dropnew(first);
		return line;
	}
	/* a cycle can only run through new nodes: the old ones name none */
	left = xcalloc(nnodes, sizeof(*left));
	order = xmalloc((nnodes - first) * sizeof(*order));
	for (i = first; i < nnodes; i++) {
		for (j = 0; j < nodes[i].npre; j++)
			left[i] += nodes[i].pre[j] >= first;
		nodes[i].npost = 0;
	}
	for (i = first; i < nnodes; i++) {
		for (j = 0; j < nodes[i].npre; j++)
			if ((p = nodes[i].pre[j]) >= first)
				nodes[p].npost++;
		if (!left[i])
			order[tail++] = i;
	}
	for (i = first; i < nnodes; i++) {
		nodes[i].post = xmalloc((nodes[i].npost + 1) * sizeof(int));
		nodes[i].npost = 0;
		nodes[i].ownpost = 1;
	}
	for (i = first; i < nnodes; i++)
		for (j = 0; j < nodes[i].npre; j++)
			if ((p = nodes[i].pre[j]) >= first)
				nodes[p].post[nodes[p].npost++] = i;
	while (head < tail)
		for (n = order[head++], j = 0; j < nodes[n].npost; j++)
			if (!--left[nodes[n].post[j]])
				order[tail++] = nodes[n].post[j];
	if (tail < nnodes - first) {
		line = cycle(left, msg);
		free(left);
		free(order);
		dropnew(first);
		return line;
	}
	free(left);
	/* join: under unfinished old prerequisites, weighed, counted */
	bad = xcalloc(nnodes - first, sizeof(*bad));
	for (i = first; i < nnodes; i++) {
		nodes[i].want = 1;
		nodes[i].pending = 0;
		for (j = 0; j < nodes[i].npre; j++) {
			p = nodes[i].pre[j];
			if (p >= first) {
				nodes[i].pending++;
				continue;
			}
			if ((total = settled(p)) < 0)
				bad[i - first] = 1;
			else if (!total) {
				addpost(p, i);
				nodes[i].pending++;
			}
		}
	}
	for (i = tail - 1; i >= 0; i--) {
		n = order[i];
		nodes[n].link = bad[n - first];	/* for dagaddgo */
		nodes[n].weight = 1000;
		for (j = 0; j < nodes[n].npost; j++)
			if (nodes[nodes[n].post[j]].weight + 1000 > nodes[n].weight)
				nodes[n].weight = nodes[nodes[n].post[j]].weight + 1000;
		nodes[n].state = SWAITING;
		dagcount[SWAITING]++;
	}
	free(bad);
	free(order);
	return 0;
}

void
dagaddgo(int first)
{
	int n, end = nnodes;

	for (n = first; n < end; n++) {
		if (nodes[n].state != SWAITING)
			continue;
		if (nodes[n].link) {
			setstate(n, SSKIPPED);
			if (skipcb)
				skipcb(n);
			skipfrom(n, skipcb);
		} else if (!nodes[n].pending)
			later(n);
	}
	drain();
}

void
dagreset(void)
{
	int i;

	for (i = 0; i < nnodes; i++)
		if (nodes[i].ownpost)
			free(nodes[i].post);
	free(alledges);
	free(dagedges);
	free(topo);
	free(heap);
	free(work);
	alledges = dagedges = topo = work = NULL;
	heap = NULL;
	ntopo = nheap = capheap = nwork = capwork = 0;
	expandcb = donecb = NULL;
	skipcb = NULL;
	memset(dagcount, 0, sizeof(dagcount));
}
