/* libFuzzer target: the proxy's HTTP reader (proxy/http.c on libhttp_parser) and request
 * target splitting. The input is fed in pieces at byte-chosen split points, as a socket
 * would deliver it, with pauses resumed the way the engine resumes them. */
#include "http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int on_head(px_http *h)
{
	/* what the engine reads from every head */
	size_t n;
	(void)px_http_header(h, "host", &n);
	(void)px_http_header_has_token(h, "connection", "upgrade");
	px_url u;
	(void)px_url_split(px_http_str(h, h->url), h->urllen, h->p.method == HTTP_CONNECT, &u);
	for (int i = 0; i < h->nh; i++) {
		const char *name = px_http_str(h, h->h[i].name);
		const char *value = px_http_str(h, h->h[i].value);
		if (strlen(name) != h->h[i].namelen || strlen(value) > h->h[i].valuelen)
			abort();
	}
	px_http_pause(h, 1);
	return 0;
}

static int on_body(px_http *h, const char *d, size_t n)
{
	(void)h;
	volatile char sink = 0;
	for (size_t i = 0; i < n; i++)
		sink ^= d[i];
	return 0;
}

static int on_done(px_http *h)
{
	px_http_pause(h, 1);
	return 0;
}

static const px_http_cb cb = {on_head, on_body, on_done};

static void run(enum http_parser_type type, const uint8_t *data, size_t size)
{
	if (size < 1)
		return;
	size_t step = data[0] % 64 + 1;
	data++;
	size--;
	px_http h;
	px_http_init(&h, type, &cb, NULL);
	size_t off = 0;
	int guard = 0;
	while (off < size && guard++ < 100000) {
		size_t n = size - off < step ? size - off : step;
		size_t used = px_http_feed(&h, (const char *)data + off, n);
		if (used > n)
			abort();
		off += used;
		if (px_http_error(&h) || h.p.upgrade)
			break;
		if (px_http_paused(&h))
			px_http_pause(&h, 0);
		else if (used < n)
			break;
	}
	px_http_free(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(HTTP_REQUEST, data, size);
	run(HTTP_RESPONSE, data, size);
	px_url u;
	(void)px_url_split((const char *)data, size, 0, &u);
	(void)px_url_split((const char *)data, size, 1, &u);
	return 0;
}
