/*
 * task.c - tasks, waits and the one resume function (module foundry._task).
 *
 * A task is a coroutine owned by the runtime. run_task() is the only caller of
 * lua_resume. A task yields only through fdr_await() (a native or Lua-level wait) or a
 * plain coroutine.yield(), which simply lets other ready tasks run first.
 */
#include "host.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TASK_MT "foundry.Task"
#define WAIT_MT "foundry.Wait"

uint64_t fdr_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void fdr_wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;
	while (n--)
		*v++ = 0;
}

/* ---- error objects ---- */

static void push_error_v(lua_State *L, const char *code, const char *hint, const char *fmt,
			 va_list ap)
{
	lua_createtable(L, 0, 3);
	lua_pushstring(L, code);
	lua_setfield(L, -2, "code");
	char msg[1024];
	vsnprintf(msg, sizeof msg, fmt, ap); /* printf formats, unlike lua_pushfstring */
	lua_pushstring(L, msg);
	lua_setfield(L, -2, "message");
	if (hint) {
		lua_pushstring(L, hint);
		lua_setfield(L, -2, "hint");
	}
	luaL_setmetatable(L, "foundry.Error");
}

void fdr_push_error(lua_State *L, const char *code, const char *hint, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	push_error_v(L, code, hint, fmt, ap);
	va_end(ap);
}

int fdr_error(lua_State *L, const char *code, const char *hint, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	push_error_v(L, code, hint, fmt, ap);
	va_end(ap);
	lua_error(L);
	abort(); /* not reached */
}

/* ---- the ready queue and the resume function ---- */

static void run_task(fdr_task *t, int nargs);

static void idle_cb(uv_idle_t *idle)
{
	fdr_host *h = idle->data;
	/* Run only the tasks ready now; tasks they make ready run on the next turn, so I/O
	 * is never starved by tasks that keep yielding. */
	fdr_task *tail = h->ready_tail;
	while (h->ready_head) {
		fdr_task *t = h->ready_head;
		h->ready_head = t->next_ready;
		if (!h->ready_head)
			h->ready_tail = NULL;
		t->next_ready = NULL;
		run_task(t, t->nresume);
		if (t == tail)
			break;
	}
	if (!h->ready_head)
		uv_idle_stop(&h->idle);
}

static void make_ready(fdr_task *t, int nargs)
{
	fdr_host *h = t->host;
	t->state = FDR_READY;
	t->nresume = nargs;
	if (h->ready_tail)
		h->ready_tail->next_ready = t;
	else
		h->ready_head = t;
	h->ready_tail = t;
	uv_idle_start(&h->idle, idle_cb);
}

/* Resume t with the nargs values on its stack: now when no task runs, else queued. */
static void wake(fdr_task *t, int nargs)
{
	if (t->host->depth > 0)
		make_ready(t, nargs);
	else
		run_task(t, nargs);
}

static void finish_joiners(fdr_task *t);

static void task_finish(fdr_task *t, int status, int nres)
{
	fdr_host *h = t->host;
	lua_State *L = h->L, *T = t->T;
	if (status == LUA_OK) {
		t->state = FDR_DONE;
		lua_xmove(T, L, nres);
		lua_createtable(L, nres, 1);
		lua_insert(L, -(nres + 1));
		for (int k = 0; k < nres; k++)
			lua_rawseti(L, -(nres - k + 1), nres - k);
		lua_pushinteger(L, nres);
		lua_setfield(L, -2, "n");
		t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	} else {
		t->state = FDR_FAILED;
		const char *msg = lua_tostring(T, -1);
		if (!msg && luaL_getmetafield(T, -1, "__name") != LUA_TNIL) {
			lua_pop(T, 1);
			lua_getfield(T, -1, "message");
			msg = lua_tostring(T, -1) ? lua_tostring(T, -1) : "error object";
			luaL_traceback(L, T, msg, 0);
			lua_pop(T, 1);
		} else {
			luaL_traceback(L, T, msg ? msg : "(error object is not a string)", 0);
		}
		t->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		lua_xmove(T, L, 1);
		t->result_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		/* Close pending to-be-closed variables and free the stack. */
		lua_resetthread(T);
	}
	h->ntasks--;
	finish_joiners(t);
	luaL_unref(L, LUA_REGISTRYINDEX, t->thread_ref);
	t->thread_ref = LUA_NOREF;
	t->T = NULL;
	if (t == h->main_task)
		uv_stop(&h->loop);
	luaL_unref(L, LUA_REGISTRYINDEX, t->anchor_ref);
	t->anchor_ref = LUA_NOREF;
}

