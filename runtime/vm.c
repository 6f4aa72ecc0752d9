/*
 * vm.c - restricted Lua VMs for user code that must not hurt the host (module foundry._vm).
 *
 * Policies and other user scripts run in their own lua_State: an allocator that enforces a
 * byte budget, an environment copied from an allow-list (no io, os.execute, debug, require,
 * load of bytecode, string.dump), a protected string metatable, and an instruction-count
 * hook that keeps firing once the budget is spent, so pcall inside the script cannot
 * swallow the error. Values cross between the host and a VM only as plain data (nil,
 * booleans, numbers, strings and tables of those), copied. Calls are synchronous: a VM
 * never yields and never does I/O.
 */
#include "fdr.h"

#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#define VM_MT "foundry.vm.VM"
#define HOOK_EVERY 1000
#define COPY_DEPTH 64

typedef struct {
	lua_State *L;
	size_t used, limit;   /* bytes */
	long long budget;     /* instructions per call */
	long long remaining;
	int exhausted;        /* instruction budget spent in the current call */
	int oom;              /* an allocation was refused in the current call */
	size_t base;          /* bytes used by the libraries, not counted in the budget */
	char name[128];
} vm_t;

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	vm_t *vm = ud;
	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		vm->used -= osize;
		return NULL;
	}
	if (nsize > osize && vm->used + (nsize - osize) > vm->limit) {
		vm->oom = 1;
		return NULL;
	}
	void *p = realloc(ptr, nsize);
	if (p) {
		vm->used += nsize;
		vm->used -= osize;
	} else if (nsize > osize) {
		vm->oom = 1;
	}
	return p;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	vm_t *vm = *(vm_t **)lua_getextraspace(L);
	vm->remaining -= HOOK_EVERY;
	if (vm->remaining <= 0 || vm->exhausted) {
		vm->exhausted = 1;
		/* Re-arm on every instruction so a pcall in the script gains nothing. */
		lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
		luaL_error(L, "instruction budget exhausted");
	}
}

/* ---- copying plain data between states ---- */

static int copy_value(lua_State *from, int idx, lua_State *to, int depth, const char **err);

static int copy_table(lua_State *from, int idx, lua_State *to, int depth, const char **err)
{
	if (depth > COPY_DEPTH) {
		*err = "value nested too deeply (a cycle?)";
		return -1;
	}
	idx = lua_absindex(from, idx);
	if (!lua_checkstack(from, 4) || !lua_checkstack(to, 4)) {
		*err = "stack overflow";
		return -1;
	}
	lua_newtable(to);
	lua_pushnil(from);
	while (lua_next(from, idx)) {
		if (copy_value(from, -2, to, depth + 1, err) < 0 ||
		    copy_value(from, -1, to, depth + 1, err) < 0) {
			lua_pop(from, 2);
			return -1;
		}
		lua_rawset(to, -3);
		lua_pop(from, 1);
	}
	return 0;
}

/* Push onto `to` a copy of the value at `idx` in `from`; functions and other non-data
 * values are refused (returns -1 with *err set; nothing pushed). */
static int copy_value(lua_State *from, int idx, lua_State *to, int depth, const char **err)
{
	switch (lua_type(from, idx)) {
	case LUA_TNIL:
		lua_pushnil(to);
		return 0;
	case LUA_TBOOLEAN:
		lua_pushboolean(to, lua_toboolean(from, idx));
		return 0;
	case LUA_TNUMBER:
		if (lua_isinteger(from, idx))
			lua_pushinteger(to, lua_tointeger(from, idx));
		else
			lua_pushnumber(to, lua_tonumber(from, idx));
		return 0;
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(from, idx, &n);
		lua_pushlstring(to, s, n);
		return 0;
	}
	case LUA_TTABLE: {
		int top = lua_gettop(to);
		if (copy_table(from, idx, to, depth, err) < 0) {
			lua_settop(to, top);
			return -1;
		}
		return 0;
	}
	case LUA_TFUNCTION:
		/* functions stay inside the VM: shown as a marker the host can test for */
		lua_pushliteral(to, "<function>");
		return 0;
	default:
		*err = "only plain data (nil, booleans, numbers, strings, tables) crosses a VM";
		return -1;
	}
}

/* ---- the restricted environment ---- */

static const char *const safe_base[] = {
	"assert", "error",  "ipairs",   "next",   "pairs",  "pcall",	"rawequal", "rawget",
	"rawlen", "rawset", "select",   "tonumber", "tostring", "type", "xpcall",   "setmetatable",
	"getmetatable", "_VERSION", NULL};

