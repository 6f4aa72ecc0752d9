/*
 * splice.h - an opaque tunnel between two connected stream sockets that moves bytes in
 * the kernel with splice(2): socket -> pipe -> socket, never through user memory.
 *
 * The caller hands over two file descriptors it owns (a libuv stream's, say) once nothing
 * is queued on them; the tunnel works on duplicates polled on the caller's loop, so the
 * caller's handles stay valid and are closed by the caller as usual. Each direction ends
 * with a half-close (shutdown SHUT_WR) of its destination when its source reaches EOF.
 */
#ifndef PX_SPLICE_H
#define PX_SPLICE_H

#include <stdint.h>
#include <uv.h>

enum px_splice_event {
	PX_SPLICE_PROGRESS, /* bytes moved (see bytes[]) */
	PX_SPLICE_DONE,     /* both directions reached EOF and were drained */
	PX_SPLICE_ERROR,    /* a socket failed (reset, broken pipe); err holds -errno */
};

typedef struct px_splice px_splice;
typedef void (*px_splice_cb)(void *arg, px_splice *sp, enum px_splice_event ev, int err);

struct px_splice {
	uint64_t bytes[2]; /* [0]: a -> b, [1]: b -> a */
};

/* Start moving bytes between a and b. Returns NULL with errno set where splice cannot
 * be used (no pipes, a descriptor that does not poll); the caller keeps copying then. */
px_splice *px_splice_start(uv_loop_t *loop, int a, int b, px_splice_cb cb, void *arg);

/* Stop and free (the memory goes once the loop has let go of the poll handles); no
 * callback runs after this. Safe from inside the callback. */
void px_splice_stop(px_splice *sp);

#endif