static void run_task(fdr_task *t, int nargs)
{
	fdr_host *h = t->host;
	fdr_task *prev = h->running;
	if (t->cancel_pending && t->wait == NULL && nargs > 0) {
		/* cancelled while queued with results: deliver the cancellation instead */
		t->cancel_pending = 0;
		lua_pop(t->T, nargs);
		lua_pushboolean(t->T, 0);
		fdr_push_error(t->T, "cancelled", NULL, "cancelled");
		nargs = 2;
	}
	h->running = t;
	h->depth++;
	t->state = FDR_RUNNING;
	int nres = 0;
	int status = lua_resume(t->T, NULL, nargs, &nres);
	h->depth--;
	h->running = prev;
	if (status == LUA_YIELD) {
		lua_pop(t->T, nres);
		if (t->wait && t->wait->awaited)
			t->state = FDR_WAITING;
		else
			make_ready(t, 0); /* a plain coroutine.yield(): let others run first */
	} else {
		task_finish(t, status, nres);
	}
}

/* ---- waits ---- */

static fdr_task *check_task(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, TASK_MT);
}

fdr_wait *fdr_wait_new(lua_State *L, const char *what, fdr_cancel_fn cancel, void *data)
{
	fdr_host *h = fdr_host_of(L);
	fdr_task *t = h->running;
	if (!t || t->T != L || !lua_isyieldable(L))
		luaL_error(L, "%s: cannot wait here: not directly in a task (call it from a "
			      "command, foundry.spawn or the REPL - not from a plain coroutine, a "
			      "metamethod or a require'd file's top level)", what);
	if (t->cancel_pending) {
		t->cancel_pending = 0;
		fdr_error(L, "cancelled", NULL, "cancelled");
	}
	fdr_wait *w = calloc(1, sizeof *w);
	if (!w)
		luaL_error(L, "out of memory");
	w->host = h;
	w->task = t;
	w->what = what;
	w->cancel = cancel;
	w->data = data;
	w->live = 1;
	w->early_ref = LUA_NOREF;
	w->started_ms = fdr_now_ms();
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->anchor_ref);
	w->task_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	w->next = h->waits;
	if (h->waits)
		h->waits->prev = w;
	h->waits = w;
	return w;
}

static void timer_free_cb(uv_handle_t *handle)
{
	free(handle);
}

static void wait_free(fdr_wait *w)
{
	fdr_host *h = w->host;
	if (w->prev)
		w->prev->next = w->next;
	else
		h->waits = w->next;
	if (w->next)
		w->next->prev = w->prev;
	if (w->timer) {
		uv_timer_stop(w->timer);
		uv_close((uv_handle_t *)w->timer, timer_free_cb);
	}
	if (w->task && w->task->wait == w)
		w->task->wait = NULL;
	luaL_unref(h->L, LUA_REGISTRYINDEX, w->task_ref);
	luaL_unref(h->L, LUA_REGISTRYINDEX, w->early_ref);
	free(w);
}

int fdr_wait_live(const fdr_wait *w)
{
	return w->live;
}

lua_State *fdr_wait_state(fdr_wait *w)
{
	return w->live && w->awaited ? w->task->T : w->host->L;
}

