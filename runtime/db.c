/*
 * db.c - SQLite connections (module foundry._db), wrapped by lua/foundry/db.lua.
 *
 *   open(path, {readonly=, busy_timeout_ms=, create=}) -> Connection
 *   conn:exec(sql)               one or more statements, no parameters, no results
 *   conn:query(sql, ...)         -> array of rows
 *   conn:row(sql, ...)           -> the first row or nil
 *   conn:run(sql, ...)           -> {changes=, last_id=}
 *   conn:transaction(fn, ...)    -> fn's results; BEGIN IMMEDIATE/COMMIT, SAVEPOINT nested
 *   conn:close()                 idempotent; also __close and __gc
 *
 * The API is synchronous: a statement runs on the loop thread. State queries are short,
 * and contention with another process waits at most busy_timeout_ms inside SQLite's busy
 * handler. A connection belongs to the thread that opened it (SQLITE_OPEN_NOMUTEX).
 *
 * Parameters are the values after the SQL (bound by position, to `?` and to named
 * parameters in order), or one table: `:name`, `@name` and `$name` take t.name, `?` and
 * `?N` take t[i]. nil binds NULL, booleans 1/0, integers and floats as such, strings as
 * TEXT (any bytes, embedded zeros included). Rows are tables keyed by column name:
 * INTEGER columns give Lua integers, REAL floats, TEXT and BLOB strings; a NULL column is
 * absent from the row.
 *
 * Errors are error objects: db.busy, db.constraint (with .constraint = "unique",
 * "foreignkey", "notnull", "check" or "primarykey", and .columns for unique ones),
 * db.corrupt, db.readonly, db.full and db.error; the message quotes the start of the SQL.
 */
#include "fdr.h"

#include <ctype.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONN_MT "foundry.db.Connection"
#define CACHE_SIZE 64
#define AT_EXIT_KEY "foundry.db.at_exit"

struct cached {
	char *sql; /* owned, the cache key */
	size_t len;
	sqlite3_stmt *stmt;
	unsigned long long used; /* LRU clock */
	int busy;                /* in use right now (a re-entrant use prepares its own) */
};

typedef struct {
	sqlite3 *db; /* NULL once closed */
	char *path;  /* owned */
	int readonly;
	int busy_ms;
	int depth; /* open transaction levels of :transaction() */
	unsigned long long clock;
	struct cached cache[CACHE_SIZE];
	int ncache;
} conn;

/* ---- errors ---- */

/* Copy up to 80 characters of sql into buf on one line (whitespace runs become one
 * space), with an ellipsis when cut. */
static void sql_excerpt(char *buf, size_t size, const char *sql)
{
	size_t n = 0, shown = 0;
	int space = 0;
	while (*sql && isspace((unsigned char)*sql))
		sql++;
	for (; *sql && n + 4 < size; sql++) {
		if (isspace((unsigned char)*sql)) {
			space = 1;
			continue;
		}
		if (shown == 80)
			break;
		if (space && shown) {
			buf[n++] = ' ';
			shown++;
			if (shown == 80)
				break;
		}
		space = 0;
		buf[n++] = *sql;
		shown++;
	}
	if (*sql && n + 4 <= size) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = 0;
}

/* Push an error object for SQLite result `rc` with message `msg`, about `sql` (may be
 * NULL). */
static void push_db_error(lua_State *L, const conn *c, int rc, const char *msg, const char *sql)
{
	const char *code = "db.error", *hint = NULL, *kind = NULL;
	char hintbuf[512];
	const char *path = c && c->path ? c->path : "the database";
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		code = "db.busy";
		snprintf(hintbuf, sizeof hintbuf,
			 "another process held %s for more than %d ms; try again", path,
			 c ? c->busy_ms : 0);
		hint = hintbuf;
		break;
	case SQLITE_CONSTRAINT:
		code = "db.constraint";
		switch (rc) {
		case SQLITE_CONSTRAINT_UNIQUE: kind = "unique"; break;
		case SQLITE_CONSTRAINT_PRIMARYKEY: kind = "primarykey"; break;
		case SQLITE_CONSTRAINT_FOREIGNKEY: kind = "foreignkey"; break;
		case SQLITE_CONSTRAINT_NOTNULL: kind = "notnull"; break;
		case SQLITE_CONSTRAINT_CHECK: kind = "check"; break;
		default: kind = "other"; break;
		}
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		code = "db.corrupt";
		snprintf(hintbuf, sizeof hintbuf,
			 "%s is damaged or not a database: move it aside (a new one is created) "
			 "or restore a backup", path);
		hint = hintbuf;
		break;
	case SQLITE_READONLY:
		code = "db.readonly";
		snprintf(hintbuf, sizeof hintbuf, "check the permissions of %s and its directory",
			 path);
		hint = hintbuf;
		break;
	case SQLITE_FULL:
		code = "db.full";
		snprintf(hintbuf, sizeof hintbuf, "free disk space on the file system of %s", path);
		hint = hintbuf;
		break;
	case SQLITE_CANTOPEN:
		snprintf(hintbuf, sizeof hintbuf, "check that the directory of %s exists and is "
			 "writable", path);
		hint = hintbuf;
		break;
	}
	if (sql) {
		char ex[300];
		sql_excerpt(ex, sizeof ex, sql);
		fdr_push_error(L, code, hint, "%s (in \"%s\")", msg, ex);
	} else {
		fdr_push_error(L, code, hint, "%s: %s", path, msg);
	}
	lua_pushinteger(L, rc);
	lua_setfield(L, -2, "sqlite");
	if (kind) {
		lua_pushstring(L, kind);
		lua_setfield(L, -2, "constraint");
		/* "UNIQUE constraint failed: sandboxes.name, sandboxes.x" */
		const char *cols = strstr(msg, "failed: ");
		if (cols) {
			lua_pushstring(L, cols + 8);
			lua_setfield(L, -2, "columns");
		}
	}
}