static int vm_print(lua_State *L)
{
	(void)L; /* user code may call print; its output is dropped (no I/O from a VM) */
	return 0;
}

/* setmetatable() without __gc: Lua runs finalizers with hooks off, so a finalizer would
 * escape the instruction budget. A metatable with a __gc field (of any value) at the
 * time it is set marks the object for finalization; later additions do not. */
static int vm_setmetatable(lua_State *L)
{
	if (lua_istable(L, 2) && lua_getfield(L, 2, "__gc") != LUA_TNIL)
		return luaL_error(L, "__gc metamethods are not allowed here");
	lua_settop(L, 2);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, 2, 1);
	return 1;
}

/* load() for source text only, in the VM's environment. */
static int vm_load(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	const char *name = luaL_optstring(L, 2, "=(load)");
	if (luaL_loadbufferx(L, s, n, name, "t") != LUA_OK) {
		lua_pushnil(L);
		lua_insert(L, -2);
		return 2;
	}
	lua_pushglobaltable(L);
	lua_setupvalue(L, -2, 1);
	return 1;
}

static void open_restricted(lua_State *L)
{
	luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
	luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
	luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
	luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
	luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
	lua_pop(L, 6);

	/* a fresh global table holding only the allow-list */
	lua_newtable(L);
	int env = lua_gettop(L);
	lua_pushglobaltable(L);
	int g = env + 1;
	for (int i = 0; safe_base[i]; i++) {
		lua_getfield(L, g, safe_base[i]);
		lua_setfield(L, env, safe_base[i]);
	}
	const char *libs[] = {LUA_STRLIBNAME, LUA_TABLIBNAME, LUA_MATHLIBNAME, LUA_UTF8LIBNAME,
			      NULL};
	for (int i = 0; libs[i]; i++) {
		lua_getfield(L, g, libs[i]);
		lua_newtable(L);
		lua_pushnil(L);
		while (lua_next(L, -3)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -4);
		}
		lua_remove(L, -2);
		lua_setfield(L, env, libs[i]);
	}
	/* string.dump could leak bytecode; math.random is fine */
	lua_getfield(L, env, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_pop(L, 1);
	/* os: time only */
	lua_newtable(L);
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_getfield(L, -1, LUA_OSLIBNAME);
	const char *osfns[] = {"time", "clock", "date", "difftime", NULL};
	for (int i = 0; osfns[i]; i++) {
		lua_getfield(L, -1, osfns[i]);
		lua_setfield(L, -4, osfns[i]);
	}
	lua_pop(L, 2);
	lua_setfield(L, env, "os");
	lua_pushcfunction(L, vm_print);
	lua_setfield(L, env, "print");
	lua_pushcfunction(L, vm_load);
	lua_setfield(L, env, "load");
	lua_getfield(L, g, "setmetatable");
	lua_pushcclosure(L, vm_setmetatable, 1);
	lua_setfield(L, env, "setmetatable");
	lua_pushvalue(L, env);
	lua_setfield(L, env, "_G");

	/* make env the globals table (the loaded libraries keep their own refs) */
	lua_pushvalue(L, env);
	lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
	lua_pop(L, 2);

	/* protect the string metatable: scripts cannot change string methods for everyone */
	lua_pushliteral(L, "");
	lua_getmetatable(L, -1);
	lua_pushliteral(L, "string");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 2);
	/* the original global table (with io, require, debug...) is now unreachable */
	lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_pushnil(L);
	lua_setfield(L, -2, "_G");
	lua_pushnil(L);
	lua_setfield(L, -2, LUA_OSLIBNAME);
	lua_pop(L, 1);
}

/* ---- running code under the budget ---- */

enum { OP_LOAD, OP_CALL };

/* Everything that allocates in the VM runs inside one protected call, so a refused
 * allocation or the budget error unwinds to lua_pcall instead of panicking. */
struct op {
	int kind;
	lua_State *H;         /* the host state holding the arguments */
	const char *src, *chunk, *path;
	size_t len;
	int argbase, nargs;
	int syntax;           /* the failure was a syntax error */
	char err[256];
};

static int push_path(lua_State *L, const char *path)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "foundry.vm.root");
	const char *p = path;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (!lua_istable(L, -1)) {
			lua_pop(L, 1);
			lua_pushnil(L);
			return LUA_TNIL;
		}
		lua_pushlstring(L, p, len);
		lua_rawget(L, -2);
		lua_remove(L, -2);
		p += len;
		if (*p == '.')
			p++;
	}
	return lua_type(L, -1);
}

