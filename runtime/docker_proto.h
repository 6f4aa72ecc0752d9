/*
 * docker_proto.h - the pure parts of the Docker transport (no I/O, no Lua): endpoint
 * URLs, header safety and the stdout/stderr stream multiplexing. Used by docker.c and
 * unit-tested by tests/c/test_docker_proto.c.
 */
#ifndef FDR_DOCKER_PROTO_H
#define FDR_DOCKER_PROTO_H

#include <stddef.h>
#include <stdint.h>

enum fdr_dk_kind { FDR_DK_UNIX = 1, FDR_DK_TCP = 2 };

typedef struct {
	enum fdr_dk_kind kind;
	char path[108];   /* FDR_DK_UNIX: the socket path (sun_path's size) */
	char host[256];   /* FDR_DK_TCP: host name or address, without brackets */
	int port;         /* FDR_DK_TCP */
} fdr_dk_endpoint;

/* Parse a DOCKER_HOST value: unix:///path, tcp://host[:port] (port 2375 by default, 2376
 * when `tls`), or a bare /path. Returns 0, or -1 with a one-line reason in err. */
int fdr_dk_endpoint_parse(fdr_dk_endpoint *ep, const char *url, int tls, char *err,
			  size_t errlen);

/* 1 when s (len bytes) may go into a request line or header as is: no control
 * characters (CR, LF, NUL...), so callers cannot inject headers or requests. */
int fdr_dk_header_safe(const char *s, size_t len);

/* The engine's multiplexed stream (non-TTY attach, exec and logs): frames of an 8-byte
 * header {stream, 0, 0, 0, size (big-endian uint32)} then `size` bytes. */
typedef struct {
	uint8_t hdr[8];
	int hlen;            /* header bytes collected so far */
	uint32_t remaining;  /* payload bytes left in the current frame */
	int stream;          /* 0 stdin, 1 stdout, 2 stderr (of the current frame) */
} fdr_dk_demux;

/* Called with consecutive pieces of frames' payloads; stream is 1 or 2 (0 is passed
 * through as 1). Return non-zero to stop. */
typedef int (*fdr_dk_emit_fn)(void *ctx, int stream, const char *data, size_t len);

/* Feed len bytes; calls emit for each payload piece. Returns 0, the emit's non-zero
 * value, or -1 when a header names an unknown stream (not a multiplexed stream). */
int fdr_dk_demux_feed(fdr_dk_demux *d, const char *data, size_t len, fdr_dk_emit_fn emit,
		      void *ctx);

/* 1 when the demuxer stopped between frames (a clean end of stream). */
int fdr_dk_demux_idle(const fdr_dk_demux *d);

#endif
