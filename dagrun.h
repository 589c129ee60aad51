/* dagrun: run a graph of commands in parallel */

#define VERSION "0.1.0"

#if defined(__GNUC__)
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#endif

/* exit statuses: the one table, mirrored in dagrun.1 EXIT STATUS */
enum {
	EXOK = 0,	/* every job succeeded */
	EXFAIL = 1,	/* a job failed, timed out or was skipped */
	EXUSAGE = 2,	/* usage or config error, nothing was run */
	EXLOCK = 3,	/* another dagrun holds the state directory */
	EXTIME = 4,	/* deadline passed or a resource wait timed out */
};

/* job states, in the order the summary lists them */
enum state {
	SWAITING,
	SREADY,
	SCALIBRATING,
	SRUNNING,
	SSUSPENDED,
	SOK,
	SFAILED,
	STIMEOUT,
	SCANCELLED,
	SSKIPPED,
	NSTATES
};

enum onfail {
	FSTOP,
	FCONTINUE,
	FABORT,
};

/* a prerequisite as written, resolved by dagbuild */
struct dep {
	char *name;
	int line;
	struct dep *next;
};

/* a fan-out node's inputs and outputs, shared by its jobs; also a plain
 * node's declared output */
struct fan {
	char **pat;		/* inputs patterns, npat of them */
	int npat;
	char *list;		/* input_list file */
	char *outdir, *suffix, *output;	/* output_dir, output_suffix, output */
	int line;		/* of the first fan-out key */
	int outline;		/* of output */
	int calibrate;		/* 0 no, 1 yes (remembered), 2 always */
	double calpct[3];	/* calibrate_{cpu,memory,disk}_percent */
};

struct node {
	char *name;
	char *cmd;
	char *dir;		/* working directory, or NULL */
	char *shell;		/* interpreter for this node, or NULL */
	char **env;		/* K=V, nenv of them */
	char *postcmd;		/* validation command after success, or NULL */
	struct fan *fan;	/* inputs and outputs, or NULL */
	char *input;		/* a fan-out job's input */
	char *output;		/* a job's output, its final name */
	long long memlimit;	/* RLIMIT_AS, 0 none */
	struct dep *deps;	/* as written; NULL after dagbuild */
	int *pre, *post;	/* prerequisites and dependents (node indices) */
	int npre, npost;
	int nenv;
	int line;		/* of the section header */
	int cmdline, postline;
	int parent;		/* a fan-out job's node, or -1 */
	int first, njobs;	/* a fan-out node's jobs, once expanded */
	int limit;		/* jobs of this node at once, 0 any (calibration) */
	int nrunning;		/* jobs of this node running */
	int parked, parktail;	/* jobs held by limit, -1 none, chained by link */
	int link;
	int nice;
	int retries;		/* attempts after the first */
	int attempts;		/* attempts started */
	int pool;		/* index in cfg.pools, or -1 */
	int poolline;
	char *poolname;
	char **slurmargs;	/* slurm_args ([run]'s, then the node's), nslurm of them */
	int nslurm;
	int execline;		/* of executor or slurm_args */
	double timeout;		/* seconds, 0 none */
	double retrydelay;	/* seconds before the second attempt, then doubling */
	double cpus;		/* declared CPUs, 0 none */
	long long mem;		/* declared bytes, 0 none */
	int priority;
	int pending;		/* prerequisites not yet done */
	long weight;		/* longest path to the end of the graph, ms */
	float cost;		/* seconds an earlier run took, 0 unknown */
	float secs;		/* this run: the last attempt's, or a fan-out node's jobs' sum */
	unsigned char state;
	unsigned char allowfail;
	unsigned char want;	/* selected by the targets */
	unsigned char direct;	/* cmd needs no shell */
	unsigned char failed;	/* ended badly, allowed or not */
	unsigned char stale;	/* logs/NAME.out (1), .err (2) left by a run before */
	unsigned char postdirect;	/* post needs no shell */
	unsigned char hasnice;
	unsigned char expanded;	/* a fan-out node whose jobs exist */
	unsigned char calib;	/* measuring one job before the rest */
	unsigned char ownpost;	/* post is its own allocation, not the shared array's */
	unsigned char fresh;	/* ran in this run (or, for a fan-out node, a job of it) */
	unsigned char executor;	/* 0 as [run] says, 1 local, 2 slurm */
	unsigned char slurm;	/* its jobs run through srun */
};

