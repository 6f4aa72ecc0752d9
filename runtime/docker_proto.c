/*
 * docker_proto.c - endpoint URLs, header safety and stream demultiplexing for the Docker
 * transport (see docker_proto.h).
 */
#include "docker_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fdr_dk_endpoint_parse(fdr_dk_endpoint *ep, const char *url, int tls, char *err,
			  size_t errlen)
{
	memset(ep, 0, sizeof *ep);
	if (!url || !*url) {
		snprintf(err, errlen, "empty Docker host");
		return -1;
	}
	const char *path = NULL;
	if (strncmp(url, "unix://", 7) == 0)
		path = url + 7;
	else if (url[0] == '/')
		path = url;
	if (path) {
		if (path[0] != '/') {
			snprintf(err, errlen, "%s: a unix socket path must be absolute", url);
			return -1;
		}
		if (strlen(path) >= sizeof ep->path) {
			snprintf(err, errlen, "%s: socket path longer than %zu bytes", url,
				 sizeof ep->path - 1);
			return -1;
		}
		ep->kind = FDR_DK_UNIX;
		strcpy(ep->path, path);
		return 0;
	}
	if (strncmp(url, "tcp://", 6) != 0) {
		const char *colon = strstr(url, "://");
		snprintf(err, errlen, "%s: unsupported scheme '%.*s' (unix:// or tcp://)", url,
			 colon ? (int)(colon - url) : (int)strlen(url), url);
		return -1;
	}
	const char *h = url + 6;
	const char *end = h + strcspn(h, "/?#");
	const char *host = h, *host_end, *port = NULL;
	if (*h == '[') {
		host = h + 1;
		host_end = memchr(host, ']', (size_t)(end - host));
		if (!host_end) {
			snprintf(err, errlen, "%s: unterminated '[' in address", url);
			return -1;
		}
		if (host_end + 1 < end) {
			if (host_end[1] != ':') {
				snprintf(err, errlen, "%s: junk after ']'", url);
				return -1;
			}
			port = host_end + 2;
		}
	} else {
		const char *colon = memchr(h, ':', (size_t)(end - h));
		host_end = colon ? colon : end;
		if (colon)
			port = colon + 1;
	}
	size_t hlen = (size_t)(host_end - host);
	if (hlen == 0 || hlen >= sizeof ep->host) {
		snprintf(err, errlen, "%s: missing or overlong host", url);
		return -1;
	}
	memcpy(ep->host, host, hlen);
	ep->host[hlen] = 0;
	ep->port = tls ? 2376 : 2375;
	if (port) {
		char *stop;
		long p = strtol(port, &stop, 10);
		if (stop == port || stop != end || p < 1 || p > 65535) {
			snprintf(err, errlen, "%s: bad port", url);
			return -1;
		}
		ep->port = (int)p;
	}
	if (*end && strcmp(end, "/") != 0) {
		snprintf(err, errlen, "%s: a path after the address is not supported", url);
		return -1;
	}
	ep->kind = FDR_DK_TCP;
	return 0;
}

int fdr_dk_header_safe(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 0;
	}
	return 1;
}

int fdr_dk_demux_feed(fdr_dk_demux *d, const char *data, size_t len, fdr_dk_emit_fn emit,
		      void *ctx)
{
	while (len > 0) {
		if (d->remaining == 0) {
			size_t take = 8 - (size_t)d->hlen;
			if (take > len)
				take = len;
			memcpy(d->hdr + d->hlen, data, take);
			d->hlen += (int)take;
			data += take;
			len -= take;
			if (d->hlen < 8)
				return 0;
			d->hlen = 0;
			if (d->hdr[0] > 2 || d->hdr[1] || d->hdr[2] || d->hdr[3])
				return -1;
			d->stream = d->hdr[0] == 2 ? 2 : 1;
			d->remaining = (uint32_t)d->hdr[4] << 24 | (uint32_t)d->hdr[5] << 16 |
				       (uint32_t)d->hdr[6] << 8 | (uint32_t)d->hdr[7];
			continue;
		}
		size_t n = len < d->remaining ? len : d->remaining;
		int rc = emit(ctx, d->stream, data, n);
		d->remaining -= (uint32_t)n;
		data += n;
		len -= n;
		if (rc)
			return rc;
	}
	return 0;
}

int fdr_dk_demux_idle(const fdr_dk_demux *d)
{
	return d->hlen == 0 && d->remaining == 0;
}
