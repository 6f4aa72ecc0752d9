/*
 * readline.c - line editing for the REPL on the loop (module foundry._readline).
 *
 * libedit's callback interface reads a character whenever stdin is readable, so other
 * tasks keep running while the prompt waits. Ctrl-C is caught with sigaction: at the
 * prompt it discards the line; while code runs it interrupts it - a hook on the running
 * coroutine stops busy Lua code, and the guarded task is cancelled at its wait.
 */
#include "fdr.h"

#include <editline/readline.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
	fdr_wait *w;           /* the task waiting for a line */
	uv_poll_t poll;
	uv_async_t async;      /* wakes the loop from the signal handler */
	int inited;
	char prompt[256];
	volatile sig_atomic_t interrupted;
	lua_State *guard_thread; /* coroutine to interrupt on Ctrl-C while code runs */
	int guard_ref;         /* its task */
	int guard_thread_ref;  /* keeps guard_thread alive while the handler may use it */
	struct sigaction old;
	lua_State *L;
} rl = {.guard_ref = LUA_NOREF, .guard_thread_ref = LUA_NOREF};

static void line_cb(char *line);

static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, NULL, 0, 0);
	fdr_error(L, "interrupted", NULL, "interrupted");
}

static void on_sigint(int sig)
{
	(void)sig;
	rl.interrupted = 1;
	if (rl.guard_thread)
		lua_sethook(rl.guard_thread, interrupt_hook,
			    LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
	if (rl.inited)
		uv_async_send(&rl.async);
}

static void finish(lua_State *S, int n)
{
	fdr_wait *w = rl.w;
	rl.w = NULL;
	uv_poll_stop(&rl.poll);
	fdr_wait_resolve(w, n);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
	(void)p;
	(void)events;
	if (!rl.w)
		return;
	if (status < 0) {
		rl_callback_handler_remove();
		lua_State *S = fdr_wait_state(rl.w);
		lua_pushnil(S);
		finish(S, 1);
		return;
	}
	rl_callback_read_char();
}

static void line_cb(char *line)
{
	rl_callback_handler_remove();
	if (!rl.w) {
		free(line);
		return;
	}
	lua_State *S = fdr_wait_state(rl.w);
	if (line)
		lua_pushstring(S, line);
	else
		lua_pushnil(S);
	free(line);
	finish(S, 1);
}

static void async_cb(uv_async_t *a)
{
	(void)a;
	if (!rl.interrupted)
		return;
	rl.interrupted = 0;
	if (rl.w) {
		/* at the prompt: drop the line and prompt again */
		fputs("^C\n", stdout);
		fflush(stdout);
		rl_callback_handler_remove();
		rl_callback_handler_install(rl.prompt, line_cb);
		return;
	}
	if (rl.guard_ref != LUA_NOREF) {
		lua_State *L = rl.L;
		lua_rawgeti(L, LUA_REGISTRYINDEX, rl.guard_ref);
		lua_getfield(L, -1, "cancel");
		lua_insert(L, -2);
		if (lua_pcall(L, 1, 0, 0) != LUA_OK)
			lua_pop(L, 1);
	}
}

static void at_close(void *data)
{
	(void)data;
	if (!rl.inited)
		return;
	if (rl.w) {
		rl_callback_handler_remove();
	}
	uv_close((uv_handle_t *)&rl.poll, NULL);
	uv_close((uv_handle_t *)&rl.async, NULL);
	sigaction(SIGINT, &rl.old, NULL);
	rl.inited = 0;
}

static void ensure_init(lua_State *L)
{
	if (rl.inited)
		return;
	fdr_host *h = fdr_host_of(L);
	rl.L = fdr_host_state(h);
	uv_poll_init(fdr_host_loop(h), &rl.poll, STDIN_FILENO);
	uv_async_init(fdr_host_loop(h), &rl.async, async_cb);
	uv_unref((uv_handle_t *)&rl.async);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &rl.old);
	rl.inited = 1;
	fdr_host_at_close(h, at_close, NULL);
}

static void cancel_read(fdr_wait *w)
{
	(void)w;
	rl_callback_handler_remove();
	uv_poll_stop(&rl.poll);
	fdr_wait *mine = rl.w;
	rl.w = NULL;
	fdr_wait_drop(mine);
}

/* rl.read(prompt) -> line, or nil at end of input (Ctrl-D) */
static int l_read(lua_State *L)
{
	const char *prompt = luaL_optstring(L, 1, "> ");
	if (rl.w)
		return luaL_error(L, "readline: already reading");
	ensure_init(L);
	snprintf(rl.prompt, sizeof rl.prompt, "%s", prompt);
	rl.w = fdr_wait_new(L, "readline", cancel_read, NULL);
	rl_callback_handler_install(rl.prompt, line_cb);
	uv_poll_start(&rl.poll, UV_READABLE, poll_cb);
	return fdr_await(L, rl.w);
}

/* rl.guard(task) - while it runs, Ctrl-C interrupts it; rl.guard(nil) ends that */
static int l_guard(lua_State *L)
{
	ensure_init(L);
	rl.guard_thread = NULL; /* first, so the signal handler stops using it */
	luaL_unref(L, LUA_REGISTRYINDEX, rl.guard_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, rl.guard_thread_ref);
	rl.guard_ref = rl.guard_thread_ref = LUA_NOREF;
	if (!lua_isnoneornil(L, 1)) {
		lua_State *T = lua_tothread(L, 2);
		luaL_argcheck(L, T != NULL, 2, "expected the task's thread");
		lua_pushvalue(L, 2);
		rl.guard_thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_pushvalue(L, 1);
		rl.guard_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		rl.guard_thread = T;
	}
	rl.interrupted = 0;
	return 0;
}

static int l_add_history(lua_State *L)
{
	add_history(luaL_checkstring(L, 1));
	return 0;
}

static int l_read_history(lua_State *L)
{
	read_history(luaL_checkstring(L, 1));
	return 0;
}

static int l_write_history(lua_State *L)
{
	lua_pushboolean(L, write_history(luaL_checkstring(L, 1)) == 0);
	return 1;
}

static int l_isatty(lua_State *L)
{
	lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 0)));
	return 1;
}

int luaopen_foundry_readline(lua_State *L)
{
	static const luaL_Reg fns[] = {{"read", l_read},
				       {"guard", l_guard},
				       {"add_history", l_add_history},
				       {"read_history", l_read_history},
				       {"write_history", l_write_history},
				       {"isatty", l_isatty},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
