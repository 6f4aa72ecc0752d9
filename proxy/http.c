/*
 * http.c - HTTP/1.x message reading on libhttp_parser (see http.h).
 */
#include "http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int lc(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int px_ieq(const char *a, size_t n, const char *b)
{
	size_t i = 0;
	for (; i < n; i++)
		if (!b[i] || lc((unsigned char)a[i]) != lc((unsigned char)b[i]))
			return 0;
	return b[i] == 0;
}

/* ---- output buffers ---- */

static int reserve(px_buf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d)
		return -1;
	b->data = d;
	b->cap = cap;
	return 0;
}

int px_buf_add(px_buf *b, const void *data, size_t n)
{
	if (reserve(b, n + 1) < 0)
		return -1;
	if (n)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = 0;
	return 0;
}

int px_buf_adds(px_buf *b, const char *s)
{
	return px_buf_add(b, s, strlen(s));
}

int px_buf_printf(px_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || reserve(b, (size_t)n + 1) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void px_buf_consume(px_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void px_buf_free(px_buf *b, int wipe)
{
	if (b->data && wipe) {
		volatile char *p = b->data;
		for (size_t i = 0; i < b->cap; i++)
			p[i] = 0;
	}
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* ---- the reader ---- */

static int head_add(px_http *h, const char *at, size_t n)
{
	if (h->len + n + 1 > PX_MAX_HEAD) {
		h->too_big = 1;
		return -1;
	}
	if (h->len + n + 1 > h->cap) {
		size_t cap = h->cap ? h->cap : 1024;
		while (cap < h->len + n + 1)
			cap *= 2;
		char *b = realloc(h->buf, cap);
		if (!b)
			return -1;
		h->buf = b;
		h->cap = cap;
	}
	memcpy(h->buf + h->len, at, n);
	h->len += n;
	return 0;
}

/* Terminate the string being collected so every piece of the head is a C string. */
static int head_end(px_http *h)
{
	if (head_add(h, "", 1) < 0)
		return -1;
	return 0;
}

static px_http *self(http_parser *p)
{
	return (px_http *)p; /* p is the first member */
}

static int on_begin(http_parser *p)
{
	px_http *h = self(p);
	h->len = 0;
	h->nh = 0;
	h->in_value = 0;
	h->url = h->urllen = h->reason = h->reasonlen = 0;
	h->chunked = h->has_length = 0;
	h->length = 0;
	/* offset 0 is an empty string: the default target and reason */
	return head_add(h, "", 1);
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	px_http *h = self(p);
	if (!h->urllen)
		h->url = (uint32_t)h->len;
	h->urllen += (uint32_t)n;
	return head_add(h, at, n);
}

static int on_status(http_parser *p, const char *at, size_t n)
{
	px_http *h = self(p);
	if (!h->reasonlen)
		h->reason = (uint32_t)h->len;
	h->reasonlen += (uint32_t)n;
	return head_add(h, at, n);
}

/* h->in_value: 0 while in the target or reason, 1 in a header name, 2 in a value. */
static int on_field(http_parser *p, const char *at, size_t n)
{
	px_http *h = self(p);
	if (h->in_value != 1) {
		if (head_end(h) < 0) /* the target, reason or previous value */
			return -1;
		if (h->nh == h->hcap) {
			if (h->hcap == PX_MAX_HEADERS) {
				h->too_big = 1;
				return -1;
			}
			int cap = h->hcap ? h->hcap * 2 : 16;
			px_hdr *nhd = realloc(h->h, (size_t)cap * sizeof *nhd);
			if (!nhd)
				return -1;
			h->h = nhd;
			h->hcap = cap;
		}
		px_hdr *hd = &h->h[h->nh++];
		hd->name = (uint32_t)h->len;
		hd->namelen = hd->value = hd->valuelen = 0;
		h->in_value = 1;
	}
	h->h[h->nh - 1].namelen += (uint32_t)n;
	return head_add(h, at, n);
}

static int on_value(http_parser *p, const char *at, size_t n)
{
	px_http *h = self(p);
	if (h->nh == 0)
		return -1;
	px_hdr *hd = &h->h[h->nh - 1];
	if (h->in_value != 2) {
		if (head_end(h) < 0) /* the name */
			return -1;
		hd->value = (uint32_t)h->len;
		h->in_value = 2;
	}
	hd->valuelen += (uint32_t)n;
	return head_add(h, at, n);
}

static int on_headers(http_parser *p)
{
	px_http *h = self(p);
	if (h->in_value == 1) { /* a name with an empty value */
		if (head_end(h) < 0)
			return -1;
		h->h[h->nh - 1].value = (uint32_t)h->len;
	}
	if (head_end(h) < 0)
		return -1;
	h->chunked = (p->flags & F_CHUNKED) != 0;
	h->has_length = (p->flags & F_CONTENTLENGTH) != 0;
	h->length = h->has_length ? p->content_length : 0;
	return h->cb->on_head ? h->cb->on_head(h) : 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	px_http *h = self(p);
	return h->cb->on_body ? h->cb->on_body(h, at, n) : 0;
}

static int on_complete(http_parser *p)
{
	px_http *h = self(p);
	return h->cb->on_done ? h->cb->on_done(h) : 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_begin,
	.on_url = on_url,
	.on_status = on_status,
	.on_header_field = on_field,
	.on_header_value = on_value,
	.on_headers_complete = on_headers,
	.on_body = on_body,
	.on_message_complete = on_complete,
};

void px_http_init(px_http *h, enum http_parser_type type, const px_http_cb *cb, void *data)
{
	memset(h, 0, sizeof *h);
	http_parser_init(&h->p, type);
	h->cb = cb;
	h->data = data;
}

void px_http_free(px_http *h)
{
	free(h->buf);
	free(h->h);
	h->buf = NULL;
	h->h = NULL;
	h->cap = h->len = 0;
	h->nh = h->hcap = 0;
}

size_t px_http_feed(px_http *h, const char *data, size_t n)
{
	if (HTTP_PARSER_ERRNO(&h->p) != HPE_OK && HTTP_PARSER_ERRNO(&h->p) != HPE_PAUSED)
		return 0;
	return http_parser_execute(&h->p, &settings, data, n);
}

const char *px_http_error(const px_http *h)
{
	enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
	if (e == HPE_OK || e == HPE_PAUSED)
		return NULL;
	if (h->too_big)
		return "request head too large";
	return http_errno_description(e);
}

void px_http_pause(px_http *h, int paused)
{
	http_parser_pause(&h->p, paused);
}

int px_http_paused(const px_http *h)
{
	return HTTP_PARSER_ERRNO(&h->p) == HPE_PAUSED;
}

const char *px_http_header(const px_http *h, const char *name, size_t *len)
{
	for (int i = 0; i < h->nh; i++)
		if (px_ieq(h->buf + h->h[i].name, h->h[i].namelen, name)) {
			if (len)
				*len = h->h[i].valuelen;
			return h->buf + h->h[i].value;
		}
	return NULL;
}

int px_http_header_has_token(const px_http *h, const char *name, const char *tok)
{
	size_t tl = strlen(tok);
	for (int i = 0; i < h->nh; i++) {
		if (!px_ieq(h->buf + h->h[i].name, h->h[i].namelen, name))
			continue;
		const char *v = h->buf + h->h[i].value, *end = v + h->h[i].valuelen;
		while (v < end) {
			while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
				v++;
			const char *s = v;
			while (v < end && *v != ',')
				v++;
			const char *e = v;
			while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if ((size_t)(e - s) == tl && px_ieq(s, tl, tok))
				return 1;
		}
	}
	return 0;
}

int px_url_split(const char *t, size_t n, int is_connect, px_url *u)
{
	memset(u, 0, sizeof *u);
	if (n == 0)
		return -1;
	if (!is_connect && t[0] == '/') {
		const char *q = memchr(t, '?', n);
		u->path = t;
		u->pathlen = q ? (size_t)(q - t) : n;
		if (q) {
			u->query = q + 1;
			u->querylen = n - u->pathlen - 1;
		}
		const char *hash = u->query ? memchr(u->query, '#', u->querylen) : NULL;
		if (hash)
			u->querylen = (size_t)(hash - u->query);
		return 0;
	}
	struct http_parser_url pu;
	http_parser_url_init(&pu);
	if (n > 65535 || http_parser_parse_url(t, n, is_connect, &pu) != 0)
		return -1;
	if (pu.field_set & (1 << UF_USERINFO))
		return -1;
	if (!(pu.field_set & (1 << UF_HOST)))
		return -1;
	u->host = t + pu.field_data[UF_HOST].off;
	u->hostlen = pu.field_data[UF_HOST].len;
	/* keep IPv6 brackets so the host reads as an address literal */
	if (u->host > t && u->host[-1] == '[' && u->host + u->hostlen < t + n &&
	    u->host[u->hostlen] == ']') {
		u->host--;
		u->hostlen += 2;
	}
	if (pu.field_set & (1 << UF_PORT)) {
		u->port = pu.port;
		if (u->port == 0)
			return -1;
	}
	if (is_connect)
		return u->port ? 0 : -1;
	if (!(pu.field_set & (1 << UF_SCHEMA)))
		return -1;
	u->absolute = 1;
	u->scheme = t + pu.field_data[UF_SCHEMA].off;
	u->schemelen = pu.field_data[UF_SCHEMA].len;
	if (pu.field_set & (1 << UF_PATH)) {
		u->path = t + pu.field_data[UF_PATH].off;
		u->pathlen = pu.field_data[UF_PATH].len;
	} else {
		u->path = "/";
		u->pathlen = 1;
	}
	if (pu.field_set & (1 << UF_QUERY)) {
		u->query = t + pu.field_data[UF_QUERY].off;
		u->querylen = pu.field_data[UF_QUERY].len;
	}
	return 0;
}
