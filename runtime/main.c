/*
 * main.c - `foundry`: run lua/foundry/cli (embedded) as the main task on the loop.
 * The command's return value is the exit status. Everything else is Lua.
 */
#include "host.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	fdr_host *h = fdr_host_new();
	if (!h) {
		fprintf(stderr, "foundry: cannot start: out of memory\n");
		return 70;
	}
	lua_State *L = h->L;
	int status = 70;
	lua_getglobal(L, "require");
	lua_pushstring(L, "foundry.cli");
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		fprintf(stderr, "foundry: cannot load the CLI: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
		goto out;
	}
	lua_getfield(L, -1, "main");
	lua_remove(L, -2);
	lua_createtable(L, argc, 1);
	for (int i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i);
	}
	h->main_task = fdr_task_spawn(L, 1);
	snprintf(h->main_task->name, sizeof h->main_task->name, "main");
	fdr_task *t = h->main_task;
	uv_run(&h->loop, UV_RUN_DEFAULT);
	if (t->state == FDR_DONE) {
		int n = fdr_task_push_result(L, t);
		status = n > 0 && lua_isinteger(L, -n) ? (int)lua_tointeger(L, -n) : 0;
		lua_pop(L, n);
	} else if (t->state == FDR_FAILED) {
		fdr_task_push_result(L, t);
		fprintf(stderr, "foundry: internal error: %s\n", luaL_tolstring(L, -1, NULL));
		lua_pop(L, 2);
	} else {
		fprintf(stderr, "foundry: the command is waiting for %s and nothing is left that "
				"could wake it\n", t->wait ? t->wait->what : "another task");
	}
	lua_pop(L, 1); /* the main task */
out:
	fdr_host_free(h);
	return status;
}
