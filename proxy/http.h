/*
 * http.h - HTTP/1.x messages for the proxy on top of libhttp_parser: a reader that
 * collects one message head at a time (method or status, target, headers) in its own
 * buffer and streams bodies through callbacks; a growable output buffer; URL splitting.
 */
#ifndef PX_HTTP_H
#define PX_HTTP_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#define PX_MAX_HEADERS 128
#define PX_MAX_HEAD (64 * 1024)

typedef struct {
	uint32_t name, namelen, value, valuelen; /* offsets into px_http.buf */
} px_hdr;

typedef struct px_http px_http;

typedef struct {
	/* The head is complete. Return 0 to go on, 1 to read no body (a response to HEAD),
	 * or -1 to fail the message. Pause with px_http_pause() to stop feeding here. */
	int (*on_head)(px_http *h);
	/* Body bytes, de-chunked. Return 0, or -1 to fail. */
	int (*on_body)(px_http *h, const char *data, size_t n);
	/* The message is complete. Return 0, or -1 to fail. */
	int (*on_done)(px_http *h);
} px_http_cb;

struct px_http {
	http_parser p;
	const px_http_cb *cb;
	void *data;              /* the owner's */
	char *buf;               /* the current head: target, reason, names, values */
	size_t len, cap;
	uint32_t url, urllen;
	uint32_t reason, reasonlen;
	px_hdr *h;               /* grown as needed, up to PX_MAX_HEADERS */
	int nh, hcap;
	int in_value;
	int too_big;
	int chunked;             /* the current message's body is chunked */
	int has_length;          /* it has a Content-Length */
	uint64_t length;
};

/* type: HTTP_REQUEST or HTTP_RESPONSE. Free the buffer with px_http_free. */
void px_http_init(px_http *h, enum http_parser_type type, const px_http_cb *cb, void *data);
void px_http_free(px_http *h);
/* Feed bytes; returns how many were consumed. Fewer than n when paused, after an
 * upgrade (CONNECT, 101: the rest belongs to the new protocol) or on error. n == 0 tells
 * the parser the peer closed (ends a body delimited by the connection's end). */
size_t px_http_feed(px_http *h, const char *data, size_t n);
/* 0, or a short reason why the input is not acceptable HTTP. */
const char *px_http_error(const px_http *h);
void px_http_pause(px_http *h, int paused);
int px_http_paused(const px_http *h);

/* The head, valid until the next message begins. */
static inline const char *px_http_str(const px_http *h, uint32_t off)
{
	return h->buf + off;
}
/* First header named `name` (any case): its value and length, or NULL. */
const char *px_http_header(const px_http *h, const char *name, size_t *len);
/* Does the comma-separated header `name` contain the token `tok` (any case)? */
int px_http_header_has_token(const px_http *h, const char *name, const char *tok);

/* A growable byte buffer. */
typedef struct {
	char *data;
	size_t len, cap;
} px_buf;
int px_buf_add(px_buf *b, const void *data, size_t n);
int px_buf_adds(px_buf *b, const char *s);
int px_buf_printf(px_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_buf_consume(px_buf *b, size_t n);
/* Free; wipe first when the buffer may have held a secret. */
void px_buf_free(px_buf *b, int wipe);

/* A request target split up. Pointers point into the target. */
typedef struct {
	const char *scheme, *host, *path, *query;
	size_t schemelen, hostlen, pathlen, querylen;
	int port;            /* 0 when absent */
	int absolute;        /* scheme://host form */
} px_url;
/* Split an absolute-form or origin-form target (is_connect: an authority host:port).
 * Returns 0 or -1. Userinfo is refused. */
int px_url_split(const char *t, size_t n, int is_connect, px_url *u);

/* Case-insensitive comparison of a counted string with a C string. */
int px_ieq(const char *a, size_t n, const char *b);

#endif
