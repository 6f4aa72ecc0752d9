/* The embedded Lua library: every module is present and loads as the bytecode it was
 * compiled to (with its debug information: its source name); resources are text. */
#include "ctest.h"
#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <string.h>

extern const struct fdr_embedded {
	const char *name, *chunk;
	const unsigned char *src;
	size_t len;
	int module;
} fdr_embedded[];

static void test_modules_compile(void)
{
	lua_State *L = luaL_newstate();
	int n = 0;
	for (const struct fdr_embedded *e = fdr_embedded; e->name; e++, n++) {
		int rc = luaL_loadbufferx(L, (const char *)e->src, e->len, e->chunk, e->module ? "b" : "t");
		if (rc != LUA_OK)
			fprintf(stderr, "%s: %s\n", e->name, lua_tostring(L, -1));
		CHECK(rc == LUA_OK);
		if (rc == LUA_OK && e->module) {
			lua_Debug ar;
			lua_getinfo(L, ">S", &ar);
			CHECK(strcmp(ar.source, e->chunk) == 0);
		}
		lua_settop(L, 0);
	}
	CHECK(n > 5);
	lua_close(L);
}

static void test_core_modules_present(void)
{
	const char *want[] = {"foundry", "foundry.cli", "foundry.errors", "re", NULL};
	for (int i = 0; want[i]; i++) {
		int found = 0;
		for (const struct fdr_embedded *e = fdr_embedded; e->name; e++)
			found |= e->module && strcmp(e->name, want[i]) == 0;
		CHECK(found);
	}
}

int main(void)
{
	RUN(test_modules_compile);
	RUN(test_core_modules_present);
	return ctest_done();
}
