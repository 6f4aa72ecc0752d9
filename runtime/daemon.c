/*
 * daemon.c - what `foundry daemon` needs from the system and luv does not offer
 * (module foundry._daemon, wrapped by lua/foundry/daemon.lua):
 *
 *   lock(path) -> Lock | false, holder
 *       an exclusive flock on `path` (created 0600), held until Lock:close() or exit.
 *       The kernel drops it when the process dies, so a daemon killed with -9 never
 *       leaves a stale lock. false plus the pid written in the file when another
 *       process holds it.
 *   Lock:write_pid() records this process's pid in the lock file.
 *   peer_uid(fd) -> uid, pid of the process at the other end of a Unix socket
 *   set_dumpable(flag) -> true | false, errno text    (prctl PR_SET_DUMPABLE)
 *
 * All synchronous: they are single system calls on local files.
 */
#include "fdr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOCK_MT "foundry.daemon.Lock"

typedef struct {
	int fd;
} daemon_lock;

static int read_holder(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return atoi(buf);
}

static int l_lock(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return fdr_error(L, "daemon.lock", "check the permissions of the runtime directory",
				 "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		if (e == EWOULDBLOCK) {
			int holder = read_holder(fd);
			close(fd);
			lua_pushboolean(L, 0);
			lua_pushinteger(L, holder);
			return 2;
		}
		close(fd);
		return fdr_error(L, "daemon.lock", NULL, "cannot lock %s: %s", path, strerror(e));
	}
	daemon_lock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
	lk->fd = fd;
	luaL_setmetatable(L, LOCK_MT);
	return 1;
}

static daemon_lock *check_lock(lua_State *L)
{
	return luaL_checkudata(L, 1, LOCK_MT);
}

static int lock_write_pid(lua_State *L)
{
	daemon_lock *lk = check_lock(L);
	if (lk->fd < 0)
		return luaL_error(L, "lock: already released");
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
	if (ftruncate(lk->fd, 0) < 0 || pwrite(lk->fd, buf, (size_t)n, 0) != n)
		return fdr_error(L, "daemon.lock", NULL, "cannot write the lock file: %s",
				 strerror(errno));
	return 0;
}

static int lock_close(lua_State *L)
{
	daemon_lock *lk = check_lock(L);
	if (lk->fd >= 0) {
		close(lk->fd); /* releases the flock */
		lk->fd = -1;
	}
	return 0;
}

static int lock_tostring(lua_State *L)
{
	daemon_lock *lk = check_lock(L);
	lua_pushfstring(L, "foundry.daemon.Lock (%s)", lk->fd >= 0 ? "held" : "released");
	return 1;
}

static int l_peer_uid(lua_State *L)
{
	int fd = (int)luaL_checkinteger(L, 1);
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return fdr_error(L, "daemon.peer", NULL, "SO_PEERCRED: %s", strerror(errno));
	lua_pushinteger(L, cred.uid);
	lua_pushinteger(L, cred.pid);
	return 2;
}

static int l_set_dumpable(lua_State *L)
{
	int flag = lua_toboolean(L, 1);
	if (prctl(PR_SET_DUMPABLE, flag ? 1 : 0, 0, 0, 0) < 0) {
		lua_pushboolean(L, 0);
		lua_pushstring(L, strerror(errno));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_is_dumpable(lua_State *L)
{
	lua_pushboolean(L, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1);
	return 1;
}

int luaopen_foundry_daemon(lua_State *L)
{
	static const luaL_Reg lock_methods[] = {{"write_pid", lock_write_pid},
						{"close", lock_close},
						{NULL, NULL}};
	fdr_new_class(L, LOCK_MT, lock_methods, lock_close, lock_tostring);

	static const luaL_Reg fns[] = {{"lock", l_lock},
				       {"peer_uid", l_peer_uid},
				       {"set_dumpable", l_set_dumpable},
				       {"is_dumpable", l_is_dumpable},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