/* [pool NAME]: at most size jobs of its nodes at once */
struct pool {
	char *name;
	int line, size;
	int running;		/* jobs of the pool running now */
	int parked, parktail;	/* jobs held by it, -1 none, chained by link */
};

/* a command whose output sets a limit: [run] capacity, or a [probe] */
struct plugin {
	char *name;		/* "capacity", or the probe's name */
	char *cmd;
	int line;		/* of the section or the key */
	int probe;		/* 0: capacity, 1: probe */
	int hasmin, hasmax;
	double min, max;	/* probe: jobs wait while the value is outside */
	double every, timeout;	/* seconds */
	struct plugin *next;
};

struct config {
	const char *file;	/* as given */
	char *dir;		/* the config file's directory */
	char *statedir;
	char *shell;
	int jobs;		/* -1: not set */
	int onfail;
	double killgrace;	/* seconds */
	double deadline;	/* seconds for the whole run, 0 none */
	int quiet, verbose;
	const char *timeline;	/* -t */
	int resume;		/* -r */
	/* [resources]: launch gates, each < 0 when not set */
	double cpupct, mempct, loadmax, suspendpct, cpupress, mempress;
	long long diskfree;
	char *diskpath;		/* NULL: the state directory */
	double poll;		/* seconds between checks while waiting */
	double waittimeout;	/* give up waiting, 0 never */
	struct plugin *plugins;	/* capacity first, then probes in file order */
	struct pool *pools;
	int npools;
	char *notify;		/* run after every job end and at the run's end */
	double notifytimeout;
	char *metrics;		/* metrics_file */
	int executor;		/* 1 local, 2 slurm */
	char **slurmargs;	/* [run] slurm_args */
	int nslurm;
};

struct var {
	char *name, *value;
	struct var *next;
};

/* main.c: allocation, errors, time */
extern const char *argv0;
void warn(const char *, ...);
NORETURN void fatal(const char *, ...);
void *xmalloc(size_t);
void *xrealloc(void *, size_t);
void *xcalloc(size_t, size_t);
char *xstrdup(const char *);
/* bump allocation for data that lives until exit */
void *arena(size_t);
char *arenastr(const char *, size_t);
/* testing aid: free everything arena gave */
void arenareset(void);
/* monotonic and wall clock seconds */
double mono(void);
double wall(void);

/* cfg.c: text to config and nodes */
extern struct config cfg;
extern struct node *nodes;
extern int nnodes;
/* parse file with the -D definitions; exits 2 with file:line on error */
void cfgparse(const char *file, struct var *defs);
/* the node named s, or -1 */
int cfgfind(const char *s);
/* the [node] sections of a spawn file as new nodes at the end of nodes:
 * their number, or -1 with *msg ("file:line: message"), nothing added */
int cfgspawn(const char *file, char **msg);
/* forget the nodes from first on (a spawn file refused later) */
void cfgunspawn(int first);
/* testing aids: cfgparse with an error returned (its line, and *msg
 * "file:line: message") instead of exiting, 0 when the file is good; and
 * every parser global as before the first parse (after dagreset) */
int cfgtry(const char *file, struct var *defs, char **msg);
void cfgreset(void);
/* a new zeroed node at the end of nodes (which may move) */
int cfgaddnode(void);
/* report a config error at line and exit 2 */
NORETURN void cfgerror(int line, const char *, ...);
/* a plain unsigned decimal (1.5; no sign, exponent or hex) at the start
 * of v, *end after it; -1 if there is none */
double cfgdecimal(const char *v, const char **end);
/* does cmd need the shell (metacharacters or a shell word first)? */
int cfgneedshell(const char *cmd);

/* dag.c: graph, readiness, cycles, priorities; no I/O */
/* resolve deps, find cycles, compute weights; on error return the
 * offending line and set *msg */
int dagbuild(char **msg);
/* keep only the targets and what they need; returns -1 or the index of an
 * unknown target */
int dagselect(char **targets, int ntargets);
/* number of selected jobs */
int dagtotal(void);
/* queue every selected node without prerequisites; expand makes a fan-out
 * node's jobs when it is ready (the number, or -1 when it failed), skipped
 * hears of each node skipped after a failure; done (or NULL) says whether
 * an earlier run did a job whose prerequisites did not run now (-r) */
