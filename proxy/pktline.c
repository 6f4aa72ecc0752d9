/*
 * pktline.c - git's pkt-line messages for the proxy (module foundry._pktline, wrapped by
 * lua/foundry/pktline.lua). See pktline.h for the C interface.
 *
 * Lua:
 *   parse_push(body) -> {commands={{old=, new=, ref=}...}, capabilities=, shallow={},
 *                        options={}, pack_offset=, pack_bytes=, hexsz=}
 *   parse_advertisement(body) -> {service=, version=, refs={{id=, name=}...},
 *                                 capabilities=, shallow={}, hexsz=}
 *   build_advertisement{service=, refs=, capabilities=, shallow=, hexsz=} -> body
 *   parse_upload(body) -> {wants={...}, haves=, capabilities=, done=}
 *   report_status{unpack=, refs={{ref=, reason=}...}, messages={...}, sideband=} -> body
 *                 (sideband: 0, 1000 for side-band, 65520 for side-band-64k)
 *   error_packet(msg) -> body; pkt(data) -> packet; ref_valid(name); caps_has(caps, name)
 * Parsers raise {code="git.malformed"} for anything git would not send.
 */
#include "pktline.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ framing */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int px_pkt_read(const char *buf, size_t len, size_t *off, px_pkt *p)
{
	if (*off >= len)
		return 0;
	if (len - *off < 4)
		return -1;
	size_t n = 0;
	for (int i = 0; i < 4; i++) {
		int v = hexval(buf[*off + i]);
		if (v < 0)
			return -1;
		n = n * 16 + (size_t)v;
	}
	if (n < 4) {
		if (n == 3)
			return -1;
		p->kind = n == 0 ? PX_PKT_FLUSH : n == 1 ? PX_PKT_DELIM : PX_PKT_END;
		p->data = NULL;
		p->len = 0;
		*off += 4;
		return 1;
	}
	if (n > PX_PKT_MAX || n > len - *off)
		return -1;
	p->kind = PX_PKT_DATA;
	p->data = buf + *off + 4;
	p->len = n - 4;
	*off += n;
	return 1;
}

void px_pkt_buf_free(px_pkt_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int buf_reserve(px_pkt_buf *b, size_t n)
{
	if (b->cap - b->len >= n)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len < n) {
		if (cap > ((size_t)1 << 40))
			return -1;
		cap *= 2;
	}
	char *d = realloc(b->data, cap);
	if (!d)
		return -1;
	b->data = d;
	b->cap = cap;
	return 0;
}

static int buf_add(px_pkt_buf *b, const void *data, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -1;
	if (n)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	return 0;
}

static int put_len(px_pkt_buf *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char h[4] = {digits[(n >> 12) & 15], digits[(n >> 8) & 15], digits[(n >> 4) & 15],
		     digits[n & 15]};
	return buf_add(b, h, 4);
}

int px_pkt_write(px_pkt_buf *b, const void *data, size_t n)
{
	if (n > PX_PKT_DATA_MAX || buf_reserve(b, n + 4) < 0)
		return -1;
	put_len(b, n + 4);
	return buf_add(b, data, n);
}

int px_pkt_writef(px_pkt_buf *b, const char *fmt, ...)
{
	char tmp[PX_PKT_DATA_MAX + 1];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > PX_PKT_DATA_MAX)
		return -1;
	return px_pkt_write(b, tmp, (size_t)n);
}

int px_pkt_flush(px_pkt_buf *b)
{
	return buf_add(b, "0000", 4);
}

int px_pkt_sideband(px_pkt_buf *b, int band, const void *data, size_t n, size_t pktmax)
{
	if (band < 1 || band > 3 || pktmax < 6 || pktmax > PX_PKT_MAX)
		return -1;
	const char *p = data;
	size_t chunk = pktmax - 5;
	do {
		size_t k = n < chunk ? n : chunk;
		if (buf_reserve(b, k + 5) < 0)
			return -1;
		put_len(b, k + 5);
		char c = (char)band;
		buf_add(b, &c, 1);
		buf_add(b, p, k);
		p += k;
		n -= k;
	} while (n > 0);
	return 0;
}

/* Copy `msg` for a one-line packet: control characters become spaces, and it is cut to
 * `max` bytes. */
