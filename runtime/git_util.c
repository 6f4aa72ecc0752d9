/*
 * git_util.c - the machinery shared by runtime/git*.c (module foundry._git): memory,
 * the plain values a worker builds for Lua, the thread-pool operation, option parsing,
 * sets of object ids and small filesystem helpers. See git_private.h.
 */
#include "git_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <unistd.h>

/* ---- memory ---- */

static void oom(void)
{
	fputs("foundry: out of memory\n", stderr);
	abort();
}

void *gx_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *gx_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		oom();
	return p;
}

void *gx_realloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		oom();
	return p;
}

char *gx_strdup(const char *s)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		oom();
	return d;
}

/* ---- values ---- */

static gv *gv_new(enum gv_type t)
{
	gv *v = gx_calloc(1, sizeof *v);
	v->type = t;
	return v;
}

gv *gv_table(void) { return gv_new(GV_TABLE); }

gv *gv_strn(const char *s, size_t len)
{
	gv *v = gv_new(GV_STR);
	v->s = gx_malloc(len + 1);
	memcpy(v->s, s, len);
	v->s[len] = 0;
	v->len = len;
	return v;
}

gv *gv_str(const char *s) { return gv_strn(s, strlen(s)); }

gv *gv_int(int64_t i)
{
	gv *v = gv_new(GV_INT);
	v->i = i;
	return v;
}

gv *gv_bool(int b)
{
	gv *v = gv_new(GV_BOOL);
	v->i = !!b;
	return v;
}

gv *gv_oid(const git_oid *id)
{
	char hex[GIT_OID_HEXSZ + 1];
	git_oid_tostr(hex, sizeof hex, id);
	return gv_str(hex);
}

void gv_set(gv *t, const char *key, gv *v)
{
	if (t->nkv == t->capkv) {
		t->capkv = t->capkv ? t->capkv * 2 : 8;
		t->keys = gx_realloc(t->keys, t->capkv * sizeof *t->keys);
		t->vals = gx_realloc(t->vals, t->capkv * sizeof *t->vals);
	}
	t->keys[t->nkv] = gx_strdup(key);
	t->vals[t->nkv++] = v;
}

void gv_append(gv *t, gv *v)
{
	if (t->narr == t->caparr) {
		t->caparr = t->caparr ? t->caparr * 2 : 8;
		t->arr = gx_realloc(t->arr, t->caparr * sizeof *t->arr);
	}
	t->arr[t->narr++] = v;
}

void gv_set_str(gv *t, const char *key, const char *s)
{
	if (s)
		gv_set(t, key, gv_str(s));
}

void gv_set_int(gv *t, const char *key, int64_t i) { gv_set(t, key, gv_int(i)); }
void gv_set_bool(gv *t, const char *key, int b) { gv_set(t, key, gv_bool(b)); }

void gv_free(gv *v)
{
	if (!v)
		return;
	free(v->s);
	for (size_t i = 0; i < v->narr; i++)
		gv_free(v->arr[i]);
	free(v->arr);
	for (size_t i = 0; i < v->nkv; i++) {
		free(v->keys[i]);
		gv_free(v->vals[i]);
	}
	free(v->keys);
	free(v->vals);
	free(v);
}