void dagstart(int (*expand)(int), void (*skipped)(int), int (*done)(int));
/* next ready node to start, or -1 */
int dagpop(void);
int dagnready(void);
/* put back a popped node */
void dagpush(int);
/* n ended in state s; dependents become ready or, on failure, skipped */
void dagdone(int n, int s);
/* a running node is now in state s (running or suspended) */
void dagmark(int n, int s);
/* nodes from first on (a spawn file's) join the running graph: 0, or the
 * line of an unknown prerequisite or a cycle and *msg; the graph is
 * unchanged then */
int dagadd(int first, char **msg);
/* then the ones with nothing to wait for start, those after a failure are
 * skipped */
void dagaddgo(int first);
/* mark every selected node still waiting or ready as s, reported */
void dagcancel(int s, void (*cb)(int));
/* count of selected nodes per state */
extern int dagcount[NSTATES];
/* testing aid: forget the graph dagbuild made (a spawn file's nodes that
 * joined must have been dropped first), before cfgreset */
void dagreset(void);

/* res.c: what the machine offers */
/* CPUs this process may use: affinity, cgroup quota */
int rescpus(void);
/* root prefix for /proc and /sys reads (testing aid) */
const char *resroot(void);
/* memory in use and the limit it counts against (RAM, or a lower cgroup
 * memory.max), bytes; -1 unknown */
int resmem(long long *used, long long *limit);
/* cumulative busy and total CPU ticks; -1 unknown */
int rescputicks(long long *busy, long long *total);
/* 1-minute load average and runnable tasks (-1 unknown); -1 unknown */
int resload(double *l1, int *runnable);
/* PSI "some avg10" percent for "cpu" or "memory"; -1 unknown */
double respressure(const char *what);
/* bytes free to unprivileged users on path's file system; -1 unknown */
long long resdiskfree(const char *path);
/* the process groups whose leader is a job of the state directory at
 * statedir (absolute; by its DAGRUN_STATE_DIR), up to max; -1 unknown */
int resjobs(const char *statedir, long *pg, int max);
/* has process group pg a member that is not a zombie? */
int resgroupalive(long pg);
/* when process pid started, wall clock seconds; -1 unknown */
double resstarted(long pid);
/* resident bytes of process pid; -1 unknown */
long long resrss(long pid);

/* lock.c */
/* hold dir/lock for the life of the process; returns fd or exits 3 */
int lockacquire(const char *dir);

/* log.c: journal, logs, console */
struct jobinfo {
	int node;
	int state;
	int status;	/* exit status, 128+n for signal n, -1 none */
	int attempt;
	long pid;
	double start, end;	/* wall clock */
	double cpu;		/* user+sys seconds */
	long maxrss;		/* KiB */
	int allowed;		/* failure allowed */
	double retry;		/* seconds until the next attempt, -1 none */
};
void logopen(const char *statedir);
/* durations of earlier runs into node costs */
void loghistory(const char *statedir);
void logclose(void);
void logstart(int node, int attempt, long pid, unsigned long long hash, const char *cmd);
/* -r: job n is taken as done from an earlier run */
void logresumed(int n);
void logend(const struct jobinfo *);
void logskip(int node);
void loginfo(const char *, ...);
/* s on f with newline, tab and other control bytes escaped (\n \t \xHH),
 * so that one line stays one line */
void logputs(FILE *f, const char *s);
/* a message on stderr, clear of the status line */
void logwarn(const char *, ...);
/* job n runs alone to calibrate its node */
void logcalibrating(int n);
/* job added n nodes from first on through its spawn file */
void logspawn(int job, int first, int n);
/* fan-out node n has its jobs */
void logexpand(int n);
/* which of a fan-out job's log files (1 out, 2 err) an earlier run left */
int logstale(int n);
/* the calibration measured for a node in an earlier run: 0, or -1 none */
int logcalread(const char *node, double v[3]);
void logcalsave(const char *node, double cpu, double rss, double bytes);
void logerror(const char *, ...);
void logrunstart(int total);
void logrunend(int status, double secs);
/* redraw the status line: nrun running, the oldest node for elapsed s */
void logstatus(int nrun, int node, double elapsed, const char *waiting);
/* a job was stopped (on) or continued for memory at pct */
void logsuspend(int node, int on, double pct);
void logoutput(int node, int fd, const char *buf, size_t len, int *bol);
/* flush stdout, and the logs at most twice a second; the metrics file
 * is rewritten at most once a second */
void logflush(void);
/* seconds until the journal must be made durable, 1e9 when it is */
double logsyncwake(double now);
/* a state file (journal, logs) could not be written */
int logbroken(void);
/* seconds until the metrics file is due again */
double logmetricswake(double now);
/* buffered log lines wait for a flush */
int logdirty(void);
/* a status line is drawn on the terminal */
int logtty(void);
char *logpath(int node, int fd);