static void one_line(char *out, size_t cap, const char *msg)
{
	size_t i = 0;
	for (; msg && msg[i] && i + 1 < cap; i++) {
		unsigned char c = (unsigned char)msg[i];
		out[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	out[i] = 0;
}

int px_pkt_error(px_pkt_buf *b, const char *msg)
{
	char line[1024];
	one_line(line, sizeof line, msg);
	return px_pkt_writef(b, "ERR %s\n", line);
}

int px_caps_has(const char *caps, const char *name)
{
	if (!caps || !name || !*name)
		return 0;
	size_t nl = strlen(name);
	const char *p = caps;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ' ')
			e++;
		size_t wl = (size_t)(e - p);
		if (wl >= nl && !memcmp(p, name, nl) && (wl == nl || p[nl] == '='))
			return 1;
		p = e;
	}
	return 0;
}

/* ------------------------------------------------------------------ names and ids */

int px_ref_valid(const char *s, size_t n)
{
	if (n < 6 || n > 1024 || memcmp(s, "refs/", 5) != 0)
		return 0;
	if (s[n - 1] == '/' || s[n - 1] == '.')
		return 0;
	size_t comp = 0; /* start of the current component */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == ' ' || c == '~' || c == '^' || c == ':' ||
		    c == '?' || c == '*' || c == '[' || c == '\\')
			return 0;
		if (c == '.' && i + 1 < n && s[i + 1] == '.')
			return 0;
		if (c == '@' && i + 1 < n && s[i + 1] == '{')
			return 0;
		if (c == '/' || i + 1 == n) {
			size_t end = c == '/' ? i : i + 1;
			size_t cl = end - comp;
			if (cl == 0 || s[comp] == '.')
				return 0;
			if (cl >= 5 && !memcmp(s + end - 5, ".lock", 5))
				return 0;
			comp = i + 1;
		}
	}
	return 1;
}

/* A lowercase hex object id of exactly `hexsz` digits at s (n bytes available). */
static int is_id(const char *s, size_t n, int hexsz)
{
	if (n < (size_t)hexsz)
		return 0;
	for (int i = 0; i < hexsz; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static int hexsz_of(const char *caps)
{
	if (!caps)
		return 40;
	const char *p = strstr(caps, "object-format=");
	if (p && (p == caps || p[-1] == ' ') && !strncmp(p + 14, "sha256", 6) &&
	    (p[20] == 0 || p[20] == ' '))
		return 64;
	return 40;
}

static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, PX_PKT_ERRLEN, fmt, ap);
	va_end(ap);
	return -1;
}

/* A data packet's payload without its trailing LF. */
static size_t chomp(const px_pkt *p)
{
	return p->len && p->data[p->len - 1] == '\n' ? p->len - 1 : p->len;
}

static int push_str(char ***v, int *n, const char *s, size_t len)
{
	char **nv = realloc(*v, sizeof **v * (size_t)(*n + 1));
	if (!nv)
		return -1;
	*v = nv;
	if (!(nv[*n] = dupn(s, len)))
		return -1;
	(*n)++;
	return 0;
}