static int vm_has_protected(lua_State *L)
{
	const char *path = lua_touserdata(L, 1);
	lua_settop(L, 0);
	lua_pushinteger(L, push_path(L, path));
	return 1;
}

static int vm_protected(lua_State *L)
{
	struct op *op = lua_touserdata(L, 1);
	lua_settop(L, 0);
	if (op->kind == OP_LOAD) {
		if (luaL_loadbufferx(L, op->src, op->len, op->chunk, "t") != LUA_OK) {
			op->syntax = 1;
			return lua_error(L);
		}
		lua_call(L, 0, 1);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, "foundry.vm.root");
		return 1;
	}
	if (push_path(L, op->path) != LUA_TFUNCTION) {
		snprintf(op->err, sizeof op->err, "'%s' is not a function", op->path);
		return luaL_error(L, "%s", op->err);
	}
	luaL_checkstack(L, op->nargs + 8, "too many arguments");
	for (int i = 0; i < op->nargs; i++) {
		const char *err = NULL;
		if (copy_value(op->H, op->argbase + i, L, 0, &err) < 0) {
			snprintf(op->err, sizeof op->err, "argument %d: %s", i + 1, err);
			return luaL_error(L, "%s", op->err);
		}
	}
	lua_call(L, op->nargs, LUA_MULTRET);
	return lua_gettop(L);
}

static void begin_call(vm_t *vm)
{
	vm->remaining = vm->budget;
	vm->exhausted = 0;
	vm->oom = 0;
}

/* Raise in the host state H the error left by a failed pcall in the VM. */
static int raise_vm_error(lua_State *H, vm_t *vm, struct op *op, int status)
{
	lua_State *L = vm->L;
	int exhausted = vm->exhausted, oom = vm->oom;
	vm->exhausted = 1; /* until the next call: finalizers must not run unbounded */
	if (exhausted) {
		lua_settop(L, 0);
		return fdr_error(H, "vm.budget",
				 "make the script do less work per call, or raise its instruction "
				 "budget",
				 "%s: stopped after %lld instructions (its budget)", vm->name,
				 vm->budget);
	}
	if (status == LUA_ERRMEM || oom) {
		lua_settop(L, 0);
		lua_gc(L, LUA_GCCOLLECT);
		return fdr_error(H, "vm.memory",
				 "make the script keep less data, or raise its memory limit",
				 "%s: memory limit exceeded (%zu bytes)", vm->name,
				 vm->limit - vm->base);
	}
	const char *msg = lua_tostring(L, -1);
	char buf[512];
	snprintf(buf, sizeof buf, "%s", op->err[0] ? op->err : msg ? msg : "(error object is not a string)");
	lua_settop(L, 0);
	return fdr_error(H, op->syntax ? "vm.syntax" : "vm.error", NULL, "%s", buf);
}

static vm_t *check_vm(lua_State *L)
{
	vm_t *vm = luaL_checkudata(L, 1, VM_MT);
	if (!vm->L)
		luaL_error(L, "vm: used after close");
	return vm;
}

/* foundry._vm.new{memory=bytes, instructions=n, name=} */
static int l_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "memory");
	lua_Integer mem = luaL_optinteger(L, -1, 32 << 20);
	lua_getfield(L, 1, "instructions");
	lua_Integer ins = luaL_optinteger(L, -1, 10 * 1000 * 1000);
	lua_getfield(L, 1, "name");
	const char *name = luaL_optstring(L, -1, "script");
	luaL_argcheck(L, mem >= 64 * 1024, 1, "memory: at least 65536 bytes");
	luaL_argcheck(L, ins >= HOOK_EVERY, 1, "instructions: at least 1000");
	vm_t *vm = lua_newuserdatauv(L, sizeof *vm, 0);
	memset(vm, 0, sizeof *vm);
	vm->budget = ins;
	snprintf(vm->name, sizeof vm->name, "%s", name);
	luaL_setmetatable(L, VM_MT);
	vm->limit = (size_t)-1; /* the base libraries first, then the budget applies */
	vm->L = lua_newstate(vm_alloc, vm);
	if (!vm->L)
		return luaL_error(L, "vm: cannot create a Lua state");
	*(vm_t **)lua_getextraspace(vm->L) = vm;
	open_restricted(vm->L);
	lua_gc(vm->L, LUA_GCCOLLECT);
	vm->base = vm->used;
	vm->limit = vm->used + (size_t)mem;
	vm->exhausted = 1; /* no VM code runs outside load/call */
	lua_sethook(vm->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	return 1;
}

