/*
 * git_private.h - shared by runtime/git*.c (module foundry._git): the thread-pool
 * operation, the plain values a worker builds for Lua, libgit2 error capture, and the
 * pieces of the workspace machinery (object stores, fast checkout) that live in their
 * own files.
 */
#ifndef FDR_GIT_PRIVATE_H
#define FDR_GIT_PRIVATE_H

#include "fdr.h"

#include <git2.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ---- values built on a worker thread, pushed onto a lua_State afterwards ---- */

typedef struct gv gv;
enum gv_type { GV_NIL, GV_BOOL, GV_INT, GV_STR, GV_TABLE };
struct gv {
	enum gv_type type;
	int64_t i;        /* GV_BOOL, GV_INT */
	char *s;          /* GV_STR, owned */
	size_t len;
	gv **arr;         /* GV_TABLE: array part, owned */
	size_t narr, caparr;
	char **keys;      /* GV_TABLE: map part, owned */
	gv **vals;
	size_t nkv, capkv;
};

/* Constructors never fail (they abort on out-of-memory, like git). The caller owns the
 * result; gv_set/gv_append take ownership of `v`. */
gv *gv_table(void);
gv *gv_str(const char *s);
gv *gv_strn(const char *s, size_t len);
gv *gv_int(int64_t i);
gv *gv_bool(int b);
gv *gv_oid(const git_oid *id);
void gv_set(gv *t, const char *key, gv *v);
void gv_append(gv *t, gv *v);
void gv_set_str(gv *t, const char *key, const char *s); /* no-op when s is NULL */
void gv_set_int(gv *t, const char *key, int64_t i);
void gv_set_bool(gv *t, const char *key, int b);
void gv_free(gv *v);
void gv_push(lua_State *L, const gv *v);

void *gx_malloc(size_t n);
void *gx_calloc(size_t n, size_t size);
void *gx_realloc(void *p, size_t n);
char *gx_strdup(const char *s);

/* ---- operations run on the libuv thread pool ---- */

typedef struct gop gop;
struct gop {
	const char *what;                /* static, e.g. "git.status" */
	void (*run)(gop *op);            /* on the worker: fill result or err */
	int (*push)(lua_State *L, gop *op); /* on the loop: push results (default: result) */
	void (*destroy)(gop *op);        /* on the loop: free the op's own fields */
	gv *result;
	atomic_int cancelled;            /* set when the waiting task is cancelled */
	struct {
		int set;
		char code[48];
		char hint[256];
		char msg[1024];
		gv *extra;               /* more fields for the error object */
	} err;
};

/* Record a failure (the first one wins). */
void gop_fail(gop *op, const char *code, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Record libgit2's last error for `rc` with a context prefix; returns rc. */
int gop_git_fail(gop *op, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Record errno with a context prefix; returns -1. */
int gop_sys_fail(gop *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The three steps of a native: gop_wait (may raise: allocate nothing before it, check
 * every argument first), gop_new (an op of `size` bytes beginning with a gop), then
 * gop_start, which yields the task until `op` ran on the thread pool and takes
 * ownership of it (its destroy runs after the results are pushed). */
fdr_wait *gop_wait(lua_State *L, const char *what);
gop *gop_new(size_t size, const char *what, void (*run)(gop *), void (*destroy)(gop *));
int gop_start(lua_State *L, fdr_wait *w, gop *op);

/* Option helpers for natives taking a table of options at index 1. They raise plain
 * errors naming the key; the returned strings are borrowed from the table. */
const char *opt_str(lua_State *L, const char *what, const char *key, int required);
lua_Integer opt_int(lua_State *L, const char *what, const char *key, lua_Integer def);
int opt_bool(lua_State *L, const char *what, const char *key, int def);
/* A list of strings at key: checks it (copy=0), or returns a NULL-terminated array of
 * copies (copy=1, never raises once checked; caller frees with strv_free); NULL when
 * absent. */
char **opt_strv(lua_State *L, const char *what, const char *key, int copy);
void strv_free(char **v);
size_t strv_len(char **v);

/* ---- sets of object ids ---- */

typedef struct oidset {
	git_oid *slots;
	uint32_t *vals;
	size_t cap, n;
} oidset;
/* 1 when added (with value `val`), 0 when already present. */
int oidset_put(oidset *s, const git_oid *id, uint32_t val);
static inline int oidset_add(oidset *s, const git_oid *id) { return oidset_put(s, id, 0); }
/* The value of id, or -1 when absent. */
int64_t oidset_get(const oidset *s, const git_oid *id);
static inline int oidset_has(const oidset *s, const git_oid *id) { return oidset_get(s, id) >= 0; }
void oidset_free(oidset *s);

/* ---- filesystem helpers ---- */

/* snprintf for paths: -1 (errno ENAMETOOLONG, buf truncated) when it does not fit. */
int pathf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int mkdir_p(const char *path, int mode);
/* rm -rf without following symlinks; 0 or -1 with errno. */
int remove_tree(const char *path);
/* lchown every entry under path (path included); 0 or -1 with errno. */
int chown_tree(const char *path, uid_t uid, gid_t gid);
int write_file(const char *path, const void *data, size_t len, int mode);
/* Whole file into a NUL-terminated malloc'd buffer, or NULL with errno. */
char *read_file(const char *path, size_t *len);

/* ---- git_store.c: shared single-branch object stores ---- */

int gstore_acquire(lua_State *L);
int gstore_release(lua_State *L);
int gstore_inspect(lua_State *L);

/* ---- git_checkout.c: the fast checkout ---- */

int gcheckout_run(lua_State *L);

#endif