/* Keep the result of a wait completed before fdr_await: ok flag and values, in a table. */
static void wait_store_early(fdr_wait *w, int ok, int n)
{
	lua_State *L = w->host->L;
	lua_createtable(L, n, 1);
	lua_insert(L, -(n + 1));
	for (int k = 0; k < n; k++)
		lua_rawseti(L, -(n - k + 1), n - k);
	lua_pushinteger(L, n);
	lua_setfield(L, -2, "n");
	w->early_ok = ok;
	w->early_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	w->live = 0;
}

void fdr_wait_resolve(fdr_wait *w, int n)
{
	lua_State *S = fdr_wait_state(w);
	if (w->live && !w->awaited) {
		wait_store_early(w, 1, n);
		return; /* fdr_await delivers and frees */
	}
	if (!w->live) {
		lua_pop(S, n);
		wait_free(w);
		return;
	}
	lua_pushboolean(S, 1);
	lua_insert(S, -(n + 1));
	fdr_task *t = w->task;
	lua_rawgeti(w->host->L, LUA_REGISTRYINDEX, w->task_ref); /* t stays alive in wake */
	int ref = luaL_ref(w->host->L, LUA_REGISTRYINDEX);
	w->task = NULL;
	w->live = 0;
	t->wait = NULL;
	wait_free(w);
	wake(t, n + 1);
	luaL_unref(t->host->L, LUA_REGISTRYINDEX, ref);
}

void fdr_wait_reject(fdr_wait *w)
{
	lua_State *S = fdr_wait_state(w);
	if (w->live && !w->awaited) {
		wait_store_early(w, 0, 1);
		return;
	}
	if (!w->live) {
		lua_pop(S, 1);
		wait_free(w);
		return;
	}
	lua_pushboolean(S, 0);
	lua_insert(S, -2);
	fdr_task *t = w->task;
	lua_rawgeti(w->host->L, LUA_REGISTRYINDEX, w->task_ref);
	int ref = luaL_ref(w->host->L, LUA_REGISTRYINDEX);
	w->task = NULL;
	w->live = 0;
	t->wait = NULL;
	wait_free(w);
	wake(t, 2);
	luaL_unref(t->host->L, LUA_REGISTRYINDEX, ref);
}

void fdr_wait_drop(fdr_wait *w)
{
	if (w->live && w->awaited) {
		/* The native gave up on a wait its task still waits for: fail the task rather
		 * than leave it hanging. */
		fdr_push_error(w->task->T, "internal", NULL, "%s: abandoned", w->what);
		fdr_wait_reject(w);
		return;
	}
	wait_free(w);
}

/* Stop waiting: the task gets (false, err) where err is at the top of T (pushed by the
 * caller); the native is told through its cancel function and still owns w. */
static void wait_abort(fdr_wait *w)
{
	fdr_task *t = w->task;
	lua_pushboolean(t->T, 0);
	lua_insert(t->T, -2);
	w->live = 0;
	t->wait = NULL;
	if (w->cancel)
		w->cancel(w);
	wake(t, 2);
}

static void timeout_cb(uv_timer_t *timer)
{
	fdr_wait *w = timer->data;
	if (!w->live || !w->awaited)
		return;
	fdr_push_error(w->task->T, "timeout", NULL, "%s: timed out after %llu ms", w->what,
		       (unsigned long long)(fdr_now_ms() - w->started_ms));
	wait_abort(w);
}

void fdr_wait_timeout(fdr_wait *w, uint64_t ms)
{
	if (ms == 0)
		return;
	if (!w->timer) {
		w->timer = malloc(sizeof *w->timer);
		if (!w->timer)
			return;
		uv_timer_init(&w->host->loop, w->timer);
		w->timer->data = w;
	}
	uv_timer_start(w->timer, timeout_cb, ms, 0);
}

static int await_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	int base = (int)ctx;
	if (!lua_toboolean(L, base + 1)) {
		lua_pushvalue(L, base + 2);
		return lua_error(L);
	}
	return lua_gettop(L) - (base + 1);
}