static int raise_db_error(lua_State *L, const conn *c, int rc, const char *msg, const char *sql)
{
	push_db_error(L, c, rc, msg, sql);
	return lua_error(L);
}

/* Raise the connection's last error. */
static int raise_last(lua_State *L, const conn *c, const char *sql)
{
	char msg[512];
	snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c->db));
	return raise_db_error(L, c, sqlite3_extended_errcode(c->db), msg, sql);
}

/* ---- connections ---- */

static conn *check_conn(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, CONN_MT);
}

static conn *check_open(lua_State *L, int idx)
{
	conn *c = check_conn(L, idx);
	if (!c->db)
		luaL_error(L, "db: the connection is closed");
	return c;
}

static void conn_close(conn *c)
{
	free(c->path);
	c->path = NULL;
	if (!c->db)
		return;
	for (int i = 0; i < c->ncache; i++) {
		sqlite3_finalize(c->cache[i].stmt);
		free(c->cache[i].sql);
	}
	c->ncache = 0;
	/* Statements left behind by an error thrown mid-use. */
	sqlite3_stmt *st;
	while ((st = sqlite3_next_stmt(c->db, NULL)) != NULL)
		sqlite3_finalize(st);
	sqlite3_close_v2(c->db);
	c->db = NULL;
}

static int simple_exec(lua_State *L, conn *c, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, &err);
	if (rc != SQLITE_OK) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
		return raise_db_error(L, c, sqlite3_extended_errcode(c->db), msg, sql);
	}
	return 0;
}

/* Create the file with mode 0600 before SQLite does (it would use 0644); SQLite gives
 * the -wal and -shm files the mode of the database. */
static void precreate(const char *path)
{
	if (path[0] == 0 || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
		return;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}

static int l_open(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	int readonly = 0, create = 1;
	lua_Integer busy_ms = 5000;
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		lua_getfield(L, 2, "readonly");
		readonly = lua_toboolean(L, -1);
		lua_getfield(L, 2, "create");
		if (!lua_isnil(L, -1))
			create = lua_toboolean(L, -1);
		lua_getfield(L, 2, "busy_timeout_ms");
		if (!lua_isnil(L, -1)) {
			int isnum;
			busy_ms = lua_tointegerx(L, -1, &isnum);
			if (!isnum || busy_ms < 0 || busy_ms > 600000)
				return luaL_error(L, "db.open: busy_timeout_ms: expected an integer "
						  "from 0 to 600000");
		}
		lua_pop(L, 3);
	}
	conn *c = lua_newuserdatauv(L, sizeof *c, 0);
	memset(c, 0, sizeof *c);
	luaL_setmetatable(L, CONN_MT);
	c->readonly = readonly;
	c->busy_ms = (int)busy_ms;
	c->path = strdup(path);
	if (!c->path)
		return luaL_error(L, "db.open: out of memory");
	int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE |
		    (readonly ? SQLITE_OPEN_READONLY
			      : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0));
	if (!readonly && create)
		precreate(path);
	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(path, &db, flags, NULL);
	if (rc != SQLITE_OK) {
		char msg[512];
		snprintf(msg, sizeof msg, "cannot open: %s",
			 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		int ext = db ? sqlite3_extended_errcode(db) : rc;
		sqlite3_close_v2(db);
		return raise_db_error(L, c, ext, msg, NULL);
	}
	c->db = db;
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, c->busy_ms);
	/* The first statements read the header: a damaged file fails here, not later. */
	simple_exec(L, c, "PRAGMA foreign_keys = ON");
	if (!readonly && strcmp(path, ":memory:") != 0 && path[0] != 0)
		simple_exec(L, c, "PRAGMA journal_mode = WAL");
	simple_exec(L, c, "PRAGMA synchronous = NORMAL");
	return 1;
}

