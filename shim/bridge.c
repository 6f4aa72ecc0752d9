/*
 * bridge.c - inside the container, 127.0.0.1:3128 relays to the sandbox's proxy socket.
 *
 * Each accepted TCP connection gets its own fresh connection to the Unix socket (the
 * daemon may have re-created the socket since the last one), then bytes are spliced both
 * ways through two small buffers. End of stream in one direction becomes shutdown(SHUT_WR)
 * on the other side once the buffer is drained, so half-closed exchanges complete; the
 * pair is closed when both directions have ended or either side fails.
 *
 * Connection fds are edge-triggered: every event pumps both directions until the kernel
 * says EAGAIN. A pump that runs out of budget (a fast stream) goes on the ready list and
 * continues after other connections have had their turn.
 */
#include "shim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BUF_SIZE (32 * 1024)
#define PUMP_BUDGET 16         /* reads per direction before yielding to others */
#define MAX_CONNS 8192
#define RETRY_MS 10            /* a full accept backlog on the daemon's side: retry */
#define RETRY_FOR_MS 2000
#define EMFILE_PAUSE_MS 100

struct dir {
	size_t off, len;       /* pending bytes are buf[off, len) */
	int eof;               /* the source has ended */
	int shut;              /* and the destination was told (SHUT_WR) */
	unsigned char *buf;
};

enum conn_state { CONN_WAITING, CONN_OPEN, CONN_DEAD };

struct end {
	shim_watch w;
	struct conn *c;
};

struct conn {
	struct end client, up;
	struct dir c2u, u2c;
	enum conn_state state;
	uint64_t give_up_at, retry_at;
	int queued;            /* on the ready list */
	struct conn *next;     /* in the waiting, ready or dead list */
};

static struct {
	shim_watch listener;
	struct sockaddr_un sun;
	socklen_t sunlen;
	const char *path;
	int nconns;
	uint64_t paused_until;     /* accept paused after EMFILE */
	uint64_t last_log;
	struct conn *waiting, *ready, *dead;
} B = {.listener.fd = -1};

static void conn_kill(struct conn *c)
{
	if (c->state == CONN_DEAD)
		return;
	if (c->up.w.fd >= 0)
		close(c->up.w.fd);   /* close() also takes it off the epoll set */
	close(c->client.w.fd);
	c->up.w.fd = c->client.w.fd = -1;
	if (c->state == CONN_WAITING) {
		for (struct conn **p = &B.waiting; *p; p = &(*p)->next)
			if (*p == c) {
				*p = c->next;
				break;
			}
	} else if (c->queued) {
		for (struct conn **p = &B.ready; *p; p = &(*p)->next)
			if (*p == c) {
				*p = c->next;
				break;
			}
	}
	c->state = CONN_DEAD;
	/* Freed after the current batch: later events in it may still point here. */
	c->next = B.dead;
	B.dead = c;
	B.nconns--;
}

/* Move bytes from `src` to `dst` through `d` until the kernel blocks.
 * Returns 0 when blocked or finished, 1 when out of budget, -1 on a failure. */
static int pump(int src, int dst, struct dir *d)
{
	int budget = PUMP_BUDGET;
	for (;;) {
		if (d->off < d->len) {
			ssize_t n = send(dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
			}
			d->off += (size_t)n;
			if (d->off == d->len)
				d->off = d->len = 0;
			continue;
		}
		if (d->eof) {
			if (!d->shut) {
				shutdown(dst, SHUT_WR);
				d->shut = 1;
			}
			return 0;
		}
		if (budget-- == 0)
			return 1;
		ssize_t n = recv(src, d->buf, BUF_SIZE, 0);
		if (n == 0) {
			d->eof = 1;
		} else if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		} else {
			d->len = (size_t)n;
		}
	}
}

static void conn_run(struct conn *c)
{
	if (c->state != CONN_OPEN)
		return;
	int a = pump(c->client.w.fd, c->up.w.fd, &c->c2u);
	int b = a < 0 ? -1 : pump(c->up.w.fd, c->client.w.fd, &c->u2c);
	if (a < 0 || b < 0 || (c->c2u.shut && c->u2c.shut)) {
		conn_kill(c);
		return;
	}
	if ((a == 1 || b == 1) && !c->queued) {
		c->queued = 1;
		c->next = B.ready;
		B.ready = c;
	}
}

static void on_conn(shim_watch *w, uint32_t events)
{
	(void)events;
	struct end *e = (struct end *)w;
	conn_run(e->c);
}

static void log_unreachable(int err)
{
	uint64_t now = shim_now_ms();
	if (B.last_log && now - B.last_log < 1000)
		return;
	B.last_log = now;
	shim_log("proxy socket %s: %s; closing the connection (is the foundry daemon running? "
		 "`foundry daemon start` on the host)", B.path, strerror(err));
}