int fdr_await(lua_State *L, fdr_wait *w)
{
	if (w->early_ref != LUA_NOREF) {
		int ok = w->early_ok;
		lua_rawgeti(L, LUA_REGISTRYINDEX, w->early_ref);
		int tbl = lua_gettop(L);
		lua_getfield(L, tbl, "n");
		int n = (int)lua_tointeger(L, -1);
		lua_pop(L, 1);
		for (int i = 1; i <= n; i++)
			lua_rawgeti(L, tbl, i);
		lua_remove(L, tbl);
		wait_free(w);
		if (!ok)
			return lua_error(L);
		return n;
	}
	w->awaited = 1;
	w->task->wait = w;
	return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), await_k);
}

void fdr_task_shutdown(fdr_host *h)
{
	for (fdr_wait *w = h->waits, *next; w; w = next) {
		next = w->next;
		if (!w->live)
			continue;
		w->live = 0;
		if (w->task && w->task->wait == w)
			w->task->wait = NULL;
		if (w->cancel)
			w->cancel(w);
	}
}

/* ---- thread-pool work ---- */

struct work {
	uv_work_t req;
	fdr_wait *w;
	void *data;
	fdr_work_fn fn;
	fdr_after_fn after;
};

static void work_cb(uv_work_t *req)
{
	struct work *wk = req->data;
	wk->fn(wk->data);
}

static void after_work_cb(uv_work_t *req, int status)
{
	(void)status;
	struct work *wk = req->data;
	wk->after(wk->w, wk->data);
	free(wk);
}

int fdr_queue_work(lua_State *L, fdr_wait *w, fdr_work_fn fn, fdr_after_fn after)
{
	struct work *wk = calloc(1, sizeof *wk);
	if (!wk)
		return UV_ENOMEM;
	wk->w = w;
	wk->data = w->data;
	wk->fn = fn;
	wk->after = after;
	wk->req.data = wk;
	int rc = uv_queue_work(&fdr_host_of(L)->loop, &wk->req, work_cb, after_work_cb);
	if (rc < 0)
		free(wk);
	return rc;
}

/* ---- tasks ---- */

static void finish_joiners(fdr_task *t)
{
	fdr_host *h = t->host;
	for (int i = 0; i < t->njoiners; i++) {
		fdr_wait *w = t->joiners[i];
		if (!fdr_wait_live(w)) {
			fdr_wait_drop(w);
			continue;
		}
		lua_State *S = fdr_wait_state(w);
		int n = fdr_task_push_result(S, t);
		if (n < 0)
			fdr_wait_reject(w);
		else
			fdr_wait_resolve(w, n);
	}
	free(t->joiners);
	t->joiners = NULL;
	t->njoiners = t->capjoiners = 0;
	(void)h;
}

int fdr_task_push_result(lua_State *L, fdr_task *t)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
	if (t->state == FDR_FAILED) {
		t->observed = 1;
		return -1;
	}
	int tbl = lua_gettop(L);
	lua_getfield(L, tbl, "n");
	int n = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	luaL_checkstack(L, n, "too many results");
	for (int i = 1; i <= n; i++)
		lua_rawgeti(L, tbl, i);
	lua_remove(L, tbl);
	return n;
}

fdr_task *fdr_task_spawn(lua_State *L, int nargs)
{
	fdr_host *h = fdr_host_of(L);
	luaL_checktype(L, -(nargs + 1), LUA_TFUNCTION);
	fdr_task *t = lua_newuserdatauv(L, sizeof *t, 0);
	memset(t, 0, sizeof *t);
	t->host = h;
	t->result_ref = t->traceback_ref = t->thread_ref = t->anchor_ref = LUA_NOREF;
	t->id = ++h->next_task_id;
	snprintf(t->name, sizeof t->name, "task %d", t->id);
	luaL_setmetatable(L, TASK_MT);
	lua_insert(L, -(nargs + 2)); /* task below fn and args */
	t->T = lua_newthread(L);
	t->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_xmove(L, t->T, nargs + 1);
	lua_pushvalue(L, -1);
	t->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	h->ntasks++;
	make_ready(t, nargs);
	return t;
}

/* foundry._task.spawn(fn, ...) -> task */
static int l_spawn(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	fdr_task_spawn(L, lua_gettop(L) - 1);
	return 1;
}

