/*
 * shim.h - foundry-shim's internal interface: a small epoll reactor shared by PID 1's
 * signal handling and the proxy bridge, plus the notify command.
 *
 * foundry-shim is static and links libc only: it runs inside images Foundry does not
 * control. Everything is single-threaded and non-blocking on one epoll set.
 */
#ifndef SHIM_H
#define SHIM_H

#include <stdint.h>

#define SHIM_DEFAULT_LISTEN "127.0.0.1:3128"
#define SHIM_DEFAULT_SOCKET "/run/foundry/proxy.sock"
#define SHIM_DEFAULT_TOKEN "/run/foundry/hook-token"

/* A file descriptor on the epoll set; `cb` runs for its events. Embed it first in the
 * owner's struct (or reach the owner with container arithmetic). */
typedef struct shim_watch shim_watch;
struct shim_watch {
	void (*cb)(shim_watch *w, uint32_t events);
	int fd;
};

/* The epoll set (created by shim_loop_init). */
extern int shim_epfd;

void shim_loop_init(void);
/* Add `w` (with w->fd set) for `events`; returns 0 or -1 with errno. */
int shim_watch_add(shim_watch *w, uint32_t events);
int shim_watch_mod(shim_watch *w, uint32_t events);
void shim_watch_del(shim_watch *w);
/* Wait up to `timeout_ms` (-1: forever, bounded by the bridge's timers) and dispatch. */
void shim_loop_once(int timeout_ms);

/* Monotonic milliseconds. */
uint64_t shim_now_ms(void);
/* One line to stderr, prefixed "foundry-shim: ". */
void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* bridge.c: listen on `listen_addr` ("127.0.0.1:3128", "[::1]:3128", "3128") and relay
 * each connection to the Unix socket at `socket_path`, connected afresh per connection.
 * Returns 0, or -1 after logging why. */
int shim_bridge_start(const char *listen_addr, const char *socket_path);
/* Milliseconds until the bridge needs to run again (-1: only on events). */
int shim_bridge_timeout(void);
/* Run after every batch of events: retries, connections with work left, frees. */
void shim_bridge_after(void);

/* notify.c: `foundry-shim notify EVENT` (argv[0] is "notify"). */
int shim_notify(int argc, char **argv);

#endif
