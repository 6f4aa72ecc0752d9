/*
 * tty.c - foundry._tty: put a terminal into raw mode and get it back on every way out.
 *
 *   _tty.raw(fd)        -> true        save the terminal's settings, then make it raw
 *   _tty.restore()      -> restored?   put the saved settings back (idempotent)
 *   _tty.size(fd)       -> rows, cols  (nil when fd is not a terminal)
 *   _tty.isatty(fd)     -> boolean
 *
 * The saved settings are put back by restore(), at the host's shutdown, at exit() and
 * when the process dies of a fatal signal (SIGSEGV, SIGABRT, ...), so a crash while
 * attached does not leave the user's shell unusable. SIGTERM/SIGHUP/SIGINT are left to
 * the Lua side (luv signal handlers end the attach, which restores).
 */
#include "fdr.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

static struct termios saved;
static volatile sig_atomic_t saved_fd = -1;
static int hooks_installed;

static void restore_now(void)
{
	int fd = saved_fd;
	if (fd >= 0) {
		saved_fd = -1;
		tcsetattr(fd, TCSADRAIN, &saved); /* async-signal-safe */
	}
}

static void on_fatal(int sig)
{
	restore_now();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void at_host_close(void *data)
{
	(void)data;
	restore_now();
}

static void install_hooks(lua_State *L)
{
	if (hooks_installed)
		return;
	hooks_installed = 1;
	atexit(restore_now);
	static const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGQUIT};
	for (size_t i = 0; i < sizeof fatal / sizeof *fatal; i++) {
		struct sigaction sa, old;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_fatal;
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = SA_RESETHAND;
		/* keep a handler someone else installed (ASan's, for one) */
		if (sigaction(fatal[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
		    !(old.sa_flags & SA_SIGINFO))
			sigaction(fatal[i], &sa, NULL);
	}
	fdr_host_at_close(fdr_host_of(L), at_host_close, NULL);
}

static int l_raw(lua_State *L)
{
	int fd = (int)luaL_checkinteger(L, 1);
	if (!isatty(fd))
		return fdr_error(L, "tty.not_a_tty", NULL, "fd %d is not a terminal", fd);
	struct termios t;
	if (tcgetattr(fd, &t) != 0)
		return fdr_error(L, "tty.error", NULL, "tcgetattr: %s", strerror(errno));
	install_hooks(L);
	if (saved_fd < 0) {
		saved = t;
		saved_fd = fd;
	}
	cfmakeraw(&t);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(fd, TCSADRAIN, &t) != 0) {
		int e = errno;
		restore_now();
		return fdr_error(L, "tty.error", NULL, "tcsetattr: %s", strerror(e));
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_restore(lua_State *L)
{
	int was = saved_fd >= 0;
	restore_now();
	lua_pushboolean(L, was);
	return 1;
}

static int l_size(lua_State *L)
{
	int fd = (int)luaL_checkinteger(L, 1);
	struct winsize ws;
	if (ioctl(fd, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0)
		return 0;
	lua_pushinteger(L, ws.ws_row);
	lua_pushinteger(L, ws.ws_col);
	return 2;
}

static int l_isatty(lua_State *L)
{
	lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
	return 1;
}

int luaopen_foundry_tty(lua_State *L)
{
	static const luaL_Reg fns[] = {{"raw", l_raw}, {"restore", l_restore}, {"size", l_size},
				       {"isatty", l_isatty}, {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