static const char *state_name(enum fdr_task_state s)
{
	static const char *names[] = {"ready", "running", "waiting", "done", "failed"};
	return names[s];
}

/* task:join() -> the task's results, or raises its error */
static int t_join(lua_State *L)
{
	fdr_task *t = check_task(L, 1);
	fdr_host *h = fdr_host_of(L);
	if (t->state == FDR_DONE || t->state == FDR_FAILED) {
		int n = fdr_task_push_result(L, t);
		return n < 0 ? lua_error(L) : n;
	}
	if (h->running == t)
		return luaL_error(L, "a task cannot join itself");
	fdr_wait *w = fdr_wait_new(L, "join", NULL, NULL);
	if (t->njoiners == t->capjoiners) {
		int cap = t->capjoiners ? t->capjoiners * 2 : 4;
		fdr_wait **j = realloc(t->joiners, (size_t)cap * sizeof *j);
		if (!j) {
			fdr_wait_drop(w);
			return luaL_error(L, "out of memory");
		}
		t->joiners = j;
		t->capjoiners = cap;
	}
	t->joiners[t->njoiners++] = w;
	return fdr_await(L, w);
}

/* Cancel t: a waiting task gets a "cancelled" error from its wait now, a ready or
 * running one at its next wait. Returns true when it was still running. */
static int t_cancel(lua_State *L)
{
	fdr_task *t = check_task(L, 1);
	if (t->state == FDR_DONE || t->state == FDR_FAILED) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (t->state == FDR_WAITING && t->wait) {
		fdr_push_error(t->T, "cancelled", NULL, "cancelled");
		wait_abort(t->wait);
	} else {
		t->cancel_pending = 1;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int t_status(lua_State *L)
{
	lua_pushstring(L, state_name(check_task(L, 1)->state));
	return 1;
}

static int t_index(lua_State *L)
{
	fdr_task *t = check_task(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "id") == 0)
		lua_pushinteger(L, t->id);
	else if (strcmp(k, "name") == 0)
		lua_pushstring(L, t->name);
	else if (strcmp(k, "traceback") == 0)
		lua_rawgeti(L, LUA_REGISTRYINDEX, t->traceback_ref);
	else if (strcmp(k, "error") == 0) {
		if (t->state == FDR_FAILED) {
			t->observed = 1;
			lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
		} else
			lua_pushnil(L);
	} else if (strcmp(k, "waiting") == 0) {
		if (t->wait)
			lua_pushstring(L, t->wait->what);
		else
			lua_pushnil(L);
	} else {
		luaL_getmetatable(L, TASK_MT);
		lua_getfield(L, -1, "methods");
		lua_getfield(L, -1, k);
	}
	return 1;
}

static int t_newindex(lua_State *L)
{
	fdr_task *t = check_task(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "name") != 0)
		return luaL_error(L, "task: cannot set field '%s'", k);
	snprintf(t->name, sizeof t->name, "%s", luaL_checkstring(L, 3));
	return 0;
}

static int t_tostring(lua_State *L)
{
	fdr_task *t = check_task(L, 1);
	lua_pushfstring(L, "task %d (%s, %s)", t->id, t->name, state_name(t->state));
	return 1;
}

static int t_gc(lua_State *L)
{
	fdr_task *t = check_task(L, 1);
	if (t->state == FDR_FAILED && !t->observed && t != t->host->main_task) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, t->result_ref);
		const char *msg = lua_tostring(L, -1);
		if (!msg && lua_istable(L, -1)) {
			lua_getfield(L, -1, "message");
			msg = lua_tostring(L, -1);
		}
		fprintf(stderr, "foundry: %s failed and nobody joined it: %s\n", t->name,
			msg ? msg : "(error object)");
	}
	luaL_unref(L, LUA_REGISTRYINDEX, t->result_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, t->traceback_ref);
	t->result_ref = t->traceback_ref = LUA_NOREF;
	free(t->joiners);
	t->joiners = NULL;
	return 0;
}

