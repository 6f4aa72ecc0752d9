/*
 * shim.c - foundry-shim: the container's PID 1, its proxy bridge, and hook events.
 *
 *   foundry-shim init [--proxy-socket PATH] [--proxy-listen ADDR] [--] [CMD ARGS...]
 *   foundry-shim notify EVENT < event.json
 *   foundry-shim version
 *
 * init reaps every zombie, forwards signals to CMD's process group, and exits with CMD's
 * status (128 + signal when it was killed). Without CMD it idles so `docker exec` sessions
 * have a container to live in, and exits 0 at once on SIGTERM. With FOUNDRY_PROXY_SOCKET
 * (or --proxy-socket) it also runs the bridge (bridge.c) in the same process.
 */
#include "shim.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SHIM_VERSION "0.1.0"

int shim_epfd = -1;

uint64_t shim_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void shim_log(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = snprintf(line, sizeof line, "foundry-shim: ");
	vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	line[len++] = '\n';
	/* One write, so lines from PID 1 and its children do not interleave. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void shim_loop_init(void)
{
	shim_epfd = epoll_create1(EPOLL_CLOEXEC);
	if (shim_epfd < 0) {
		shim_log("epoll_create1: %s", strerror(errno));
		exit(125);
	}
}

int shim_watch_add(shim_watch *w, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};
	return epoll_ctl(shim_epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

int shim_watch_mod(shim_watch *w, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};
	return epoll_ctl(shim_epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void shim_watch_del(shim_watch *w)
{
	epoll_ctl(shim_epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

void shim_loop_once(int timeout_ms)
{
	struct epoll_event evs[64];
	int bt = shim_bridge_timeout();
	if (bt >= 0 && (timeout_ms < 0 || bt < timeout_ms))
		timeout_ms = bt;
	int n = epoll_wait(shim_epfd, evs, 64, timeout_ms);
	if (n < 0 && errno != EINTR) {
		shim_log("epoll_wait: %s", strerror(errno));
		exit(125);
	}
	for (int i = 0; i < n; i++) {
		shim_watch *w = evs[i].data.ptr;
		w->cb(w, evs[i].events);
	}
	shim_bridge_after();
}

/* ---- init ---- */

/* Signals init passes on to the command; the others keep their defaults in the child. */
static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static struct {
	shim_watch sig;
	pid_t child;      /* 0 when there is none (idle mode) or it has exited */
	int exit_status;  /* set once the child has exited */
	int done;
} init;

static int status_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 125;
}

static void reap(void)
{
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p <= 0)
			return;
		if (p == init.child) {
			init.exit_status = status_code(st);
			init.child = 0;
			init.done = 1;
		}
	}
}

static int is_forwarded(int sig)
{
	for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
		if (forwarded[i] == sig)
			return 1;
	return 0;
}

static void on_signal(shim_watch *w, uint32_t events)
{
	(void)events;
	struct signalfd_siginfo si;
	while (read(w->fd, &si, sizeof si) == (ssize_t)sizeof si) {
		int sig = (int)si.ssi_signo;
		if (sig == SIGCHLD) {
			reap();
		} else if (init.child > 0 && is_forwarded(sig)) {
			/* The child leads its own process group (see spawn); if it has not
			 * got there yet, signal it alone. */
			if (kill(-init.child, sig) < 0 && errno == ESRCH)
				kill(init.child, sig);
		} else if (!init.child && !init.done &&
			   (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT)) {
			init.exit_status = 0;
			init.done = 1;
		}
	}
	/* A SIGCHLD can be merged with one read before; reaping again is cheap. */
	reap();
}

static pid_t spawn(char **argv, const sigset_t *oldmask)
{
	pid_t pid = fork();
	if (pid < 0) {
		shim_log("fork: %s", strerror(errno));
		exit(125);
	}
	if (pid > 0) {
		setpgid(pid, pid); /* also in the child: whichever runs first wins the race */
		return pid;
	}
	setpgid(0, 0);
	if (isatty(STDIN_FILENO)) {
		/* Give the terminal to the command's group, as a shell does for a job. */
		signal(SIGTTOU, SIG_IGN);
		tcsetpgrp(STDIN_FILENO, getpid());
	}
	/* Dispositions set to SIG_IGN survive exec: give the command the defaults. */
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	execvp(argv[0], argv);
	int e = errno;
	shim_log("cannot run %s: %s", argv[0], strerror(e));
	_exit(e == ENOENT ? 127 : 126);
}

static void usage(FILE *f)
{
	fputs("usage: foundry-shim init [--proxy-socket PATH] [--proxy-listen ADDR] [--] [CMD ARGS...]\n"
	      "       foundry-shim notify EVENT < event.json\n"
	      "       foundry-shim version\n"
	      "\n"
	      "init: PID 1 for a Foundry sandbox: reaps zombies, forwards signals to CMD's\n"
	      "process group and exits with its status; with no CMD, waits until SIGTERM.\n"
	      "With FOUNDRY_PROXY_SOCKET (or --proxy-socket) it bridges FOUNDRY_PROXY_LISTEN\n"
	      "(default " SHIM_DEFAULT_LISTEN ") to that Unix socket.\n"
	      "notify: posts a hook event (JSON on stdin) to the proxy socket, signed with\n"
	      "the token in FOUNDRY_HOOK_TOKEN_FILE (default " SHIM_DEFAULT_TOKEN ").\n",
	      f);
}

static int run_init(int argc, char **argv)
{
	const char *sock = getenv("FOUNDRY_PROXY_SOCKET");
	const char *listen_addr = getenv("FOUNDRY_PROXY_LISTEN");
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "--proxy-socket") == 0 && i + 1 < argc) {
			sock = argv[++i];
		} else if (strcmp(argv[i], "--proxy-listen") == 0 && i + 1 < argc) {
			listen_addr = argv[++i];
		} else if (argv[i][0] == '-') {
			shim_log("init: unknown option '%s'", argv[i]);
			usage(stderr);
			return 2;
		} else {
			break;
		}
	}
	char **cmd = i < argc ? argv + i : NULL;

	sigset_t set, oldmask;
	sigemptyset(&set);
	for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++)
		sigaddset(&set, forwarded[k]);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &oldmask);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTTIN, SIG_IGN);
	signal(SIGTTOU, SIG_IGN);
	signal(SIGTSTP, SIG_IGN);
	/* Outside a PID namespace (tests, or an image with its own init) become the reaper
	 * of orphaned descendants all the same. */
	if (getpid() != 1)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

	shim_loop_init();
	init.sig.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	init.sig.cb = on_signal;
	if (init.sig.fd < 0 || shim_watch_add(&init.sig, EPOLLIN) < 0) {
		shim_log("signalfd: %s", strerror(errno));
		return 125;
	}
	/* The bridge listens before the command starts, so its first request finds it. A
	 * bridge that cannot start leaves the command without network, not without a life. */
	if (sock && *sock)
		shim_bridge_start(listen_addr && *listen_addr ? listen_addr : SHIM_DEFAULT_LISTEN, sock);
	if (cmd)
		init.child = spawn(cmd, &oldmask);
	/* Room for many bridged connections, raised after fork so the command keeps the
	 * limit it was given. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	while (!init.done)
		shim_loop_once(-1);
	return init.exit_status;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "init") == 0)
		return run_init(argc - 1, argv + 1);
	if (strcmp(cmd, "notify") == 0)
		return shim_notify(argc - 1, argv + 1);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		puts("foundry-shim " SHIM_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	shim_log("unknown command '%s'", cmd);
	usage(stderr);
	return 2;
}
