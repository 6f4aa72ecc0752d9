/*
 * splice.c - opaque tunnels moved by the kernel (see splice.h).
 *
 * Each direction owns a pipe. A round reads from the source socket into the pipe and
 * writes from the pipe into the destination socket, both with splice(2), until neither
 * moves a byte; the poll handles then wait for what the directions need: a readable
 * source when its pipe is empty, a writable destination when its pipe holds bytes.
 * Waiting for a readable source only when the pipe is empty keeps a full pipe (which
 * splice reports as EAGAIN, like an empty socket) from spinning the loop.
 */
#include "splice.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define ROUNDS 16              /* per direction per wake-up: the loop stays fair */
#define PIPE_SIZE (256 << 10) /* asked for; the kernel may grant less */

typedef struct {
	int rd, wr;    /* the pipe */
	size_t in;     /* bytes in the pipe */
	size_t cap;    /* the pipe's size */
	int eof;       /* the source ended */
	int shut;      /* the destination was half-closed */
} dir;

typedef struct {
	px_splice pub;
	int fd[2];         /* duplicates of a and b */
	uv_poll_t poll[2];
	int events[2];     /* what each poll handle waits for now */
	int inited[2];
	dir d[2];          /* d[0]: fd[0] -> fd[1]; d[1]: fd[1] -> fd[0] */
	px_splice_cb cb;
	void *arg;
	int stopped;
	int open;          /* poll handles not yet closed */
} sp_t;

static void closefd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void release(sp_t *s)
{
	for (int i = 0; i < 2; i++) {
		closefd(&s->fd[i]);
		closefd(&s->d[i].rd);
		closefd(&s->d[i].wr);
	}
	free(s);
}

static void on_closed(uv_handle_t *h)
{
	sp_t *s = h->data;
	if (--s->open == 0)
		release(s);
}

void px_splice_stop(px_splice *sp)
{
	sp_t *s = (sp_t *)sp;
	if (!s || s->stopped)
		return;
	s->stopped = 1;
	for (int i = 0; i < 2; i++)
		if (s->inited[i]) {
			s->open++;
			uv_close((uv_handle_t *)&s->poll[i], on_closed);
		}
	if (s->open == 0)
		release(s);
}

/* Move what can move in direction i; returns -errno on a socket error. */
static int pump(sp_t *s, int i, int *moved)
{
	dir *d = &s->d[i];
	int src = s->fd[i], dst = s->fd[1 - i];
	for (int round = 0; round < ROUNDS; round++) {
		int progress = 0;
		if (!d->eof && d->in < d->cap) {
			ssize_t n = splice(src, NULL, d->wr, NULL, d->cap - d->in,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->in += (size_t)n;
				progress = 1;
			} else if (n == 0) {
				d->eof = 1;
				progress = 1;
			} else if (errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
		}
		if (d->in > 0) {
			ssize_t n = splice(d->rd, NULL, dst, NULL, d->in,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->in -= (size_t)n;
				s->pub.bytes[i] += (uint64_t)n;
				*moved = 1;
				progress = 1;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
		}
		if (d->eof && d->in == 0 && !d->shut) {
			d->shut = 1;
			if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN)
				return -errno;
		}
		if (!progress)
			break;
	}
	return 0;
}

static void on_poll(uv_poll_t *p, int status, int events);

/* Ask each poll handle for what its socket's directions need. */
static int arm(sp_t *s)
{
	for (int k = 0; k < 2; k++) {
		int want = 0;
		if (!s->d[k].eof && s->d[k].in == 0)
			want |= UV_READABLE;
		if (s->d[1 - k].in > 0)
			want |= UV_WRITABLE;
		if (want == s->events[k])
			continue;
		int r = want ? uv_poll_start(&s->poll[k], want, on_poll) : uv_poll_stop(&s->poll[k]);
		if (r < 0)
			return r;
		s->events[k] = want;
	}
	return 0;
}

static void run(sp_t *s)
{
	int moved = 0, err = 0;
	for (int i = 0; i < 2 && !err; i++)
		err = pump(s, i, &moved);
	if (!err)
		err = arm(s);
	if (moved)
		s->cb(s->arg, &s->pub, PX_SPLICE_PROGRESS, 0);
	if (s->stopped)
		return;
	if (err)
		s->cb(s->arg, &s->pub, PX_SPLICE_ERROR, err);
	else if (s->d[0].shut && s->d[1].shut)
		s->cb(s->arg, &s->pub, PX_SPLICE_DONE, 0);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	sp_t *s = p->data;
	(void)events;
	if (s->stopped)
		return;
	if (status < 0) {
		s->cb(s->arg, &s->pub, PX_SPLICE_ERROR, status);
		return;
	}
	run(s);
}

static int make_pipe(dir *d)
{
	int p[2];
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	d->rd = p[0];
	d->wr = p[1];
	/* Larger pipes mean fewer calls per byte; they count against the user's pipe page
	 * limit (fs.pipe-user-pages-soft), and past it the kernel's default stays. */
	int size = fcntl(d->wr, F_SETPIPE_SZ, PIPE_SIZE);
	if (size < 0)
		size = fcntl(d->wr, F_GETPIPE_SZ);
	d->cap = size > 0 ? (size_t)size : 65536;
	return 0;
}

px_splice *px_splice_start(uv_loop_t *loop, int a, int b, px_splice_cb cb, void *arg)
{
	sp_t *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->cb = cb;
	s->arg = arg;
	s->fd[0] = s->fd[1] = -1;
	for (int i = 0; i < 2; i++)
		s->d[i].rd = s->d[i].wr = -1;
	s->fd[0] = fcntl(a, F_DUPFD_CLOEXEC, 0);
	s->fd[1] = fcntl(b, F_DUPFD_CLOEXEC, 0);
	if (s->fd[0] < 0 || s->fd[1] < 0 || make_pipe(&s->d[0]) < 0 || make_pipe(&s->d[1]) < 0)
		goto fail;
	for (int i = 0; i < 2; i++) {
		if (uv_poll_init(loop, &s->poll[i], s->fd[i]) < 0)
			goto fail;
		s->poll[i].data = s;
		s->inited[i] = 1;
	}
	/* both pipes are empty: wait for readable sockets (bytes that already wait make
	 * the first poll return at once) */
	if (arm(s) == 0)
		return &s->pub;
fail:;
	int e = errno;
	px_splice_stop(&s->pub);
	errno = e ? e : EIO;
	return NULL;
}