/* foundry._task.current() -> the running task or nil */
static int l_current(lua_State *L)
{
	fdr_task *t = fdr_host_of(L)->running;
	if (!t || t->T != L)
		return 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, t->anchor_ref);
	return 1;
}

/* foundry._task.list() -> { {id=, name=, state=, waiting=, ms=}, ... } of live waits */
static int l_list(lua_State *L)
{
	fdr_host *h = fdr_host_of(L);
	lua_newtable(L);
	int i = 0;
	uint64_t now = fdr_now_ms();
	for (fdr_wait *w = h->waits; w; w = w->next) {
		if (!w->live || !w->task)
			continue;
		lua_createtable(L, 0, 5);
		lua_pushinteger(L, w->task->id);
		lua_setfield(L, -2, "id");
		lua_pushstring(L, w->task->name);
		lua_setfield(L, -2, "name");
		lua_pushstring(L, state_name(w->task->state));
		lua_setfield(L, -2, "state");
		lua_pushstring(L, w->what);
		lua_setfield(L, -2, "waiting");
		lua_pushinteger(L, (lua_Integer)(now - w->started_ms));
		lua_setfield(L, -2, "ms");
		lua_rawseti(L, -2, ++i);
	}
	return 1;
}

/* ---- sleep ---- */

static void sleep_close_cb(uv_handle_t *handle)
{
	fdr_wait *w = handle->data;
	free(handle);
	if (w)
		fdr_wait_drop(w);
}

static void sleep_cb(uv_timer_t *timer)
{
	fdr_wait *w = timer->data;
	timer->data = NULL;
	fdr_wait_resolve(w, 0);
	uv_close((uv_handle_t *)timer, sleep_close_cb);
}

static void sleep_cancel(fdr_wait *w)
{
	uv_timer_t *timer = w->data;
	uv_timer_stop(timer);
	uv_close((uv_handle_t *)timer, sleep_close_cb);
}

/* foundry._task.sleep(ms) */
static int l_sleep(lua_State *L)
{
	lua_Number ms = luaL_checknumber(L, 1);
	luaL_argcheck(L, ms >= 0, 1, "must not be negative");
	fdr_wait *w = fdr_wait_new(L, "sleep", sleep_cancel, NULL);
	uv_timer_t *timer = malloc(sizeof *timer);
	if (!timer) {
		fdr_wait_drop(w);
		return luaL_error(L, "out of memory");
	}
	w->data = timer;
	uv_timer_init(&fdr_host_of(L)->loop, timer);
	timer->data = w;
	uv_timer_start(timer, sleep_cb, (uint64_t)ms, 0);
	return fdr_await(L, w);
}

/* ---- Lua-level waits: foundry._task.wait(what[, cancel_fn]) ---- */

typedef struct {
	fdr_wait *w;
	int cancel_ref;
} lwait;

static void lwait_cancel(fdr_wait *w)
{
	lwait *lw = w->data;
	if (!lw || lw->cancel_ref == LUA_NOREF)
		return;
	lua_State *L = w->host->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, lw->cancel_ref);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		fprintf(stderr, "foundry: error in cancel handler of %s: %s\n", w->what,
			lua_tostring(L, -1));
		lua_pop(L, 1);
	}
}

static lwait *check_lwait(lua_State *L)
{
	return luaL_checkudata(L, 1, WAIT_MT);
}