/* ---- statements ---- */

/* A prepared statement for sql, from the cache when possible. *slot is the cache entry
 * (marked busy) or NULL for a one-off statement the caller finalizes. */
static sqlite3_stmt *prepare(lua_State *L, conn *c, const char *sql, size_t len,
			     struct cached **slot)
{
	*slot = NULL;
	int reentrant = 0;
	for (int i = 0; i < c->ncache; i++) {
		struct cached *e = &c->cache[i];
		if (e->len == len && memcmp(e->sql, sql, len) == 0) {
			if (e->busy) {
				reentrant = 1;
				break;
			}
			e->busy = 1;
			e->used = ++c->clock;
			*slot = e;
			return e->stmt;
		}
	}
	sqlite3_stmt *st = NULL;
	const char *tail = NULL;
	int rc = sqlite3_prepare_v3(c->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &st,
				    &tail);
	if (rc != SQLITE_OK)
		raise_last(L, c, sql);
	if (!st)
		luaL_error(L, "db: no statement in \"%s\"", sql);
	while (tail && *tail && (isspace((unsigned char)*tail) || *tail == ';'))
		tail++;
	if (tail && *tail) {
		char near[48];
		snprintf(near, sizeof near, "%.40s", tail);
		sqlite3_finalize(st);
		luaL_error(L, "db: several statements in one call; use :exec for those "
			      "(near \"%s\")", near);
	}
	if (reentrant)
		return st;
	struct cached *e;
	if (c->ncache < CACHE_SIZE) {
		e = &c->cache[c->ncache++];
	} else {
		e = NULL;
		for (int i = 0; i < c->ncache; i++)
			if (!c->cache[i].busy && (!e || c->cache[i].used < e->used))
				e = &c->cache[i];
		if (!e)
			return st; /* all busy: use it once */
		sqlite3_finalize(e->stmt);
		free(e->sql);
	}
	e->sql = malloc(len + 1);
	if (!e->sql) {
		/* keep the cache consistent: drop the entry */
		*e = c->cache[--c->ncache];
		return st;
	}
	memcpy(e->sql, sql, len + 1);
	e->len = len;
	e->stmt = st;
	e->busy = 1;
	e->used = ++c->clock;
	*slot = e;
	return st;
}

static void release(sqlite3_stmt *st, struct cached *slot)
{
	if (slot) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		slot->busy = 0;
	} else {
		sqlite3_finalize(st);
	}
}

/* Raise after a failed step: the statement's error, then release it. */
static int step_failed(lua_State *L, conn *c, sqlite3_stmt *st, struct cached *slot,
		       const char *sql)
{
	char msg[512];
	snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c->db));
	int rc = sqlite3_extended_errcode(c->db);
	release(st, slot);
	return raise_db_error(L, c, rc, msg, sql);
}

static const char *bind_one(lua_State *L, sqlite3_stmt *st, int i, int idx)
{
	int rc;
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
	case LUA_TNONE:
		rc = sqlite3_bind_null(st, i);
		break;
	case LUA_TBOOLEAN:
		rc = sqlite3_bind_int(st, i, lua_toboolean(L, idx));
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			rc = sqlite3_bind_int64(st, i, (sqlite3_int64)lua_tointeger(L, idx));
		else
			rc = sqlite3_bind_double(st, i, (double)lua_tonumber(L, idx));
		break;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		/* The value stays on the Lua stack until the statement is released. */
		rc = sqlite3_bind_text64(st, i, s, n, SQLITE_STATIC, SQLITE_UTF8);
		break;
	}
	default:
		return lua_typename(L, lua_type(L, idx));
	}
	return rc == SQLITE_OK ? NULL : sqlite3_errstr(rc);
}