void gv_push(lua_State *L, const gv *v)
{
	luaL_checkstack(L, 3, "git values nested too deep");
	if (!v) {
		lua_pushnil(L);
		return;
	}
	switch (v->type) {
	case GV_NIL: lua_pushnil(L); break;
	case GV_BOOL: lua_pushboolean(L, (int)v->i); break;
	case GV_INT: lua_pushinteger(L, (lua_Integer)v->i); break;
	case GV_STR: lua_pushlstring(L, v->s, v->len); break;
	case GV_TABLE:
		lua_createtable(L, (int)v->narr, (int)v->nkv);
		for (size_t i = 0; i < v->narr; i++) {
			gv_push(L, v->arr[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		for (size_t i = 0; i < v->nkv; i++) {
			gv_push(L, v->vals[i]);
			lua_setfield(L, -2, v->keys[i]);
		}
		break;
	}
}

/* ---- operations ---- */

void gop_fail(gop *op, const char *code, const char *hint, const char *fmt, ...)
{
	if (op->err.set)
		return;
	op->err.set = 1;
	snprintf(op->err.code, sizeof op->err.code, "%s", code);
	snprintf(op->err.hint, sizeof op->err.hint, "%s", hint ? hint : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(op->err.msg, sizeof op->err.msg, fmt, ap);
	va_end(ap);
}

/* Foundry's code for a libgit2 error. */
static const char *git_code(int rc)
{
	switch (rc) {
	case GIT_ENOTFOUND: return "git.not_found";
	case GIT_EEXISTS: return "git.exists";
	case GIT_ELOCKED: return "git.locked";
	case GIT_EUNBORNBRANCH: return "git.unborn";
	case GIT_EINVALIDSPEC: return "git.invalid";
	case GIT_EBAREREPO: return "git.bare";
	case GIT_EAUTH: return "git.auth";
	case GIT_ECERTIFICATE: return "git.certificate";
	case GIT_ENONFASTFORWARD: return "git.not_fast_forward";
	case GIT_EUSER: return "cancelled";
	case GIT_EOWNER: return "git.owner";
	default: return "git.error";
	}
}

int gop_git_fail(gop *op, int rc, const char *fmt, ...)
{
	if (op->err.set)
		return rc;
	char ctx[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof ctx, fmt, ap);
	va_end(ap);
	const git_error *e = git_error_last(); /* thread-local: we are on the worker */
	const char *code = atomic_load(&op->cancelled) ? "cancelled" : git_code(rc);
	gop_fail(op, code, NULL, "%s: %s", ctx, e && e->message ? e->message : "unknown error");
	return rc;
}

int gop_sys_fail(gop *op, const char *fmt, ...)
{
	int saved = errno;
	char ctx[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx, sizeof ctx, fmt, ap);
	va_end(ap);
	char code[48] = "io.error";
	switch (saved) {
	case ENOENT: strcpy(code, "io.enoent"); break;
	case EEXIST: strcpy(code, "io.eexist"); break;
	case EACCES: strcpy(code, "io.eacces"); break;
	case EPERM: strcpy(code, "io.eperm"); break;
	case ENOSPC: strcpy(code, "io.enospc"); break;
	case ENOTDIR: strcpy(code, "io.enotdir"); break;
	}
	gop_fail(op, code, NULL, "%s: %s", ctx, strerror(saved));
	errno = saved;
	return -1;
}

static void gop_free(gop *op)
{
	if (op->destroy)
		op->destroy(op);
	gv_free(op->result);
	gv_free(op->err.extra);
	free(op);
}

static void gop_work(void *data)
{
	gop *op = data;
	op->run(op);
	git_error_clear();
}

static void gop_after(fdr_wait *w, void *data)
{
	gop *op = data;
	lua_State *S = fdr_wait_state(w);
	if (op->err.set) {
		fdr_push_error(S, op->err.code, op->err.hint[0] ? op->err.hint : NULL, "%s",
			       op->err.msg);
		if (op->err.extra)
			for (size_t i = 0; i < op->err.extra->nkv; i++) {
				gv_push(S, op->err.extra->vals[i]);
				lua_setfield(S, -2, op->err.extra->keys[i]);
			}
		fdr_wait_reject(w);
	} else {
		int n = 1;
		if (op->push)
			n = op->push(S, op);
		else
			gv_push(S, op->result);
		fdr_wait_resolve(w, n);
	}
	gop_free(op);
}

static void gop_cancel(fdr_wait *w)
{
	gop *op = w->data;
	atomic_store(&op->cancelled, 1);
}

fdr_wait *gop_wait(lua_State *L, const char *what)
{
	return fdr_wait_new(L, what, gop_cancel, NULL);
}

gop *gop_new(size_t size, const char *what, void (*run)(gop *), void (*destroy)(gop *))
{
	gop *op = gx_calloc(1, size);
	op->what = what;
	op->run = run;
	op->destroy = destroy;
	return op;
}

int gop_start(lua_State *L, fdr_wait *w, gop *op)
{
	w->data = op;
	int rc = fdr_queue_work(L, w, gop_work, gop_after);
	if (rc < 0) {
		fdr_wait_drop(w);
		gop_free(op);
		return fdr_error(L, "git.error", NULL, "cannot queue work: %s", uv_strerror(rc));
	}
	return fdr_await(L, w);
}

/* ---- options ---- */

const char *opt_str(lua_State *L, const char *what, const char *key, int required)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, key);
	const char *s = NULL;
	if (lua_type(L, -1) == LUA_TSTRING)
		s = lua_tostring(L, -1);
	else if (!lua_isnil(L, -1) || required)
		luaL_error(L, "%s: %s: expected string, got %s", what, key, luaL_typename(L, -1));
	lua_pop(L, 1); /* the table keeps the string alive */
	return s;
}

lua_Integer opt_int(lua_State *L, const char *what, const char *key, lua_Integer def)
{
	lua_getfield(L, 1, key);
	lua_Integer v = def;
	if (lua_isinteger(L, -1))
		v = lua_tointeger(L, -1);
	else if (!lua_isnil(L, -1))
		luaL_error(L, "%s: %s: expected integer, got %s", what, key, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

int opt_bool(lua_State *L, const char *what, const char *key, int def)
{
	lua_getfield(L, 1, key);
	int v = def;
	if (lua_isboolean(L, -1))
		v = lua_toboolean(L, -1);
	else if (!lua_isnil(L, -1))
		luaL_error(L, "%s: %s: expected boolean, got %s", what, key, luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

char **opt_strv(lua_State *L, const char *what, const char *key, int copy)
{
	lua_getfield(L, 1, key);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return NULL;
	}
	if (!lua_istable(L, -1))
		luaL_error(L, "%s: %s: expected list of strings, got %s", what, key,
			   luaL_typename(L, -1));
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n; i++)
		if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
			luaL_error(L, "%s: %s[%d]: expected string, got %s", what, key, (int)i,
				   luaL_typename(L, -1));
		else
			lua_pop(L, 1);
	char **v = NULL;
	if (copy) {
		v = gx_calloc((size_t)n + 1, sizeof *v);
		for (lua_Integer i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, i);
			v[i - 1] = gx_strdup(lua_tostring(L, -1));
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return v;
}

void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

size_t strv_len(char **v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

/* ---- object id sets (open addressing; ids are uniformly distributed) ---- */

static size_t oid_hash(const git_oid *id)
{
	size_t h;
	memcpy(&h, id->id, sizeof h);
	return h;
}

/* The all-zero id marks a free slot (no object has it). */
static inline int slot_free(const git_oid *o)
{
	uint64_t a, b;
	uint32_t c;
	memcpy(&a, o->id, 8);
	memcpy(&b, o->id + 8, 8);
	memcpy(&c, o->id + 16, 4);
	return (a | b | c) == 0;
}

static inline int same_oid(const git_oid *x, const git_oid *y)
{
	return memcmp(x->id, y->id, GIT_OID_RAWSZ) == 0;
}

static void oidset_grow(oidset *s)
{
	oidset old = *s;
	s->cap = old.cap ? old.cap * 2 : 1024;
	s->slots = gx_calloc(s->cap, sizeof *s->slots);
	s->vals = gx_calloc(s->cap, sizeof *s->vals);
	s->n = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (!slot_free(&old.slots[i]))
			oidset_put(s, &old.slots[i], old.vals[i]);
	free(old.slots);
	free(old.vals);
}

int oidset_put(oidset *s, const git_oid *id, uint32_t val)
{
	if ((s->n + 1) * 2 > s->cap)
		oidset_grow(s);
	for (size_t i = oid_hash(id) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (slot_free(&s->slots[i])) {
			s->slots[i] = *id;
			s->vals[i] = val;
			s->n++;
			return 1;
		}
		if (same_oid(&s->slots[i], id))
			return 0;
	}
}

int64_t oidset_get(const oidset *s, const git_oid *id)
{
	if (!s->cap)
		return -1;
	for (size_t i = oid_hash(id) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (slot_free(&s->slots[i]))
			return -1;
		if (same_oid(&s->slots[i], id))
			return s->vals[i];
	}
}

void oidset_free(oidset *s)
{
	free(s->slots);
	free(s->vals);
	memset(s, 0, sizeof *s);
}

/* ---- filesystem ---- */

int pathf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int mkdir_p(const char *path, int mode)
{
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
	return rc < 0 && errno != ENOENT ? -1 : 0;
}

static int remove_one(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlink(path);
	return nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

struct rm_job {
	char **dirs;
	size_t n;
	atomic_size_t next;
	atomic_int failed;
};

static void *rm_worker(void *arg)
{
	struct rm_job *j = arg;
	size_t i;
	while ((i = atomic_fetch_add(&j->next, 1)) < j->n)
		if (remove_one(j->dirs[i]) < 0)
			atomic_store(&j->failed, errno ? errno : EIO);
	return NULL;
}

/* Subdirectories to remove side by side: expand the tree breadth-first until there are
 * a few per thread (files met on the way are left for the final pass). */
static void rm_split(const char *root, dev_t dev, struct rm_job *j, size_t want)
{
	size_t cap = 64, head = 0;
	char **q = gx_malloc(cap * sizeof *q);
	size_t nq = 0;
	q[nq++] = gx_strdup(root);
	while (head < nq && nq - head < want && nq < 4096) {
		char *d = q[head];
		DIR *dir = opendir(d);
		struct dirent *e;
		while (dir && (e = readdir(dir))) {
			if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			if (nq == cap)
				q = gx_realloc(q, (cap *= 2) * sizeof *q);
			char *sub = gx_malloc(strlen(d) + strlen(e->d_name) + 2);
			sprintf(sub, "%s/%s", d, e->d_name);
			struct stat st;
			if (lstat(sub, &st) < 0 || st.st_dev != dev) { /* never into another mount */
				free(sub);
				continue;
			}
			q[nq++] = sub;
		}
		if (dir)
			closedir(dir);
		head++;
	}
	/* q[head..nq) are disjoint subtrees; q[0..head) are their ancestors */
	j->dirs = gx_malloc((nq - head + 1) * sizeof *j->dirs);
	j->n = 0;
	for (size_t i = head; i < nq; i++)
		j->dirs[j->n++] = q[i];
	for (size_t i = 0; i < head; i++)
		free(q[i]);
	free(q);
}

int remove_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	size_t nthreads = uv_available_parallelism();
	if (!S_ISDIR(st.st_mode) || nthreads < 2)
		return remove_one(path);
	if (nthreads > 8)
		nthreads = 8;
	struct rm_job j = {0};
	rm_split(path, st.st_dev, &j, nthreads * 4);
	pthread_t tids[8];
	size_t started = 0;
	for (size_t i = 1; i < nthreads && j.n > 1; i++)
		if (pthread_create(&tids[started], NULL, rm_worker, &j) == 0)
			started++;
	rm_worker(&j);
	for (size_t i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	for (size_t i = 0; i < j.n; i++)
		free(j.dirs[i]);
	free(j.dirs);
	int rc = remove_one(path);
	if (rc == 0 && atomic_load(&j.failed)) {
		errno = atomic_load(&j.failed);
		return -1;
	}
	return rc;
}

static uid_t chown_uid;
static gid_t chown_gid;
static int chown_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return lchown(path, chown_uid, chown_gid) < 0 ? -1 : 0;
}

int chown_tree(const char *path, uid_t uid, gid_t gid)
{
	/* nftw has no user pointer; the thread pool may run two chowns at once. */
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&mu);
	chown_uid = uid;
	chown_gid = gid;
	int rc = nftw(path, chown_cb, 32, FTW_PHYS | FTW_MOUNT);
	pthread_mutex_unlock(&mu);
	return rc;
}

int write_file(const char *path, const void *data, size_t len, int mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
	if (fd < 0)
		return -1;
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return close(fd);
}

char *read_file(const char *path, size_t *lenp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = gx_malloc(cap);
	for (;;) {
		if (len + 1 >= cap)
			buf = gx_realloc(buf, cap *= 2);
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			close(fd);
			errno = e;
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	if (lenp)
		*lenp = len;
	return buf;
}