static int run_op(lua_State *H, vm_t *vm, struct op *op)
{
	lua_State *L = vm->L;
	lua_settop(L, 0);
	begin_call(vm);
	lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	lua_pushcfunction(L, vm_protected);
	lua_pushlightuserdata(L, op);
	int status = lua_pcall(L, 1, LUA_MULTRET, 0);
	if (status != LUA_OK)
		return raise_vm_error(H, vm, op, status);
	vm->exhausted = 1;
	int nres = lua_gettop(L);
	luaL_checkstack(H, nres + 2, "vm: too many results");
	for (int i = 1; i <= nres; i++) {
		const char *err = NULL;
		if (copy_value(L, i, H, 0, &err) < 0) {
			lua_settop(L, 0);
			return fdr_error(H, "vm.error", NULL, "%s: result %d: %s", vm->name, i, err);
		}
	}
	lua_settop(L, 0);
	return nres;
}

/* vm:load(source, chunkname) -> plain-data copy of the chunk's result */
static int m_load(lua_State *H)
{
	vm_t *vm = check_vm(H);
	struct op op = {.kind = OP_LOAD, .H = H};
	op.src = luaL_checklstring(H, 2, &op.len);
	op.chunk = luaL_optstring(H, 3, "=(script)");
	return run_op(H, vm, &op);
}

/* vm:has(path) -> true when the loaded result has a function at the dotted path */
static int m_has(lua_State *H)
{
	vm_t *vm = check_vm(H);
	const char *path = luaL_checkstring(H, 2);
	lua_State *L = vm->L;
	lua_settop(L, 0);
	if (!lua_checkstack(L, 4)) {
		lua_pushboolean(H, 0);
		return 1;
	}
	int t = LUA_TNIL;
	lua_getfield(L, LUA_REGISTRYINDEX, "foundry.vm.root");
	if (!lua_isnil(L, -1)) {
		lua_pop(L, 1);
		begin_call(vm);
		lua_pushcfunction(L, vm_has_protected);
		lua_pushlightuserdata(L, (void *)path);
		if (lua_pcall(L, 1, 1, 0) == LUA_OK)
			t = (int)lua_tointeger(L, -1);
		vm->exhausted = 1;
	}
	lua_settop(L, 0);
	lua_pushboolean(H, t == LUA_TFUNCTION);
	return 1;
}

/* vm:call(path, ...) -> plain-data copies of the results */
static int m_call(lua_State *H)
{
	vm_t *vm = check_vm(H);
	struct op op = {.kind = OP_CALL, .H = H};
	op.path = luaL_checkstring(H, 2);
	op.argbase = 3;
	op.nargs = lua_gettop(H) - 2;
	return run_op(H, vm, &op);
}

/* vm:stats() -> {memory=, limit=, instructions=} */
static int m_stats(lua_State *H)
{
	vm_t *vm = check_vm(H);
	lua_createtable(H, 0, 3);
	lua_pushinteger(H, (lua_Integer)(vm->used - vm->base));
	lua_setfield(H, -2, "memory");
	lua_pushinteger(H, (lua_Integer)(vm->limit - vm->base));
	lua_setfield(H, -2, "limit");
	lua_pushinteger(H, vm->budget);
	lua_setfield(H, -2, "instructions");
	return 1;
}

static int m_close(lua_State *H)
{
	vm_t *vm = luaL_checkudata(H, 1, VM_MT);
	if (vm->L) {
		vm->exhausted = 1; /* finalizers in the script die at once */
		lua_close(vm->L);
		vm->L = NULL;
	}
	return 0;
}

static int m_tostring(lua_State *H)
{
	vm_t *vm = luaL_checkudata(H, 1, VM_MT);
	lua_pushfstring(H, "foundry.vm (%s%s)", vm->name, vm->L ? "" : ", closed");
	return 1;
}

int luaopen_foundry_vm(lua_State *L)
{
	static const luaL_Reg methods[] = {{"load", m_load},   {"call", m_call},
					   {"has", m_has},     {"stats", m_stats},
					   {"close", m_close}, {NULL, NULL}};
	fdr_new_class(L, VM_MT, methods, m_close, m_tostring);
	static const luaL_Reg fns[] = {{"new", l_new}, {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
