/*
 * host.c - the Lua host: one lua_State on Foundry's libuv loop, the embedded Lua
 * library, the native modules and luv's callback runner.
 */
#include "host.h"

#include <lualib.h>
#include <luv/luv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

extern int luaopen_lpeg(lua_State *L);
extern int luaopen_cjson(lua_State *L);
extern int luaopen_cjson_safe(lua_State *L);

/* build/embedded.c and build/modules.c, generated */
extern const struct fdr_embedded {
	const char *name, *chunk;
	const unsigned char *src;
	size_t len;
	int module;
} fdr_embedded[];
extern const struct fdr_native {
	const char *name;
	lua_CFunction open;
	const char *plugin, *symbol; /* modules in plugins: lib/foundry/<plugin>.so */
} fdr_native_modules[];

void fdr_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close,
		   lua_CFunction tostring)
{
	if (luaL_newmetatable(L, name)) {
		lua_newtable(L);
		luaL_setfuncs(L, methods, 0);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, close);
		lua_setfield(L, -2, "__close");
		if (tostring) {
			lua_pushcfunction(L, tostring);
			lua_setfield(L, -2, "__tostring");
		}
	}
	lua_pop(L, 1);
}

fdr_host *fdr_host_of(lua_State *L)
{
	return *(fdr_host **)lua_getextraspace(L);
}

uv_loop_t *fdr_host_loop(fdr_host *h)
{
	return &h->loop;
}

lua_State *fdr_host_state(fdr_host *h)
{
	return h->L;
}

int fdr_host_debug(fdr_host *h)
{
	return h->debug;
}