static int l_wait(lua_State *L)
{
	const char *what = luaL_optstring(L, 1, "wait");
	int has_cancel = !lua_isnoneornil(L, 2);
	if (has_cancel)
		luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_Integer timeout = luaL_optinteger(L, 3, 0);
	/* keep `what` alive as long as the wait: anchor it in the userdata's uservalue */
	lwait *lw = lua_newuserdatauv(L, sizeof *lw, 1);
	lw->w = NULL;
	lw->cancel_ref = LUA_NOREF;
	luaL_setmetatable(L, WAIT_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	lw->w = fdr_wait_new(L, lua_tostring(L, 1) ? lua_tostring(L, 1) : what, lwait_cancel, lw);
	if (has_cancel) {
		lua_pushvalue(L, 2);
		lw->cancel_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	if (timeout > 0)
		fdr_wait_timeout(lw->w, (uint64_t)timeout);
	return 1;
}

/* w:resolve(...) - returns false when nobody waits any more (cancelled, timed out) */
static int w_finish(lua_State *L, int ok)
{
	lwait *lw = check_lwait(L);
	if (!lw->w || !lw->w->data)
		return luaL_error(L, "wait already completed");
	fdr_wait *w = lw->w;
	int live = w->live;
	int early = w->live && !w->awaited;
	if (!ok)
		lua_settop(L, 2);
	int n = lua_gettop(L) - 1;
	lua_State *S = fdr_wait_state(w);
	if (S != L)
		lua_xmove(L, S, n);
	w->data = NULL;
	luaL_unref(L, LUA_REGISTRYINDEX, lw->cancel_ref);
	lw->cancel_ref = LUA_NOREF;
	if (!early)
		lw->w = NULL; /* freed by resolve/reject; an early result waits for await */
	if (ok)
		fdr_wait_resolve(w, n);
	else
		fdr_wait_reject(w);
	lua_pushboolean(L, live);
	return 1;
}

static int w_resolve(lua_State *L)
{
	return w_finish(L, 1);
}

static int w_reject(lua_State *L)
{
	return w_finish(L, 0);
}

static int w_await(lua_State *L)
{
	lwait *lw = check_lwait(L);
	fdr_wait *w = lw->w;
	if (!w)
		return luaL_error(L, "wait: already awaited or released");
	if (!w->task || w->task->T != L)
		return luaL_error(L, "wait: only the task that created the wait can await it");
	lw->w = NULL;
	if (w->early_ref == LUA_NOREF)
		lw->w = w; /* still ours to drop if the task is cancelled and we are collected */
	return fdr_await(L, w);
}

static int w_gc(lua_State *L)
{
	lwait *lw = check_lwait(L);
	if (lw->w) {
		lw->w->data = NULL;
		fdr_wait_drop(lw->w);
		lw->w = NULL;
	}
	luaL_unref(L, LUA_REGISTRYINDEX, lw->cancel_ref);
	lw->cancel_ref = LUA_NOREF;
	return 0;
}

/* ---- host settings ---- */

static int l_set_debug(lua_State *L)
{
	fdr_host_of(L)->debug = lua_toboolean(L, 1);
	return 0;
}

static int l_debug(lua_State *L)
{
	lua_pushboolean(L, fdr_host_of(L)->debug);
	return 1;
}

static int l_yield(lua_State *L)
{
	fdr_host *h = fdr_host_of(L);
	if (!h->running || h->running->T != L)
		return luaL_error(L, "yield: not directly in a task");
	return lua_yield(L, 0);
}

int luaopen_foundry_task(lua_State *L)
{
	static const luaL_Reg task_methods[] = {
		{"join", t_join}, {"cancel", t_cancel}, {"status", t_status}, {NULL, NULL}};
	luaL_newmetatable(L, TASK_MT);
	lua_pushcfunction(L, t_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, t_newindex);
	lua_setfield(L, -2, "__newindex");
	lua_pushcfunction(L, t_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushcfunction(L, t_gc);
	lua_setfield(L, -2, "__gc");
	luaL_newlib(L, task_methods);
	lua_setfield(L, -2, "methods");
	lua_pop(L, 1);

	static const luaL_Reg wait_methods[] = {
		{"resolve", w_resolve}, {"reject", w_reject}, {"await", w_await}, {NULL, NULL}};
	luaL_newmetatable(L, WAIT_MT);
	luaL_newlib(L, wait_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, w_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	static const luaL_Reg fns[] = {{"spawn", l_spawn}, {"current", l_current},
				       {"list", l_list},   {"sleep", l_sleep},
				       {"wait", l_wait},   {"yield", l_yield},
				       {"set_debug", l_set_debug}, {"debug", l_debug},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