/* fan.c: inputs to jobs, outputs, commands with templates filled */
/* is n a fan-out node (inputs or input_list)? */
int fanout(int n);
/* make the jobs of fan-out node n; 0, or the config line of an error and
 * *msg (allocated) */
int fanexpand(int n, char **msg);
/* the declared outputs of plain nodes; 0 or a line and *msg */
int fanprepare(char **msg);
/* the temporary name job n writes its output to, until it succeeds */
const char *fantmp(int n);
/* ready job n's output directory, no stale temporary in it; 0, or -1
 * with errno and the path in *why */
int fanprep(int n, char **why);
/* what makes job n the job it is (commands, environment, directory,
 * input and its size and time, output), hashed for -r */
unsigned long long cmdhash(int n);
/* argv to run cmd with [run] shell, as jobs run theirs */
char **shellargv(const char *cmd);
/* argv for job n's cmd (or post), templates filled */
char **cmdargv(int n, int attempt, int post);
/* job n's cmd (or post) as the shell would read it, into *buf */
void cmdexpand(int n, int attempt, int post, char **buf, size_t *cap);

/* plug.c: capacity and probe commands */
struct pollfd;
/* ready the plugins; nul is /dev/null, their stderr goes to dir/logs */
void plugsetup(int nul, const char *dir);
/* read their output, end those past their timeout, start those due (when
 * start) */
void plugwork(double now, int start);
/* a reaped pid with its status: 1 if it was a plugin's */
int plugreap(long pid, int status);
/* their open pipes into pfd; returns how many */
int plugfds(struct pollfd *pfd);
/* seconds until a plugin is due or overdue */
double plugwake(double now);
/* may a job start beside nrun running?  If not, why says which holds it */
int plugadmit(int nrun, char *why, size_t n);
/* kill and reap the capacity and probe commands still running */
void plugstop(void);
/* kill and reap the notify command running */
void plugnotifystop(void);
int plugcount(void);
/* plugin i's name and last value: 1, 0 when it has none, -1 past the end */
int plugvalue(int i, const char **name, double *v);
/* queue the notify command for an event ("end" of a job, or "done") */
void plugnotify(const char *event, const char *job, const char *node, const char *state,
    int status, int attempt, double secs, double retry);
/* reap, time out and start notify commands, one at a time */
void plugnotifywork(double now);
/* a notify command runs or waits */
int plugbusy(void);
/* seconds until the notify command running times out */
double plugnotifywake(double now);

/* show.c: the journal read back */
/* -s: the state of the last run in dir, for people or (tsv) scripts */
int showstatus(const char *dir, int tsv);
/* -t: the last run as an SVG or (.json) Chrome trace in file; 0 or -1 */
int showtimeline(const char *file, const char *dir);

/* every run the journal in dir holds, for what follows */
void showprior(const char *dir);
/* did job name succeed with this hash, and not run since? */
int showdone(const char *name, unsigned long long hash);
/* attempts job name made in the last run without succeeding */
int showattempts(const char *name);
/* jobs of the last run, if it did not end, that started and never ended:
 * their process groups, start times and names; how many */
int showorphans(long *pg, double *start, const char **name, int max);
/* the Slurm job ids of those jobs; how many */
int showslurm(long *ids, int max);

/* slurm.c: executor = slurm */
/* as srun's prolog, the Slurm job id into the journal: 1 if it was that */
int slurmprolog(void);
/* ready for Slurm jobs of the state directory stateabs: srun found, the
 * cluster answers (node: the first node that uses it, -1 to learn dagrun's
 * own path only); NULL, or why not */
const char *slurmsetup(const char *stateabs, int node);
/* srun's path, NULL before slurmsetup succeeded */
const char *slurmsrun(void);
/* job n's argv run through srun */
char **slurmargv(int n, char **argv);
/* why Slurm (not the job's command) ended a job with status, its stderr
 * in fd: NULL, or the reason in buf */
const char *slurmlost(int fd, int status, char *buf, size_t cap);
/* cancel the state directory's Slurm jobs still queued (its own, and
 * ids) and wait until they have left; does nothing unless always, ids or
 * a Slurm job in this run */
void slurmsweep(const long *ids, int nids, int always);

/* sched.c */
/* run the selected graph; returns the exit status */
int schedrun(void);