static const struct fdr_embedded *find_embedded(const char *name, int module)
{
	for (const struct fdr_embedded *e = fdr_embedded; e->name; e++)
		if (e->module == module && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* Load `path` from FOUNDRY_LUA_PATH: a directory holding foundry/..., like lua/. */
static int search_dev_path(lua_State *L, const char *dir, const char *name)
{
	char rel[512], path[1024];
	size_t i = 0;
	for (; name[i] && i + 1 < sizeof rel; i++)
		rel[i] = name[i] == '.' ? '/' : name[i];
	rel[i] = 0;
	const char *fmts[] = {"%s/%s.lua", "%s/%s/init.lua"};
	for (int k = 0; k < 2; k++) {
		snprintf(path, sizeof path, fmts[k], dir, rel);
		struct stat st;
		if (stat(path, &st) == 0) {
			if (luaL_loadfilex(L, path, "t") != LUA_OK)
				return lua_error(L);
			lua_pushstring(L, path);
			return 2;
		}
	}
	return 0;
}

/* package.searchers entry: FOUNDRY_LUA_PATH first, then the embedded library. */
static int searcher(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *dev = getenv("FOUNDRY_LUA_PATH");
	if (dev && *dev && strncmp(name, "foundry", 7) == 0) {
		int n = search_dev_path(L, dev, name);
		if (n)
			return n;
	}
	const struct fdr_embedded *e = find_embedded(name, 1);
	if (!e) {
		lua_pushfstring(L, "no embedded module '%s'", name);
		return 1;
	}
	/* embedded modules are bytecode compiled at build time by tools/embed.c; nothing
	 * else is ever loaded as bytecode */
	if (luaL_loadbufferx(L, (const char *)e->src, e->len, e->chunk, "b") != LUA_OK)
		return lua_error(L);
	lua_pushstring(L, e->chunk + 1);
	return 2;
}

/* foundry._host.resource(name) -> source text of an embedded file (presets/x.lua) or nil.
 * With FOUNDRY_LUA_PATH set, the file next to that directory wins (development). */
static int l_resource(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const struct fdr_embedded *e = find_embedded(name, 0);
	if (!e)
		return 0;
	lua_pushlstring(L, (const char *)e->src, e->len);
	return 1;
}

/* foundry._host.resources(prefix) -> sorted list of embedded resource names */
static int l_resources(lua_State *L)
{
	size_t plen;
	const char *prefix = luaL_optlstring(L, 1, "", &plen);
	lua_newtable(L);
	int i = 0;
	for (const struct fdr_embedded *e = fdr_embedded; e->name; e++)
		if (!e->module && strncmp(e->name, prefix, plen) == 0) {
			lua_pushstring(L, e->name);
			lua_rawseti(L, -2, ++i);
		}
	return 1;
}

/* ---- plugins ---- */

/* dlopen lib/foundry/<name>.so: next to the binary in the build tree (build/foundry,
 * build/lib/foundry/), or under PREFIX/lib/foundry when installed; FOUNDRY_PLUGIN_PATH
 * overrides. Handles stay open for the life of the process. */
static void *plugin_open(lua_State *L, const char *name)
{
	static struct {
		char name[32];
		void *handle;
	} cache[8];
	for (size_t i = 0; i < sizeof cache / sizeof cache[0]; i++)
		if (cache[i].handle && strcmp(cache[i].name, name) == 0)
			return cache[i].handle;
	char exe[PATH_MAX], path[PATH_MAX + 64];
	const char *dirs[3] = {getenv("FOUNDRY_PLUGIN_PATH"), NULL, NULL};
	char d1[PATH_MAX + 16], d2[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		snprintf(d1, sizeof d1, "%s/lib/foundry", exe);
		snprintf(d2, sizeof d2, "%s/../lib/foundry", exe);
		dirs[1] = d1;
		dirs[2] = d2;
	}
	const char *err = "not found";
	for (int i = 0; i < 3; i++) {
		if (!dirs[i] || !*dirs[i])
			continue;
		snprintf(path, sizeof path, "%s/%s.so", dirs[i], name);
		if (access(path, R_OK) != 0)
			continue;
		void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			err = dlerror();
			break;
		}
		for (size_t k = 0; k < sizeof cache / sizeof cache[0]; k++)
			if (!cache[k].handle) {
				snprintf(cache[k].name, sizeof cache[k].name, "%s", name);
				cache[k].handle = h;
				break;
			}
		return h;
	}
	fdr_error(L, "plugin", "reinstall Foundry (make install), or set FOUNDRY_PLUGIN_PATH to "
			       "the directory holding it",
		  "cannot load Foundry's %s plugin (%s.so): %s", name, name, err);
	return NULL;
}

/* package.preload entry for a module in a plugin; upvalues: plugin, symbol */
static int plugin_loader(lua_State *L)
{
	const char *plugin = lua_tostring(L, lua_upvalueindex(1));
	const char *symbol = lua_tostring(L, lua_upvalueindex(2));
	void *h = plugin_open(L, plugin);
	lua_CFunction open;
	*(void **)&open = dlsym(h, symbol);
	if (!open)
		return fdr_error(L, "plugin", "reinstall Foundry (make install)",
				 "the %s plugin has no %s", plugin, symbol);
	lua_pushcfunction(L, open);
	lua_pushvalue(L, 1);
	lua_call(L, 1, 1);
	return 1;
}

/* foundry._host.libgit2_version() -> "1.5.1" (loads the git plugin) */
static int l_libgit2_version(lua_State *L)
{
	void *h = plugin_open(L, "git");
	int (*version)(int *, int *, int *);
	*(void **)&version = dlsym(h, "git_libgit2_version");
	if (!version)
		return 0;
	int maj, min, rev;
	version(&maj, &min, &rev);
	lua_pushfstring(L, "%d.%d.%d", maj, min, rev);
	return 1;
}

static int no_walk(lua_State *L)
{
	return luaL_error(L, "uv.walk is not available in Foundry (the loop also holds "
			     "Foundry's own handles): use foundry.tasks()");
}

/* luv, with walk kept for the host's shutdown only. `uv` and `luv` are one instance. */
static int open_luv(lua_State *L)
{
	luaopen_luv(L);
	lua_getfield(L, -1, "walk");
	lua_setfield(L, LUA_REGISTRYINDEX, "foundry.luv_walk");
	lua_pushcfunction(L, no_walk);
	lua_setfield(L, -2, "walk");
	return 1;
}

static int open_uv(lua_State *L)
{
	luaL_requiref(L, "luv", open_luv, 0);
	return 1;
}

/* foundry._host.active_handles() -> libuv handles keeping the loop alive (not ours) */
static int l_active_handles(lua_State *L)
{
	fdr_host *h = fdr_host_of(L);
	unsigned n = h->loop.active_handles;
	if (uv_is_active((uv_handle_t *)&h->idle))
		n--;
	lua_pushinteger(L, n);
	return 1;
}

/* foundry._host.modules(prefix) -> sorted list of embedded Lua module names */
static int l_modules(lua_State *L)
{
	size_t plen;
	const char *prefix = luaL_optlstring(L, 1, "", &plen);
	lua_newtable(L);
	int i = 0;
	for (const struct fdr_embedded *e = fdr_embedded; e->name; e++)
		if (e->module && strncmp(e->name, prefix, plen) == 0) {
			lua_pushstring(L, e->name);
			lua_rawseti(L, -2, ++i);
		}
	return 1;
}

static int open_host(lua_State *L)
{
	static const luaL_Reg fns[] = {{"resource", l_resource}, {"resources", l_resources},
				       {"active_handles", l_active_handles}, {"modules", l_modules},
				       {"libgit2_version", l_libgit2_version},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	lua_pushstring(L, LUA_RELEASE);
	lua_setfield(L, -2, "lua_version");
	lua_pushstring(L, uv_version_string());
	lua_setfield(L, -2, "uv_version");
	lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
	lua_setfield(L, -2, "openssl_version");
	lua_pushstring(L, sqlite3_libversion());
	lua_setfield(L, -2, "sqlite_version");
	return 1;
}

/* luv calls every callback through this: errors are reported, never fatal. */
static int host_pcall(lua_State *L, int nargs, int nresults, int flags)
{
	(void)flags;
	int base = lua_gettop(L) - nargs; /* the function */
	int status = lua_pcall(L, nargs, nresults, 0);
	if (status != LUA_OK) {
		const char *msg = luaL_tolstring(L, -1, NULL);
		fprintf(stderr, "foundry: error in callback: %s\n", msg);
		lua_pop(L, 2);
		return -status;
	}
	return lua_gettop(L) - base + 1;
}

static int error_tostring(lua_State *L)
{
	if (lua_getfield(L, 1, "message") != LUA_TSTRING) {
		lua_pop(L, 1);
		lua_getfield(L, 1, "code");
		lua_pushfstring(L, "error %s", luaL_optstring(L, -1, "(no code)"));
	}
	return 1;
}

fdr_host *fdr_host_new(void)
{
	fdr_host *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	if (uv_loop_init(&h->loop) != 0) {
		free(h);
		return NULL;
	}
	uv_idle_init(&h->loop, &h->idle);
	h->idle.data = h;
	lua_State *L = h->L = luaL_newstate();
	if (!L) {
		uv_close((uv_handle_t *)&h->idle, NULL);
		uv_run(&h->loop, UV_RUN_DEFAULT);
		uv_loop_close(&h->loop);
		free(h);
		return NULL;
	}
	*(fdr_host **)lua_getextraspace(L) = h;
	luaL_openlibs(L);
	luv_set_loop(L, &h->loop);
	luv_set_callback(L, host_pcall);

	luaL_newmetatable(L, "foundry.Error");
	lua_pushcfunction(L, error_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushstring(L, "foundry.Error");
	lua_setfield(L, -2, "__name");
	lua_pop(L, 1);

	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	for (const struct fdr_native *m = fdr_native_modules; m->name; m++) {
		if (m->open) {
			lua_pushcfunction(L, m->open);
		} else {
			lua_pushstring(L, m->plugin);
			lua_pushstring(L, m->symbol);
			lua_pushcclosure(L, plugin_loader, 2);
		}
		lua_setfield(L, -2, m->name);
	}
	static const luaL_Reg builtin[] = {{"luv", open_luv},	 {"uv", open_uv},
					   {"lpeg", luaopen_lpeg},	 {"cjson", luaopen_cjson},
					   {"cjson.safe", luaopen_cjson_safe},
					   {"foundry._host", open_host}, {NULL, NULL}};
	for (const luaL_Reg *r = builtin; r->name; r++) {
		lua_pushcfunction(L, r->func);
		lua_setfield(L, -2, r->name);
	}
	lua_pop(L, 1);

	/* our searcher goes right after package.preload's */
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "searchers");
	for (lua_Integer i = (lua_Integer)luaL_len(L, -1); i >= 2; i--) {
		lua_rawgeti(L, -1, i);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushcfunction(L, searcher);
	lua_rawseti(L, -2, 2);
	lua_pop(L, 2);
	return h;
}

void fdr_host_at_close(fdr_host *h, void (*fn)(void *data), void *data)
{
	struct fdr_at_close *a = realloc(h->at_close, (size_t)(h->nat_close + 1) * sizeof *a);
	if (!a)
		return;
	h->at_close = a;
	a[h->nat_close].fn = fn;
	a[h->nat_close].data = data;
	h->nat_close++;
}

void fdr_host_free(fdr_host *h)
{
	lua_State *L = h->L;
	/* Our own handles first (waits, natives' long-lived handles), run their close
	 * callbacks, then luv's handles through Lua (luv's walk must see only its own), run
	 * the loop dry, close Lua, then the loop: the reverse order is a use-after-free
	 * inside luv. */
	fdr_task_shutdown(h);
	for (int i = h->nat_close - 1; i >= 0; i--)
		h->at_close[i].fn(h->at_close[i].data);
	free(h->at_close);
	uv_close((uv_handle_t *)&h->idle, NULL);
	uv_run(&h->loop, UV_RUN_NOWAIT);
	if (luaL_dostring(L, "local walk = debug.getregistry()['foundry.luv_walk']\n"
			     "if walk then walk(function(h)\n"
			     "  if not h:is_closing() then h:close() end end) end") != LUA_OK) {
		fprintf(stderr, "foundry: shutdown: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	uv_run(&h->loop, UV_RUN_DEFAULT);
	lua_close(L);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	int rc = uv_loop_close(&h->loop);
	if (rc != 0 && getenv("FOUNDRY_DEBUG_HANDLES"))
		fprintf(stderr, "foundry: loop closed with handles open: %s\n", uv_strerror(rc));
	free(h);
}