/* Bind the values from stack index `first` to the top. */
static void bind_params(lua_State *L, sqlite3_stmt *st, struct cached *slot, int first,
			const char *sql)
{
	int top = lua_gettop(L);
	int nparams = sqlite3_bind_parameter_count(st);
	int nargs = top - first + 1;
	if (nargs == 1 && lua_type(L, first) == LUA_TTABLE) {
		int t = first;
		luaL_checkstack(L, nparams + 2, "db: too many parameters");
		for (int i = 1; i <= nparams; i++) {
			/* `?` and `?N` are numbered by SQLite: the index is theirs in t */
			const char *name = sqlite3_bind_parameter_name(st, i);
			if (!name || name[0] == '?')
				lua_geti(L, t, i);
			else
				lua_getfield(L, t, name + 1);
			const char *bad = bind_one(L, st, i, -1);
			if (bad) {
				release(st, slot);
				luaL_error(L, "db: parameter %s: cannot bind (%s)",
					   name ? name : "?", bad);
			}
		}
		return;
	}
	if (nargs > nparams) {
		char ex[300];
		sql_excerpt(ex, sizeof ex, sql);
		release(st, slot);
		luaL_error(L, "db: %d parameter%s given, the statement takes %d (in \"%s\")",
			   nargs, nargs == 1 ? "" : "s", nparams, ex);
	}
	for (int i = 1; i <= nargs; i++) {
		const char *bad = bind_one(L, st, i, first + i - 1);
		if (bad) {
			release(st, slot);
			luaL_error(L, "db: parameter %d: cannot bind (%s)", i, bad);
		}
	}
}

static void push_row(lua_State *L, sqlite3_stmt *st, int ncol)
{
	lua_createtable(L, 0, ncol);
	for (int i = 0; i < ncol; i++) {
		switch (sqlite3_column_type(st, i)) {
		case SQLITE_INTEGER:
			lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i));
			break;
		case SQLITE_FLOAT:
			lua_pushnumber(L, (lua_Number)sqlite3_column_double(st, i));
			break;
		case SQLITE_TEXT: {
			const char *s = (const char *)sqlite3_column_text(st, i);
			lua_pushlstring(L, s ? s : "", (size_t)sqlite3_column_bytes(st, i));
			break;
		}
		case SQLITE_BLOB: {
			const void *p = sqlite3_column_blob(st, i);
			lua_pushlstring(L, p ? p : "", (size_t)sqlite3_column_bytes(st, i));
			break;
		}
		default:
			continue; /* NULL: absent */
		}
		lua_setfield(L, -2, sqlite3_column_name(st, i));
	}
}

enum { MODE_QUERY, MODE_ROW, MODE_RUN };

static int execute(lua_State *L, int mode)
{
	conn *c = check_open(L, 1);
	size_t len;
	const char *sql = luaL_checklstring(L, 2, &len);
	struct cached *slot;
	sqlite3_stmt *st = prepare(L, c, sql, len, &slot);
	bind_params(L, st, slot, 3, sql);
	int ncol = sqlite3_column_count(st);
	int rc;
	if (mode == MODE_QUERY) {
		lua_newtable(L);
		lua_Integer n = 0;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			push_row(L, st, ncol);
			lua_rawseti(L, -2, ++n);
		}
		if (rc != SQLITE_DONE)
			return step_failed(L, c, st, slot, sql);
		release(st, slot);
		return 1;
	}
	if (mode == MODE_ROW) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			push_row(L, st, ncol);
		else if (rc == SQLITE_DONE)
			lua_pushnil(L);
		else
			return step_failed(L, c, st, slot, sql);
		release(st, slot);
		return 1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (rc != SQLITE_DONE)
		return step_failed(L, c, st, slot, sql);
	release(st, slot);
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)sqlite3_changes64(c->db));
	lua_setfield(L, -2, "changes");
	lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(c->db));
	lua_setfield(L, -2, "last_id");
	return 1;
}

static int l_query(lua_State *L)
{
	return execute(L, MODE_QUERY);
}

static int l_row(lua_State *L)
{
	return execute(L, MODE_ROW);
}

static int l_run(lua_State *L)
{
	return execute(L, MODE_RUN);
}

static int l_exec(lua_State *L)
{
	conn *c = check_open(L, 1);
	simple_exec(L, c, luaL_checkstring(L, 2));
	return 0;
}

/* ---- transactions ---- */

/* Roll back level `depth` after an error, ignoring failures: SQLite may already have
 * rolled the whole transaction back (after SQLITE_FULL, for one). */
static void rollback(conn *c, int nested, int depth)
{
	char sql[96];
	if (nested)
		snprintf(sql, sizeof sql, "ROLLBACK TO fdr_sp%d; RELEASE fdr_sp%d", depth, depth);
	else
		snprintf(sql, sizeof sql, "ROLLBACK");
	sqlite3_exec(c->db, sql, NULL, NULL, NULL);
}