static void free_strv(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ------------------------------------------------------------------ receive-pack request */

void px_push_req_free(px_push_req *r)
{
	for (int i = 0; i < r->ncmds; i++)
		free(r->cmds[i].ref);
	free(r->cmds);
	free(r->caps);
	free_strv(r->shallow, r->nshallow);
	free_strv(r->options, r->noptions);
	r->cmds = NULL;
	r->caps = NULL;
	r->shallow = r->options = NULL;
	r->ncmds = r->nshallow = r->noptions = 0;
}

static int parse_cmd(px_push_req *r, const char *line, size_t n)
{
	const char *nul = memchr(line, 0, n);
	size_t cl = nul ? (size_t)(nul - line) : n;
	if (nul && r->ncmds > 0)
		return fail(r->err, "capabilities after the first command");
	if (r->ncmds == 0) {
		if (nul && !(r->caps = dupn(nul + 1, n - cl - 1)))
			return fail(r->err, "out of memory");
		/* The first id's length says the hash, and must agree with object-format. */
		const char *sp = memchr(line, ' ', cl);
		int want = hexsz_of(r->caps);
		if (!sp || (size_t)(sp - line) != (size_t)want)
			return fail(r->err, "a command's old id is not a %d-digit hex id", want);
		r->hexsz = want;
	}
	int h = r->hexsz;
	if (cl < (size_t)(2 * h + 3) || !is_id(line, cl, h) || line[h] != ' ' ||
	    !is_id(line + h + 1, cl - (size_t)h - 1, h) || line[2 * h + 1] != ' ')
		return fail(r->err, "a command is not '<old-id> <new-id> <ref>'");
	const char *ref = line + 2 * h + 2;
	size_t rl = cl - (size_t)(2 * h + 2);
	if (!px_ref_valid(ref, rl))
		return fail(r->err, "'%.*s' is not a valid ref name", (int)(rl > 100 ? 100 : rl), ref);
	for (int i = 0; i < r->ncmds; i++)
		if (strlen(r->cmds[i].ref) == rl && !memcmp(r->cmds[i].ref, ref, rl))
			return fail(r->err, "the push names %.*s twice", (int)(rl > 100 ? 100 : rl), ref);
	px_push_cmd *nc = realloc(r->cmds, sizeof *nc * (size_t)(r->ncmds + 1));
	if (!nc)
		return fail(r->err, "out of memory");
	r->cmds = nc;
	px_push_cmd *c = &nc[r->ncmds];
	memcpy(c->old_id, line, (size_t)h);
	c->old_id[h] = 0;
	memcpy(c->new_id, line + h + 1, (size_t)h);
	c->new_id[h] = 0;
	if (!(c->ref = dupn(ref, rl)))
		return fail(r->err, "out of memory");
	r->ncmds++;
	return 0;
}

static int is_zero(const char *id)
{
	for (; *id; id++)
		if (*id != '0')
			return 0;
	return 1;
}

static int push_parse(const char *body, size_t len, px_push_req *r)
{
	size_t off = 0;
	px_pkt p;
	for (;;) {
		int rc = px_pkt_read(body, len, &off, &p);
		if (rc == 0)
			return fail(r->err, "the push ends before its command list does");
		if (rc < 0)
			return fail(r->err, "a malformed pkt-line in the command list");
		if (p.kind == PX_PKT_FLUSH)
			break;
		if (p.kind != PX_PKT_DATA)
			return fail(r->err, "an unexpected special packet in the command list");
		size_t n = chomp(&p);
		if (n >= 9 && !memcmp(p.data, "push-cert", 9))
			return fail(r->err, "signed pushes (push-cert) are not supported");
		if (n >= 8 && !memcmp(p.data, "shallow ", 8)) {
			if (r->ncmds > 0)
				return fail(r->err, "a shallow line after the commands");
			int h = n - 8 == 64 ? 64 : 40;
			if (n - 8 != (size_t)h || !is_id(p.data + 8, n - 8, h))
				return fail(r->err, "a shallow line without a valid id");
			if (push_str(&r->shallow, &r->nshallow, p.data + 8, n - 8) < 0)
				return fail(r->err, "out of memory");
			continue;
		}
		if (parse_cmd(r, p.data, n) < 0)
			return -1;
	}
	if (r->ncmds == 0)
		return fail(r->err, "a push without commands");
	if (px_caps_has(r->caps, "push-options")) {
		for (;;) {
			int rc = px_pkt_read(body, len, &off, &p);
			if (rc <= 0)
				return fail(r->err, "malformed push options");
			if (p.kind == PX_PKT_FLUSH)
				break;
			if (p.kind != PX_PKT_DATA)
				return fail(r->err, "an unexpected special packet in the push options");
			size_t n = chomp(&p);
			if (memchr(p.data, 0, n))
				return fail(r->err, "a push option with a NUL byte");
			if (push_str(&r->options, &r->noptions, p.data, n) < 0)
				return fail(r->err, "out of memory");
		}
	}
	r->pack_offset = off;
	int updates = 0;
	for (int i = 0; i < r->ncmds; i++)
		updates += !is_zero(r->cmds[i].new_id);
	if (updates) {
		/* "PACK", version 2 or 3, object count */
		if (len - off < 12 || memcmp(body + off, "PACK", 4) != 0 || body[off + 4] != 0 ||
		    body[off + 5] != 0 || body[off + 6] != 0 || (body[off + 7] != 2 && body[off + 7] != 3))
			return fail(r->err, "the push's packfile is missing or malformed");
	} else if (off != len) {
		return fail(r->err, "data after the commands of a push that only deletes");
	}
	return 0;
}

int px_push_parse(const char *body, size_t len, px_push_req *r)
{
	memset(r, 0, sizeof *r);
	r->hexsz = 40;
	if (push_parse(body, len, r) < 0) {
		char err[PX_PKT_ERRLEN];
		memcpy(err, r->err, sizeof err);
		px_push_req_free(r);
		memcpy(r->err, err, sizeof err);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ advertisement */

void px_advert_free(px_advert *a)
{
	for (int i = 0; i < a->nrefs; i++)
		free(a->refs[i].name);
	free(a->refs);
	free(a->service);
	free(a->caps);
	free_strv(a->shallow, a->nshallow);
	a->refs = NULL;
	a->service = a->caps = NULL;
	a->shallow = NULL;
	a->nrefs = a->nshallow = 0;
}

static int advert_name_valid(const char *s, size_t n)
{
	if (n == 4 && !memcmp(s, "HEAD", 4))
		return 1;
	if (n > 3 && !memcmp(s + n - 3, "^{}", 3))
		n -= 3;
	return px_ref_valid(s, n);
}

static int advert_parse(const char *body, size_t len, px_advert *a)
{
	size_t off = 0;
	px_pkt p;
	int rc = px_pkt_read(body, len, &off, &p);
	if (rc <= 0)
		return fail(a->err, "an empty or malformed ref advertisement");
	if (p.kind == PX_PKT_DATA && chomp(&p) > 10 && !memcmp(p.data, "# service=", 10)) {
		size_t n = chomp(&p);
		if (!(a->service = dupn(p.data + 10, n - 10)) || strlen(a->service) != n - 10)
			return fail(a->err, "a malformed service line");
		/* git-http-backend (and GitHub) follow it with a flush */
		if (px_pkt_read(body, len, &off, &p) <= 0 || p.kind != PX_PKT_FLUSH)
			return fail(a->err, "no flush after the service line");
		if ((rc = px_pkt_read(body, len, &off, &p)) <= 0)
			return fail(a->err, "the ref advertisement ends after its service line");
	}
	int started = 0; /* a ref or shallow line was read */
	for (;;) {
		if (p.kind == PX_PKT_FLUSH)
			break;
		if (p.kind != PX_PKT_DATA)
			return fail(a->err, "an unexpected special packet in the ref advertisement");
		size_t n = chomp(&p);
		const char *line = p.data;
		int h = a->hexsz ? a->hexsz : 40;
		if (!started && !a->version && n >= 7 && !memcmp(line, "version", 7)) {
			if (n != 9 || memcmp(line, "version 1", 9) != 0)
				return fail(a->err, "the server answered with protocol '%.*s'; the proxy speaks v0",
					    (int)(n > 20 ? 20 : n), line);
			a->version = 1;
		} else if (!started && n >= 4 && !memcmp(line, "ERR ", 4)) {
			return fail(a->err, "the server refused: %.*s", (int)(n > 124 ? 120 : n - 4), line + 4);
		} else if (n >= 8 && !memcmp(line, "shallow ", 8)) {
			started = 1;
			if (n - 8 != (size_t)h || !is_id(line + 8, n - 8, h))
				return fail(a->err, "a shallow line without a valid id");
			if (push_str(&a->shallow, &a->nshallow, line + 8, n - 8) < 0)
				return fail(a->err, "out of memory");
		} else {
			if (a->nshallow)
				return fail(a->err, "a ref after the shallow lines");
			const char *nul = memchr(line, 0, n);
			size_t cl = nul ? (size_t)(nul - line) : n;
			if (nul && started)
				return fail(a->err, "capabilities after the first ref");
			if (!started) {
				if (!nul)
					return fail(a->err, "the first ref has no capabilities");
				if (!(a->caps = dupn(nul + 1, n - cl - 1)))
					return fail(a->err, "out of memory");
				a->hexsz = h = hexsz_of(a->caps);
			}
			started = 1;
			if (cl < (size_t)h + 2 || !is_id(line, cl, h) || line[h] != ' ')
				return fail(a->err, "a ref line is not '<id> <name>'");
			const char *name = line + h + 1;
			size_t nl = cl - (size_t)h - 1;
			if (nul && nl == 15 && !memcmp(name, "capabilities^{}", 15)) {
				/* an empty repository: no refs, only capabilities */
			} else {
				if (!advert_name_valid(name, nl))
					return fail(a->err, "'%.*s' is not a valid ref name",
						    (int)(nl > 100 ? 100 : nl), name);
				px_ref *nr = realloc(a->refs, sizeof *nr * (size_t)(a->nrefs + 1));
				if (!nr)
					return fail(a->err, "out of memory");
				a->refs = nr;
				memcpy(nr[a->nrefs].id, line, (size_t)h);
				nr[a->nrefs].id[h] = 0;
				if (!(nr[a->nrefs].name = dupn(name, nl)))
					return fail(a->err, "out of memory");
				a->nrefs++;
			}
		}
		if (px_pkt_read(body, len, &off, &p) <= 0)
			return fail(a->err, "the ref advertisement ends without a flush");
	}
	if (off != len)
		return fail(a->err, "data after the end of the ref advertisement");
	if (!a->caps && !(a->caps = dupn("", 0)))
		return fail(a->err, "out of memory");
	if (!a->hexsz)
		a->hexsz = 40;
	return 0;
}

int px_advert_parse(const char *body, size_t len, px_advert *a)
{
	memset(a, 0, sizeof *a);
	if (advert_parse(body, len, a) < 0) {
		char err[PX_PKT_ERRLEN];
		memcpy(err, a->err, sizeof err);
		px_advert_free(a);
		memcpy(a->err, err, sizeof err);
		return -1;
	}
	return 0;
}

int px_advert_build(px_pkt_buf *b, const char *service, const px_ref *refs, int nrefs,
		    const char *caps, char *const *shallow, int nshallow, int hexsz)
{
	char zero[65];
	if (hexsz != 40 && hexsz != 64)
		return -1;
	memset(zero, '0', (size_t)hexsz);
	zero[hexsz] = 0;
	caps = caps ? caps : "";
	int rc = 0;
	if (service) {
		rc |= px_pkt_writef(b, "# service=%s\n", service);
		rc |= px_pkt_flush(b);
	}
	if (nrefs == 0) {
		rc |= px_pkt_writef(b, "%s capabilities^{}%c%s\n", zero, 0, caps);
	}
	for (int i = 0; i < nrefs; i++) {
		if (strlen(refs[i].id) != (size_t)hexsz ||
		    !advert_name_valid(refs[i].name, strlen(refs[i].name)))
			return -1;
		if (i == 0)
			rc |= px_pkt_writef(b, "%s %s%c%s\n", refs[i].id, refs[i].name, 0, caps);
		else
			rc |= px_pkt_writef(b, "%s %s\n", refs[i].id, refs[i].name);
	}
	for (int i = 0; i < nshallow; i++)
		rc |= px_pkt_writef(b, "shallow %s\n", shallow[i]);
	rc |= px_pkt_flush(b);
	return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ upload-pack request */

void px_upload_req_free(px_upload_req *r)
{
	free(r->wants);
	free(r->caps);
	r->wants = NULL;
	r->caps = NULL;
	r->nwants = 0;
}

static int prefix(const char *s, size_t n, const char *p)
{
	size_t pl = strlen(p);
	return n >= pl && !memcmp(s, p, pl);
}

static int upload_parse(const char *body, size_t len, px_upload_req *r)
{
	size_t off = 0;
	px_pkt p;
	int hexsz = 40;
	/* wants and the shallow/deepen/filter lines, up to a flush */
	for (;;) {
		int rc = px_pkt_read(body, len, &off, &p);
		if (rc <= 0)
			return fail(r->err, "a fetch request without a complete want list");
		if (p.kind == PX_PKT_FLUSH)
			break;
		if (p.kind != PX_PKT_DATA)
			return fail(r->err, "an unexpected special packet in the want list");
		size_t n = chomp(&p);
		const char *line = p.data;
		if (prefix(line, n, "want ")) {
			if (r->nwants == 0) {
				/* the first want may carry the capabilities after a space */
				const char *sp = memchr(line + 5, ' ', n - 5);
				size_t idl = sp ? (size_t)(sp - line - 5) : n - 5;
				if (sp && !(r->caps = dupn(sp + 1, n - (size_t)(sp + 1 - line))))
					return fail(r->err, "out of memory");
				hexsz = hexsz_of(r->caps);
				if (idl != (size_t)hexsz)
					return fail(r->err, "a want without a valid id");
			} else if (n - 5 != (size_t)hexsz) {
				return fail(r->err, "a want without a valid id");
			}
			if (!is_id(line + 5, n - 5, hexsz))
				return fail(r->err, "a want without a valid id");
			char(*nw)[65] = realloc(r->wants, sizeof *nw * (size_t)(r->nwants + 1));
			if (!nw)
				return fail(r->err, "out of memory");
			r->wants = nw;
			memcpy(nw[r->nwants], line + 5, (size_t)hexsz);
			nw[r->nwants][hexsz] = 0;
			r->nwants++;
		} else if (prefix(line, n, "shallow ") || prefix(line, n, "deepen ") ||
			   prefix(line, n, "deepen-since ") || prefix(line, n, "deepen-not ") ||
			   prefix(line, n, "filter ")) {
			if (memchr(line, 0, n))
				return fail(r->err, "a NUL byte in the want list");
		} else {
			return fail(r->err, "an unknown line in the want list");
		}
	}
	/* haves, flushes, and at most one "done" at the end */
	for (;;) {
		int rc = px_pkt_read(body, len, &off, &p);
		if (rc == 0)
			break;
		if (rc < 0 || r->done)
			return fail(r->err, "data after 'done' or a malformed have list");
		if (p.kind == PX_PKT_FLUSH)
			continue;
		if (p.kind != PX_PKT_DATA)
			return fail(r->err, "an unexpected special packet in the have list");
		size_t n = chomp(&p);
		if (n == 4 && !memcmp(p.data, "done", 4)) {
			r->done = 1;
		} else if (prefix(p.data, n, "have ") && n - 5 == (size_t)hexsz &&
			   is_id(p.data + 5, n - 5, hexsz)) {
			r->nhaves++;
		} else {
			return fail(r->err, "an unknown line in the have list");
		}
	}
	return 0;
}

int px_upload_parse(const char *body, size_t len, px_upload_req *r)
{
	memset(r, 0, sizeof *r);
	if (upload_parse(body, len, r) < 0) {
		char err[PX_PKT_ERRLEN];
		memcpy(err, r->err, sizeof err);
		px_upload_req_free(r);
		memcpy(r->err, err, sizeof err);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ replies */

int px_report_status(px_pkt_buf *b, const char *unpack, const px_ref_status *st, int n,
		     const char *const *messages, int nmessages, size_t sideband_max)
{
	px_pkt_buf in = {0};
	char a[1024], c[1024];
	int rc = 0;
	one_line(a, sizeof a, unpack ? unpack : "ok");
	rc |= px_pkt_writef(&in, "unpack %s\n", a);
	for (int i = 0; i < n; i++) {
		if (!st[i].ref || !px_ref_valid(st[i].ref, strlen(st[i].ref))) {
			rc = -1;
			break;
		}
		if (st[i].reason) {
			one_line(c, sizeof c, st[i].reason);
			rc |= px_pkt_writef(&in, "ng %s %s\n", st[i].ref, c[0] ? c : "refused");
		} else {
			rc |= px_pkt_writef(&in, "ok %s\n", st[i].ref);
		}
	}
	rc |= px_pkt_flush(&in);
	if (rc) {
		px_pkt_buf_free(&in);
		return -1;
	}
	if (sideband_max) {
		for (int i = 0; i < nmessages && !rc; i++) {
			/* one line per message: git prefixes each with "remote: " */
			char m[2048];
			one_line(m, sizeof m - 1, messages[i]);
			size_t ml = strlen(m);
			m[ml++] = '\n';
			rc |= px_pkt_sideband(b, 2, m, ml, sideband_max);
		}
		rc |= px_pkt_sideband(b, 1, in.data, in.len, sideband_max);
		rc |= px_pkt_flush(b);
	} else {
		rc |= buf_add(b, in.data, in.len);
	}
	px_pkt_buf_free(&in);
	return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ Lua */

/* FDR_NO_LUA builds the C core alone (the fuzz target). */
#ifndef FDR_NO_LUA
#include "fdr.h"

static int malformed(lua_State *L, const char *what, const char *err)
{
	return fdr_error(L, "git.malformed", "the request or answer is not what git sends; refused",
			 "%s: %s", what, err);
}

static void set_s(lua_State *L, const char *k, const char *v)
{
	lua_pushstring(L, v);
	lua_setfield(L, -2, k);
}

static void set_i(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

static void push_strv(lua_State *L, char **v, int n)
{
	lua_createtable(L, n, 0);
	for (int i = 0; i < n; i++) {
		lua_pushstring(L, v[i]);
		lua_rawseti(L, -2, i + 1);
	}
}

static int l_parse_push(lua_State *L)
{
	size_t len;
	const char *body = luaL_checklstring(L, 1, &len);
	px_push_req r;
	if (px_push_parse(body, len, &r) < 0)
		return malformed(L, "push", r.err);
	lua_createtable(L, 0, 8);
	lua_createtable(L, r.ncmds, 0);
	for (int i = 0; i < r.ncmds; i++) {
		lua_createtable(L, 0, 3);
		set_s(L, "old", r.cmds[i].old_id);
		set_s(L, "new", r.cmds[i].new_id);
		set_s(L, "ref", r.cmds[i].ref);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "commands");
	set_s(L, "capabilities", r.caps ? r.caps : "");
	push_strv(L, r.shallow, r.nshallow);
	lua_setfield(L, -2, "shallow");
	push_strv(L, r.options, r.noptions);
	lua_setfield(L, -2, "options");
	set_i(L, "pack_offset", (lua_Integer)r.pack_offset + 1);
	set_i(L, "pack_bytes", (lua_Integer)(len - r.pack_offset));
	set_i(L, "hexsz", r.hexsz);
	px_push_req_free(&r);
	return 1;
}

static int l_parse_advertisement(lua_State *L)
{
	size_t len;
	const char *body = luaL_checklstring(L, 1, &len);
	px_advert a;
	if (px_advert_parse(body, len, &a) < 0)
		return malformed(L, "ref advertisement", a.err);
	lua_createtable(L, 0, 6);
	if (a.service)
		set_s(L, "service", a.service);
	set_i(L, "version", a.version);
	lua_createtable(L, a.nrefs, 0);
	for (int i = 0; i < a.nrefs; i++) {
		lua_createtable(L, 0, 2);
		set_s(L, "id", a.refs[i].id);
		set_s(L, "name", a.refs[i].name);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "refs");
	set_s(L, "capabilities", a.caps);
	push_strv(L, a.shallow, a.nshallow);
	lua_setfield(L, -2, "shallow");
	set_i(L, "hexsz", a.hexsz);
	px_advert_free(&a);
	return 1;
}

/* The strings of the list field `k` of the table at index t, or NULL when absent. Leaves
 * two values on the stack (the list and the array) which keep the strings alive. */
static const char **get_strv(lua_State *L, int t, const char *k, int *n)
{
	*n = 0;
	if (lua_getfield(L, t, k) == LUA_TNIL) {
		lua_pushnil(L);
		return NULL;
	}
	luaL_checktype(L, -1, LUA_TTABLE);
	int len = (int)luaL_len(L, -1);
	const char **v = lua_newuserdatauv(L, sizeof *v * (size_t)(len + 1), 0);
	for (int i = 0; i < len; i++) {
		if (lua_rawgeti(L, -2, i + 1) != LUA_TSTRING)
			luaL_error(L, "%s[%d]: expected string", k, i + 1);
		v[i] = lua_tostring(L, -1); /* the list holds the string */
		lua_pop(L, 1);
	}
	*n = len;
	return v;
}

static int l_build_advertisement(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "service");
	const char *service = luaL_optstring(L, -1, NULL);
	lua_getfield(L, 1, "capabilities");
	const char *caps = luaL_optstring(L, -1, "");
	lua_getfield(L, 1, "hexsz");
	int hexsz = (int)luaL_optinteger(L, -1, 40);
	lua_pop(L, 1);
	lua_getfield(L, 1, "refs");
	int nrefs = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
	px_ref *refs = lua_newuserdatauv(L, sizeof *refs * (size_t)(nrefs + 1), 0);
	for (int i = 0; i < nrefs; i++) {
		lua_rawgeti(L, -2, i + 1);
		luaL_checktype(L, -1, LUA_TTABLE);
		lua_getfield(L, -1, "id");
		lua_getfield(L, -2, "name");
		const char *id = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		if (!id || !name || strlen(id) > 64)
			return luaL_error(L, "build_advertisement: refs[%d]: expected {id=, name=}", i + 1);
		memcpy(refs[i].id, id, strlen(id) + 1);
		refs[i].name = (char *)name; /* anchored by the refs table */
		lua_pop(L, 3);
	}
	int nshallow = 0;
	const char **shallow = get_strv(L, 1, "shallow", &nshallow);
	px_pkt_buf b = {0};
	int rc = px_advert_build(&b, service, refs, nrefs, caps, (char *const *)shallow, nshallow, hexsz);
	if (rc < 0) {
		px_pkt_buf_free(&b);
		return luaL_error(L, "build_advertisement: invalid ref, id or line too long");
	}
	lua_pushlstring(L, b.data, b.len);
	px_pkt_buf_free(&b);
	return 1;
}

static int l_parse_upload(lua_State *L)
{
	size_t len;
	const char *body = luaL_checklstring(L, 1, &len);
	px_upload_req r;
	if (px_upload_parse(body, len, &r) < 0)
		return malformed(L, "fetch request", r.err);
	lua_createtable(L, 0, 4);
	lua_createtable(L, r.nwants, 0);
	for (int i = 0; i < r.nwants; i++) {
		lua_pushstring(L, r.wants[i]);
		lua_rawseti(L, -2, i + 1);
	}
	lua_setfield(L, -2, "wants");
	set_i(L, "haves", r.nhaves);
	set_s(L, "capabilities", r.caps ? r.caps : "");
	lua_pushboolean(L, r.done);
	lua_setfield(L, -2, "done");
	px_upload_req_free(&r);
	return 1;
}

static int l_report_status(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "unpack");
	const char *unpack = luaL_optstring(L, -1, "ok");
	lua_getfield(L, 1, "sideband");
	lua_Integer sb = luaL_optinteger(L, -1, 0);
	lua_pop(L, 1);
	if (sb < 0 || sb > PX_PKT_MAX || (sb > 0 && sb < 6))
		return luaL_error(L, "report_status: sideband: expected 0, 1000 or 65520");
	lua_getfield(L, 1, "refs");
	int n = lua_istable(L, -1) ? (int)luaL_len(L, -1) : 0;
	px_ref_status *st = lua_newuserdatauv(L, sizeof *st * (size_t)(n + 1), 0);
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, -2, i + 1);
		luaL_checktype(L, -1, LUA_TTABLE);
		lua_getfield(L, -1, "ref");
		lua_getfield(L, -2, "reason");
		st[i].ref = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		st[i].reason = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		if (!st[i].ref)
			return luaL_error(L, "report_status: refs[%d].ref: expected string", i + 1);
		lua_pop(L, 3); /* strings stay anchored by the refs table */
	}
	int nm = 0;
	const char **msgs = get_strv(L, 1, "messages", &nm);
	px_pkt_buf b = {0};
	int rc = px_report_status(&b, unpack, st, n, msgs, nm, (size_t)sb);
	if (rc < 0) {
		px_pkt_buf_free(&b);
		return luaL_error(L, "report_status: an invalid ref name");
	}
	lua_pushlstring(L, b.data, b.len);
	px_pkt_buf_free(&b);
	return 1;
}

static int l_error_packet(lua_State *L)
{
	const char *msg = luaL_checkstring(L, 1);
	px_pkt_buf b = {0};
	if (px_pkt_error(&b, msg) < 0)
		return luaL_error(L, "error_packet: out of memory");
	lua_pushlstring(L, b.data, b.len);
	px_pkt_buf_free(&b);
	return 1;
}

static int l_pkt(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	px_pkt_buf b = {0};
	if (px_pkt_write(&b, s, n) < 0)
		return luaL_error(L, "pkt: %d bytes at most, got %d", PX_PKT_DATA_MAX, (int)n);
	lua_pushlstring(L, b.data, b.len);
	px_pkt_buf_free(&b);
	return 1;
}

static int l_ref_valid(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	lua_pushboolean(L, px_ref_valid(s, n));
	return 1;
}

static int l_caps_has(lua_State *L)
{
	lua_pushboolean(L, px_caps_has(luaL_checkstring(L, 1), luaL_checkstring(L, 2)));
	return 1;
}

int luaopen_foundry_pktline(lua_State *L)
{
	static const luaL_Reg fns[] = {{"parse_push", l_parse_push},
				       {"parse_advertisement", l_parse_advertisement},
				       {"build_advertisement", l_build_advertisement},
				       {"parse_upload", l_parse_upload},
				       {"report_status", l_report_status},
				       {"error_packet", l_error_packet},
				       {"pkt", l_pkt},
				       {"ref_valid", l_ref_valid},
				       {"caps_has", l_caps_has},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	lua_pushliteral(L, "0000");
	lua_setfield(L, -2, "FLUSH");
	return 1;
}
#endif
