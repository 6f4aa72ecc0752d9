/*
 * host.h - private to the runtime (host.c, task.c, main.c): the host and task structs.
 * Native modules use fdr.h only.
 */
#ifndef FDR_HOST_H
#define FDR_HOST_H

#include "fdr.h"

enum fdr_task_state { FDR_READY, FDR_RUNNING, FDR_WAITING, FDR_DONE, FDR_FAILED };

struct fdr_task {
	fdr_host *host;
	lua_State *T;          /* the coroutine */
	int thread_ref;        /* keeps T alive until the task ends */
	int anchor_ref;        /* keeps this userdata alive until the task ends */
	int result_ref;        /* {n=, ...} when done, the error value when failed */
	int traceback_ref;     /* traceback string of a failure */
	enum fdr_task_state state;
	fdr_wait *wait;        /* what the task waits for, when FDR_WAITING */
	int nresume;           /* values on T's stack for the next resume, when FDR_READY */
	int cancel_pending;    /* cancelled while not waiting: raise at the next wait */
	int observed;          /* its failure was delivered to someone */
	int id;
	char name[64];
	fdr_wait **joiners;
	int njoiners, capjoiners;
	fdr_task *next_ready;
};

struct fdr_host {
	lua_State *L;
	uv_loop_t loop;
	uv_idle_t idle;        /* runs ready tasks; active only while there are some */
	int debug;
	int depth;             /* > 0 while a task runs: resumes are queued, not nested */
	fdr_task *running;
	fdr_task *ready_head, *ready_tail;
	fdr_wait *waits;       /* every wait not yet released, for listings and shutdown */
	fdr_task *main_task;
	int next_task_id;
	int ntasks;            /* tasks not yet finished */
	struct fdr_at_close { void (*fn)(void *); void *data; } *at_close;
	int nat_close;
};

/* host.c */
fdr_host *fdr_host_new(void);
void fdr_host_free(fdr_host *h);
/* Stop every wait without resuming its task (their natives close their handles). */
void fdr_task_shutdown(fdr_host *h);

/* task.c */
int luaopen_foundry_task(lua_State *L);
/* Spawn a task running the function at the top of L's stack with `nargs` values above it
 * (all popped); pushes the task userdata. */
fdr_task *fdr_task_spawn(lua_State *L, int nargs);
/* Push the results of a finished task (returns their count) or its error (returns -1). */
int fdr_task_push_result(lua_State *L, fdr_task *t);

#endif