static int l_transaction(lua_State *L)
{
	conn *c = check_open(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	int nested = c->depth > 0 || !sqlite3_get_autocommit(c->db);
	int depth = c->depth;
	char sql[64];
	if (nested)
		snprintf(sql, sizeof sql, "SAVEPOINT fdr_sp%d", depth);
	else
		snprintf(sql, sizeof sql, "%s", c->readonly ? "BEGIN" : "BEGIN IMMEDIATE");
	simple_exec(L, c, sql);
	c->depth++;
	/* lua_pcall, not a continuation: fn cannot yield, so no other task can run
	 * statements inside this transaction. */
	int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
	c->depth--;
	if (!c->db)
		return luaL_error(L, "db: the connection was closed inside a transaction");
	if (status != LUA_OK) {
		rollback(c, nested, depth);
		const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		if (msg && (strstr(msg, "attempt to yield across a C-call boundary") ||
			    strstr(msg, "cannot wait here")))
			return luaL_error(L, "db.transaction: the function must not wait (sleep, "
					     "exec, I/O) inside a transaction");
		return lua_error(L);
	}
	if (nested)
		snprintf(sql, sizeof sql, "RELEASE fdr_sp%d", depth);
	else
		snprintf(sql, sizeof sql, "COMMIT");
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(c->db));
		int ext = sqlite3_extended_errcode(c->db);
		rollback(c, nested, depth);
		return raise_db_error(L, c, ext, msg, sql);
	}
	return lua_gettop(L) - 1;
}

/* ---- the rest of the connection ---- */

static int l_close(lua_State *L)
{
	conn *c = check_conn(L, 1);
	if (c->depth > 0)
		return luaL_error(L, "db: cannot close a connection inside its transaction");
	conn_close(c);
	return 0;
}

static int l_gc(lua_State *L)
{
	conn_close(check_conn(L, 1));
	return 0;
}

static int l_tostring(lua_State *L)
{
	conn *c = check_conn(L, 1);
	if (c->db)
		lua_pushfstring(L, CONN_MT " (%s)", c->path);
	else
		lua_pushstring(L, CONN_MT " (closed)");
	return 1;
}

static int l_path(lua_State *L)
{
	conn *c = check_conn(L, 1);
	if (c->db)
		lua_pushstring(L, c->path);
	else
		lua_pushnil(L);
	return 1;
}

static int l_in_transaction(lua_State *L)
{
	conn *c = check_open(L, 1);
	lua_pushboolean(L, c->depth > 0 || !sqlite3_get_autocommit(c->db));
	return 1;
}

static int l_is_open(lua_State *L)
{
	lua_pushboolean(L, check_conn(L, 1)->db != NULL);
	return 1;
}

/* ---- functions run at shutdown ---- */

/* Buffered writers (the audit log's) flush here: before Lua is closed, after the last
 * task ended. */
static void run_at_exit(void *data)
{
	lua_State *L = data;
	if (lua_getfield(L, LUA_REGISTRYINDEX, AT_EXIT_KEY) != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	lua_Integer n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n; i++) {
		lua_geti(L, -1, i);
		if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
			fprintf(stderr, "foundry: at exit: %s\n", luaL_tolstring(L, -1, NULL));
			lua_pop(L, 2);
		}
	}
	lua_pop(L, 1);
}

/* at_exit(fn): run fn() (synchronously, errors reported) when Foundry shuts down. */
static int l_at_exit(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	if (lua_getfield(L, LUA_REGISTRYINDEX, AT_EXIT_KEY) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, AT_EXIT_KEY);
		fdr_host *h = fdr_host_of(L);
		fdr_host_at_close(h, run_at_exit, fdr_host_state(h));
	}
	lua_pushvalue(L, 1);
	lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
	return 0;
}

int luaopen_foundry_db(lua_State *L)
{
	static const luaL_Reg methods[] = {{"exec", l_exec},
					   {"query", l_query},
					   {"row", l_row},
					   {"run", l_run},
					   {"transaction", l_transaction},
					   {"close", l_close},
					   {"path", l_path},
					   {"in_transaction", l_in_transaction},
					   {"is_open", l_is_open},
					   {NULL, NULL}};
	static const luaL_Reg meta[] = {{"__gc", l_gc},
					{"__close", l_gc},
					{"__tostring", l_tostring},
					{NULL, NULL}};
	if (luaL_newmetatable(L, CONN_MT)) {
		luaL_setfuncs(L, meta, 0);
		luaL_newlib(L, methods);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	static const luaL_Reg fns[] = {{"open", l_open}, {"at_exit", l_at_exit}, {NULL, NULL}};
	luaL_newlib(L, fns);
	lua_pushstring(L, sqlite3_libversion());
	lua_setfield(L, -2, "sqlite_version");
	return 1;
}