/* 0: connected and open; 1: try again later; -1: failed (logged). */
static int conn_connect(struct conn *c)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_unreachable(errno);
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&B.sun, B.sunlen) < 0) {
		int err = errno;
		close(fd);
		/* EAGAIN: the listener's backlog is full (the daemon is busy). */
		if ((err == EAGAIN || err == EINTR) && shim_now_ms() < c->give_up_at)
			return 1;
		log_unreachable(err);
		return -1;
	}
	c->up.w.fd = fd;
	c->state = CONN_OPEN;
	if (shim_watch_add(&c->up.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0 ||
	    shim_watch_add(&c->client.w, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) < 0) {
		shim_log("epoll_ctl: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static void accept_one(int fd)
{
	if (B.nconns >= MAX_CONNS) {
		close(fd);
		log_unreachable(EMFILE);
		return;
	}
	struct conn *c = calloc(1, sizeof *c + 2 * BUF_SIZE);
	if (!c) {
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->c2u.buf = (unsigned char *)(c + 1);
	c->u2c.buf = c->c2u.buf + BUF_SIZE;
	c->client.c = c->up.c = c;
	c->client.w.cb = c->up.w.cb = on_conn;
	c->client.w.fd = fd;
	c->up.w.fd = -1;
	c->state = CONN_WAITING;
	c->give_up_at = shim_now_ms() + RETRY_FOR_MS;
	B.nconns++;
	int r = conn_connect(c);
	if (r == 1) {
		c->retry_at = shim_now_ms() + RETRY_MS;
		c->next = B.waiting;
		B.waiting = c;
	} else if (r < 0) {
		conn_kill(c);
	} else {
		conn_run(c);
	}
}

static void on_listener(shim_watch *w, uint32_t events)
{
	(void)events;
	for (int i = 0; i < 64; i++) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			accept_one(fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* Level-triggered: without a pause this would spin. */
			shim_log("accept: %s; pausing for %d ms", strerror(errno), EMFILE_PAUSE_MS);
			shim_watch_mod(w, 0);
			B.paused_until = shim_now_ms() + EMFILE_PAUSE_MS;
		}
		return;
	}
}

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64] = "127.0.0.1";
	const char *port = s;
	const char *colon = strrchr(s, ':');
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof host)
			return -1;
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = 0;
		port = end + 2;
	} else if (colon) {
		if ((size_t)(colon - s) >= sizeof host)
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
		port = colon + 1;
	}
	char *endp;
	long p = strtol(port, &endp, 10);
	if (*port == 0 || *endp || p <= 0 || p > 65535)
		return -1;
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)p);
		*len = sizeof *in4;
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		*len = sizeof *in6;
	} else {
		return -1;
	}
	return 0;
}

int shim_bridge_start(const char *listen_addr, const char *socket_path)
{
	size_t plen = strlen(socket_path);
	if (plen == 0 || plen >= sizeof B.sun.sun_path) {
		shim_log("bridge: socket path too long (%zu bytes, at most %zu): %s", plen,
			 sizeof B.sun.sun_path - 1, socket_path);
		return -1;
	}
	B.sun.sun_family = AF_UNIX;
	memcpy(B.sun.sun_path, socket_path, plen + 1);
	B.sunlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
	B.path = socket_path;

	struct sockaddr_storage ss;
	socklen_t sslen;
	if (parse_listen(listen_addr, &ss, &sslen) < 0) {
		shim_log("bridge: bad listen address '%s' (want HOST:PORT, [V6]:PORT or PORT)",
			 listen_addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 1024) < 0) {
		shim_log("bridge: cannot listen on %s: %s", listen_addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	B.listener.fd = fd;
	B.listener.cb = on_listener;
	if (shim_watch_add(&B.listener, EPOLLIN) < 0) {
		shim_log("bridge: epoll_ctl: %s", strerror(errno));
		close(fd);
		B.listener.fd = -1;
		return -1;
	}
	return 0;
}

int shim_bridge_timeout(void)
{
	if (B.ready)
		return 0;
	uint64_t now = shim_now_ms(), next = UINT64_MAX;
	for (struct conn *c = B.waiting; c; c = c->next)
		if (c->retry_at < next)
			next = c->retry_at;
	if (B.paused_until && B.paused_until < next)
		next = B.paused_until;
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)(next - now);
}

void shim_bridge_after(void)
{
	uint64_t now = shim_now_ms();
	if (B.paused_until && now >= B.paused_until) {
		B.paused_until = 0;
		shim_watch_mod(&B.listener, EPOLLIN);
	}
	/* Retry connections whose upstream backlog was full. */
	struct conn *w = B.waiting;
	B.waiting = NULL;
	while (w) {
		struct conn *c = w;
		w = w->next;
		c->next = NULL;
		if (c->retry_at > now) {
			c->next = B.waiting;
			B.waiting = c;
			continue;
		}
		int r = conn_connect(c);
		if (r == 1) {
			c->retry_at = now + RETRY_MS;
			c->next = B.waiting;
			B.waiting = c;
		} else if (r < 0) {
			conn_kill(c);
		} else {
			conn_run(c);
		}
	}
	/* Connections that ran out of budget go on where they stopped. */
	struct conn *r = B.ready;
	B.ready = NULL;
	while (r) {
		struct conn *c = r;
		r = r->next;
		c->queued = 0;
		conn_run(c);
	}
	while (B.dead) {
		struct conn *c = B.dead;
		B.dead = c->next;
		free(c);
	}
}
