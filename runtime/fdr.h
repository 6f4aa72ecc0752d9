/*
 * fdr.h - the Foundry host's C interface for native modules.
 *
 * Every native module is one C file exporting `int luaopen_foundry_<name>(lua_State *L)`
 * and listed in runtime/modules.h; it is registered privately as `foundry._<name>` and
 * wrapped by lua/foundry/<name>.lua.
 *
 * The async model (see docs/architecture.md): every script runs in a task, a coroutine the
 * runtime owns. A native that must wait creates an fdr_wait, starts its operation and
 * returns `fdr_await(L, w)`. When the operation completes, its libuv callback pushes the
 * results onto fdr_wait_state(w) and calls fdr_wait_resolve(w, n) - or pushes an error
 * object and calls fdr_wait_reject(w). The runtime resumes the task exactly once: if the
 * task was cancelled or timed out meanwhile, the late results are dropped. The native
 * owns `w` until it calls resolve, reject or drop, exactly once.
 */
#ifndef FDR_H
#define FDR_H

#include <lua.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fdr_host fdr_host;
typedef struct fdr_task fdr_task;
typedef struct fdr_wait fdr_wait;

/* Called when the task waiting on `w` is cancelled or times out; the native should abort
 * its operation (and later still call fdr_wait_resolve/reject/drop to release `w`). May be
 * NULL when the operation cannot be aborted. */
typedef void (*fdr_cancel_fn)(fdr_wait *w);

struct fdr_wait {
	void *data;   /* the native's own pointer, free for it to use */
	/* private to the runtime below */
	fdr_host *host;
	fdr_task *task;
	int task_ref;
	const char *what;
	uint64_t started_ms;
	fdr_cancel_fn cancel;
	int live;
	int awaited;
	int early_ref;   /* values of a wait completed before fdr_await (LUA_NOREF if none) */
	int early_ok;
	uv_timer_t *timer;
	fdr_wait *prev, *next;
};

/* The host that owns L (any thread of it). Never NULL inside Foundry. */
fdr_host *fdr_host_of(lua_State *L);
uv_loop_t *fdr_host_loop(fdr_host *h);
lua_State *fdr_host_state(fdr_host *h);
/* 1 when --debug was given (natives may add detail to errors). */
int fdr_host_debug(fdr_host *h);

/* Begin a wait in the running task. Raises a Lua error when L is not a task (for example
 * a plain coroutine, a require'd file's top level or a metamethod). `what` must be a
 * static string naming the operation ("docker.create"); it is shown by task listings. */
fdr_wait *fdr_wait_new(lua_State *L, const char *what, fdr_cancel_fn cancel, void *data);
/* Fail the wait with {code="timeout"} after `ms` milliseconds (0: no timeout). */
void fdr_wait_timeout(fdr_wait *w, uint64_t ms);
/* Yield the running task until the wait completes; use as `return fdr_await(L, w);`.
 * Resumes returning the resolved values, or raising the rejected error. */
int fdr_await(lua_State *L, fdr_wait *w);
/* The state to push results or an error onto before resolve/reject. */
lua_State *fdr_wait_state(fdr_wait *w);
/* Complete the wait with the `n` values on top of fdr_wait_state(w); frees w. */
void fdr_wait_resolve(fdr_wait *w, int n);
/* Complete the wait with the error value on top of fdr_wait_state(w); frees w. */
void fdr_wait_reject(fdr_wait *w);
/* Release a wait whose task no longer waits (after cancel); frees w. */
void fdr_wait_drop(fdr_wait *w);
/* 1 while the task still waits for w (not cancelled, not timed out). */
int fdr_wait_live(const fdr_wait *w);

/* Error objects: a table {code=, message=, hint=} with the foundry.Error metatable.
 * Push one onto L (hint may be NULL). */
void fdr_push_error(lua_State *L, const char *code, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Push an error object and raise it. */
int fdr_error(lua_State *L, const char *code, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), noreturn));

/* Run `fn` on the libuv thread pool, then `after` on the loop thread, with `w` waiting.
 * `fn` must not touch any lua_State: copy inputs into `data` first. */
typedef void (*fdr_work_fn)(void *data);
typedef void (*fdr_after_fn)(fdr_wait *w, void *data);
int fdr_queue_work(lua_State *L, fdr_wait *w, fdr_work_fn fn, fdr_after_fn after);

/* Register `fn(data)` to run at shutdown, before the loop is run dry: close the native's
 * long-lived handles there. Every libuv handle a native opens must be closed by its own
 * code - at shutdown through this hook (luv's handles are closed by the host). */
void fdr_host_at_close(fdr_host *h, void (*fn)(void *data), void *data);

/* Register the metatable `name` of a userdata type, luv's way: `methods` through __index,
 * `close` (idempotent) as __close and __gc, `tostring` as __tostring (NULL: none). Does
 * nothing when it exists already. Leaves the stack as it was. */
void fdr_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close,
		   lua_CFunction tostring);

/* Monotonic milliseconds. */
uint64_t fdr_now_ms(void);

/* Wipe memory that held a secret (not optimised away). */
void fdr_wipe(void *p, size_t n);

#endif
