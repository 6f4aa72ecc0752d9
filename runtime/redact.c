/*
 * redact.c - the redaction engine and its Lua binding (module foundry._redact).
 *
 * Every pattern (a secret value, or the literal prefix of a token shape) is indexed by its
 * first two bytes: a 64 Kbit bitmap says which byte pairs start some pattern, and a
 * compressed table lists the candidates for each pair. The scan tests one bit per input
 * byte and looks further only on a hit, which random text rarely produces; that is several
 * times faster than an Aho-Corasick automaton whose tables do not fit in the L1 cache, and
 * the candidate check decides leftmost-longest matches and stream hold-back in one place.
 */
#include "redact.h"
#include "vault.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NOMATCH = 0, MATCH = 1, NEED_MORE = 2 };
enum { K_LITERAL = 0, K_SHAPE = 1 };

/* Character classes of token bodies. */
enum {
	C_NONE = 0,
	C_URLSAFE,  /* A-Za-z0-9 - _ */
	C_ALNUM,    /* A-Za-z0-9 */
	C_ALNUM_US, /* A-Za-z0-9 _ */
	C_UPPERNUM, /* A-Z0-9 */
	C_SLACK,    /* A-Za-z0-9 - */
	C_BEARER,   /* A-Za-z0-9 - . _ ~ + / = */
	C_JWT,      /* A-Za-z0-9 - _ . (used to swallow the rest of a very long JWT) */
};

static int is_alnum(int c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int in_class(int cls, int c)
{
	switch (cls) {
	case C_URLSAFE: return is_alnum(c) || c == '-' || c == '_';
	case C_ALNUM: return is_alnum(c);
	case C_ALNUM_US: return is_alnum(c) || c == '_';
	case C_UPPERNUM: return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
	case C_SLACK: return is_alnum(c) || c == '-';
	case C_BEARER:
		return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' ||
		       c == '/' || c == '=';
	case C_JWT: return is_alnum(c) || c == '-' || c == '_' || c == '.';
	default: return 0;
	}
}

/* A byte that may precede a token: anything but a token character, so "task-..." is not
 * an "sk-..." key. */
static int token_boundary(int prev)
{
	return prev < 0 || !(is_alnum(prev) || prev == '_' || prev == '-');
}

struct shape {
	const char *prefix;
	const char *label;
	unsigned char body;      /* C_* of the characters after the prefix */
	unsigned short min;      /* at least this many of them */
	unsigned char keep;      /* the prefix stays visible ("Bearer ") */
	unsigned char jwt;       /* three dot-separated base64url segments */
};

/* Order matters only for equal-length matches at one position (first wins). */
static const struct shape shapes[] = {
	{"sk-ant-", "anthropic_key", C_URLSAFE, 20, 0, 0},
	{"sk-", "openai_key", C_URLSAFE, 20, 0, 0},
	{"github_pat_", "github_pat", C_ALNUM_US, 22, 0, 0},
	{"ghp_", "github_token", C_ALNUM, 30, 0, 0},
	{"gho_", "github_token", C_ALNUM, 30, 0, 0},
	{"ghs_", "github_token", C_ALNUM, 30, 0, 0},
	{"ghu_", "github_token", C_ALNUM, 30, 0, 0},
	{"ghr_", "github_token", C_ALNUM, 30, 0, 0},
	{"AKIA", "aws_access_key", C_UPPERNUM, 16, 0, 0},
	{"ASIA", "aws_access_key", C_UPPERNUM, 16, 0, 0},
	{"xoxb-", "slack_token", C_SLACK, 10, 0, 0},
	{"xoxa-", "slack_token", C_SLACK, 10, 0, 0},
	{"xoxp-", "slack_token", C_SLACK, 10, 0, 0},
	{"xoxr-", "slack_token", C_SLACK, 10, 0, 0},
	{"xoxs-", "slack_token", C_SLACK, 10, 0, 0},
	{"AIza", "google_api_key", C_URLSAFE, 30, 0, 0},
	{"eyJ", "jwt", C_URLSAFE, 0, 0, 1},
	{"Bearer ", "bearer", C_BEARER, 8, 1, 0},
	{"bearer ", "bearer", C_BEARER, 8, 1, 0},
	{"BEARER ", "bearer", C_BEARER, 8, 1, 0},
};
#define NSHAPES (sizeof shapes / sizeof shapes[0])

struct pattern {
	size_t off;          /* literal: offset of the value in the arena */
	uint32_t len;        /* literal: value length; shape: prefix length */
	uint32_t label;      /* literal: index into names; shape: index into shapes */
	uint32_t head, mask; /* the first (up to) four bytes, for a quick reject */
	unsigned char kind;
};

struct fdr_redactor {
	int shapes;
	int built;
	/* secrets, in order of addition */
	char **names;
	struct pattern *pats;
	size_t npats, cappats, nlit, max_lit;
	uint8_t *arena; /* fdr_secure_alloc'd values, back to back */
	size_t arena_len, arena_cap;
	/* the index, built at first use */
	uint64_t bigram[65536 / 64];
	uint8_t first[256];
	uint32_t *bucket; /* 65537 offsets into cand */
	uint32_t *cand;   /* pattern indices, grouped by first byte pair */
	char **repl;      /* "[REDACTED:label]" per pattern */
	size_t *repl_len;
};

struct fdr_redact_stream {
	fdr_redactor *r;
	uint8_t *buf; /* held-back bytes */
	size_t len, cap;
	int prev;    /* the input byte before buf[0], or -1 */
	int swallow; /* C_* of a capped token still being swallowed, or 0 */
};

fdr_redactor *fdr_redactor_new(int with_shapes)
{
	fdr_redactor *r = calloc(1, sizeof *r);
	if (r)
		r->shapes = with_shapes;
	return r;
}

static void unbuild(fdr_redactor *r)
{
	free(r->bucket);
	free(r->cand);
	if (r->repl)
		for (size_t i = 0; i < r->npats; i++)
			free(r->repl[i]);
	free(r->repl);
	free(r->repl_len);
	r->bucket = r->cand = NULL;
	r->repl = NULL;
	r->repl_len = NULL;
	r->built = 0;
}

int fdr_redactor_add(fdr_redactor *r, const char *name, const void *value, size_t len)
{
	if (r->built || !name || !*name)
		return FDR_REDACT_EINVAL;
	if (len < FDR_REDACT_MIN_SECRET)
		return FDR_REDACT_TOO_SHORT;
	if (len > UINT32_MAX)
		return FDR_REDACT_EINVAL;
	if (r->arena_len + len > r->arena_cap) {
		size_t cap = r->arena_cap ? r->arena_cap : 4096;
		while (cap < r->arena_len + len)
			cap *= 2;
		uint8_t *a = fdr_secure_alloc(cap);
		if (!a)
			return FDR_REDACT_ENOMEM;
		if (r->arena) {
			memcpy(a, r->arena, r->arena_len);
			fdr_secure_free(r->arena);
		}
		r->arena = a;
		r->arena_cap = cap;
	}
	if (r->npats == r->cappats) {
		size_t cap = r->cappats ? r->cappats * 2 : 16;
		struct pattern *p = realloc(r->pats, cap * sizeof *p);
		char **n = realloc(r->names, cap * sizeof *n);
		if (p)
			r->pats = p;
		if (n)
			r->names = n;
		if (!p || !n)
			return FDR_REDACT_ENOMEM;
		r->cappats = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return FDR_REDACT_ENOMEM;
	memcpy(r->arena + r->arena_len, value, len);
	r->names[r->nlit] = copy;
	r->pats[r->npats++] = (struct pattern){.off = r->arena_len, .len = (uint32_t)len,
					       .label = (uint32_t)r->nlit, .kind = K_LITERAL};
	r->nlit++;
	r->arena_len += len;
	if (len > r->max_lit)
		r->max_lit = len;
	return FDR_REDACT_OK;
}

#define PART_MIN 16

int fdr_redactor_add_secret(fdr_redactor *r, const char *name, const void *value, size_t len)
{
	int rc = fdr_redactor_add(r, name, value, len);
	if (rc != FDR_REDACT_OK && rc != FDR_REDACT_TOO_SHORT)
		return rc;
	const uint8_t *v = value;
	for (size_t i = 0; i < len;) {
		if (!in_class(C_BEARER, v[i])) {
			i++;
			continue;
		}
		size_t j = i;
		int digit = 0, alpha = 0;
		for (; j < len && in_class(C_BEARER, v[j]); j++) {
			digit |= v[j] >= '0' && v[j] <= '9';
			alpha |= (v[j] | 0x20) >= 'a' && (v[j] | 0x20) <= 'z';
		}
		if (j - i >= PART_MIN && j - i < len && digit && alpha) {
			int prc = fdr_redactor_add(r, name, v + i, j - i);
			if (prc == FDR_REDACT_ENOMEM)
				return prc;
		}
		i = j;
	}
	return rc;
}

size_t fdr_redactor_count(const fdr_redactor *r)
{
	return r->nlit;
}

size_t fdr_redactor_max_len(const fdr_redactor *r)
{
	return r->max_lit;
}

const char *fdr_redactor_name(const fdr_redactor *r, size_t i)
{
	return i < r->nlit ? r->names[i] : NULL;
}

void fdr_redactor_free(fdr_redactor *r)
{
	if (!r)
		return;
	unbuild(r);
	for (size_t i = 0; i < r->nlit; i++)
		free(r->names[i]);
	free(r->names);
	free(r->pats);
	fdr_secure_free(r->arena);
	free(r);
}

static const uint8_t *pattern_bytes(const fdr_redactor *r, const struct pattern *p)
{
	return p->kind == K_LITERAL ? r->arena + p->off
				    : (const uint8_t *)shapes[p->label].prefix;
}

static int build(fdr_redactor *r)
{
	if (r->built)
		return 0;
	/* shapes become patterns after the literals */
	if (r->shapes) {
		for (size_t s = 0; s < NSHAPES; s++) {
			if (r->npats == r->cappats) {
				size_t cap = r->cappats ? r->cappats * 2 : 32;
				struct pattern *p = realloc(r->pats, cap * sizeof *p);
				if (!p)
					return -1;
				r->pats = p;
				r->cappats = cap;
			}
			r->pats[r->npats++] = (struct pattern){.len = (uint32_t)strlen(shapes[s].prefix),
							       .label = (uint32_t)s, .kind = K_SHAPE};
		}
		r->shapes = 0; /* added; a rebuild must not add them twice */
	}
	r->bucket = calloc(65537, sizeof *r->bucket);
	r->cand = malloc((r->npats ? r->npats : 1) * sizeof *r->cand);
	r->repl = calloc(r->npats ? r->npats : 1, sizeof *r->repl);
	r->repl_len = calloc(r->npats ? r->npats : 1, sizeof *r->repl_len);
	if (!r->bucket || !r->cand || !r->repl || !r->repl_len) {
		unbuild(r);
		return -1;
	}
	memset(r->bigram, 0, sizeof r->bigram);
	memset(r->first, 0, sizeof r->first);
	for (size_t i = 0; i < r->npats; i++) {
		const uint8_t *b = pattern_bytes(r, &r->pats[i]);
		unsigned key = b[0] | (unsigned)b[1] << 8;
		uint32_t hn = r->pats[i].len < 4 ? r->pats[i].len : 4;
		r->pats[i].head = 0;
		memcpy(&r->pats[i].head, b, hn);
		uint8_t m[4] = {0};
		memset(m, 0xff, hn);
		memcpy(&r->pats[i].mask, m, 4); /* in memory order, like head and the input */
		r->bucket[key + 1]++;
		r->bigram[key >> 6] |= (uint64_t)1 << (key & 63);
		r->first[b[0]] = 1;
		const char *label = r->pats[i].kind == K_LITERAL ? r->names[r->pats[i].label]
								 : shapes[r->pats[i].label].label;
		size_t n = strlen(label) + sizeof "[REDACTED:]";
		if (!(r->repl[i] = malloc(n))) {
			unbuild(r);
			return -1;
		}
		r->repl_len[i] = (size_t)snprintf(r->repl[i], n, "[REDACTED:%s]", label);
	}
	for (size_t k = 1; k <= 65536; k++)
		r->bucket[k] += r->bucket[k - 1];
	/* stable fill: candidates keep the order of addition (literals first) */
	uint32_t *fill = calloc(65536, sizeof *fill);
	if (!fill) {
		unbuild(r);
		return -1;
	}
	for (size_t i = 0; i < r->npats; i++) {
		const uint8_t *b = pattern_bytes(r, &r->pats[i]);
		unsigned key = b[0] | (unsigned)b[1] << 8;
		r->cand[r->bucket[key] + fill[key]++] = (uint32_t)i;
	}
	free(fill);
	r->built = 1;
	return 0;
}

struct hit {
	size_t start, end;
	uint32_t pat;
	int capped; /* C_* class to keep swallowing: a stream cut the token at the cap */
};

static int match_literal(const uint8_t *v, size_t vlen, const uint8_t *buf, size_t len,
			 size_t i, int final, size_t *end)
{
	size_t avail = len - i;
	if (avail >= vlen) {
		if (memcmp(buf + i, v, vlen) != 0)
			return NOMATCH;
		*end = i + vlen;
		return MATCH;
	}
	if (final)
		return NOMATCH;
	return memcmp(buf + i, v, avail) == 0 ? NEED_MORE : NOMATCH;
}

/* Consume characters of `cls` from j; stops at `limit`. */
static size_t run_of(int cls, const uint8_t *buf, size_t j, size_t limit)
{
	while (j < limit && in_class(cls, buf[j]))
		j++;
	return j;
}

static int match_jwt(const uint8_t *buf, size_t len, size_t i, size_t j, int final,
		     struct hit *h)
{
	/* eyJ<header>.<payload>.<signature>: header >= 10, payload >= 4 characters */
	size_t limit = final ? len : (len < i + FDR_REDACT_SHAPE_MAX ? len : i + FDR_REDACT_SHAPE_MAX);
	size_t seg_min[2] = {7, 4};
	for (int seg = 0; seg < 2; seg++) {
		size_t k = run_of(C_URLSAFE, buf, j, limit);
		if (k == len && !final)
			return NEED_MORE;
		if (k == limit && !final)
			goto capped;
		if (k - j < seg_min[seg] || k >= len || buf[k] != '.')
			return NOMATCH;
		j = k + 1;
	}
	j = run_of(C_URLSAFE, buf, j, limit);
	if (j == len && !final)
		return NEED_MORE;
	h->start = i;
	h->end = j;
	h->capped = (j == limit && !final) ? C_JWT : 0;
	return MATCH;
capped:
	h->start = i;
	h->end = limit;
	h->capped = C_JWT;
	return MATCH;
}

static int match_shape(const struct shape *sh, size_t plen, const uint8_t *buf, size_t len,
		       size_t i, int final, int prev, struct hit *h)
{
	if (!sh->keep && !token_boundary(prev))
		return NOMATCH;
	if (sh->keep && prev >= 0 && is_alnum(prev))
		return NOMATCH;
	size_t avail = len - i;
	if (memcmp(buf + i, sh->prefix, avail < plen ? avail : plen) != 0)
		return NOMATCH;
	if (avail < plen)
		return final ? NOMATCH : NEED_MORE;
	size_t j = i + plen;
	if (sh->jwt)
		return match_jwt(buf, len, i, j, final, h);
	/* A stream cuts a token at the cap and swallows the rest; a whole text has no cap. */
	size_t limit = final ? len : (len < i + FDR_REDACT_SHAPE_MAX ? len : i + FDR_REDACT_SHAPE_MAX);
	size_t k = run_of(sh->body, buf, j, limit);
	if (k == len && !final)
		return NEED_MORE;
	if (k - j < sh->min)
		return NOMATCH;
	h->start = sh->keep ? j : i;
	h->end = k;
	h->capped = (k == limit && !final) ? sh->body : 0;
	return MATCH;
}

/* The longest match starting at i (at least two bytes available). Its start is the
 * earliest of every match there: a shape that keeps its prefix visible ("Bearer ") must not
 * leave a secret that also matched at i inside that prefix. */
static int match_at(const fdr_redactor *r, const uint8_t *buf, size_t len, size_t i, int final,
		    int prev, struct hit *best)
{
	unsigned key = buf[i] | (unsigned)buf[i + 1] << 8;
	int found = 0;
	size_t lo = (size_t)-1;
	uint32_t w = 0;
	int whole = len - i >= 4;
	if (whole)
		memcpy(&w, buf + i, 4);
	for (uint32_t k = r->bucket[key]; k < r->bucket[key + 1]; k++) {
		uint32_t pi = r->cand[k];
		const struct pattern *p = &r->pats[pi];
		if (whole && (w & p->mask) != p->head)
			continue; /* most false hits ("ask" for "sk-...") end here */
		struct hit h = {0, 0, pi, 0};
		int st;
		if (p->kind == K_LITERAL) {
			st = match_literal(r->arena + p->off, p->len, buf, len, i, final, &h.end);
			h.start = i;
		} else {
			st = match_shape(&shapes[p->label], p->len, buf, len, i, final, prev, &h);
		}
		if (st == NEED_MORE)
			return NEED_MORE;
		if (st == MATCH && h.start < lo)
			lo = h.start;
		if (st == MATCH && (!found || h.end > best->end)) {
			*best = h;
			best->pat = pi;
			found = 1;
		}
	}
	if (found && lo < best->start)
		best->start = lo;
	return found ? MATCH : NOMATCH;
}

static int probe(const fdr_redactor *r, const uint8_t *buf, size_t len, size_t j, int final,
		 int prev, struct hit *h)
{
	if (j + 1 >= len)
		return (!final && j < len && r->first[buf[j]]) ? NEED_MORE : NOMATCH;
	unsigned key = buf[j] | (unsigned)buf[j + 1] << 8;
	if (!((r->bigram[key >> 6] >> (key & 63)) & 1))
		return NOMATCH;
	return match_at(r, buf, len, j, final, prev, h);
}

/*
 * Scan buf[0, len): emit everything that is decided, return in *consumed how far that is
 * (len when final). `prev` is the input byte before buf[0] (-1 at the start); *swallow is
 * the class of a capped token to keep swallowing (streams only).
 */
static long scan(const fdr_redactor *r, const uint8_t *buf, size_t len, int final, int prev,
		 int *swallow, fdr_redact_emit emit, void *ud, size_t *consumed)
{
	size_t i = 0, from = 0, hold = len;
	long count = 0;
	if (*swallow) {
		i = run_of(*swallow, buf, 0, len);
		if (i == len && !final) {
			*consumed = len;
			return 0;
		}
		*swallow = 0;
		from = i;
	}
	const uint64_t *bm = r->bigram;
	while (i + 1 < len) {
		unsigned key = buf[i] | (unsigned)buf[i + 1] << 8;
		if (!((bm[key >> 6] >> (key & 63)) & 1)) {
			i++;
			continue;
		}
		struct hit h;
		int st = match_at(r, buf, len, i, final, i ? buf[i - 1] : prev, &h);
		if (st == NOMATCH) {
			i++;
			continue;
		}
		if (st == NEED_MORE) {
			hold = i;
			goto out;
		}
		/* Merge every match that starts inside this one and ends beyond it, or starts
		 * inside the prefix it keeps visible. */
		size_t start = h.start, end = h.end;
		int capped = h.capped;
		uint32_t label = h.pat;
		for (size_t j = i + 1; j < end; j++) {
			struct hit h2;
			int st2 = probe(r, buf, len, j, final, buf[j - 1], &h2);
			if (st2 == NEED_MORE) {
				hold = i;
				goto out;
			}
			if (st2 != MATCH)
				continue;
			/* "Bearer <a named secret>": name the secret rather than the shape */
			if (r->pats[label].kind == K_SHAPE && r->pats[h2.pat].kind == K_LITERAL &&
			    h2.start <= h.start && h2.end >= end)
				label = h2.pat;
			if (h2.start < start)
				start = h2.start;
			if (h2.end > end) {
				end = h2.end;
				capped = h2.capped;
			}
		}
		if (start > from)
			emit(ud, (const char *)buf + from, start - from);
		emit(ud, r->repl[label], r->repl_len[label]);
		count++;
		i = from = end;
		if (capped) {
			i = from = run_of(capped, buf, i, len);
			if (i == len && !final) {
				*swallow = capped;
				*consumed = len;
				return count;
			}
		}
	}
	if (!final && i + 1 == len && r->first[buf[i]])
		hold = i;
out:
	if (hold > from)
		emit(ud, (const char *)buf + from, hold - from);
	*consumed = hold;
	return count;
}

long fdr_redact(fdr_redactor *r, const void *in, size_t len, fdr_redact_emit emit, void *ud)
{
	if (build(r) != 0)
		return FDR_REDACT_ENOMEM;
	size_t consumed;
	int swallow = 0;
	return scan(r, in, len, 1, -1, &swallow, emit, ud, &consumed);
}

fdr_redact_stream *fdr_redact_stream_new(fdr_redactor *r)
{
	if (build(r) != 0)
		return NULL;
	fdr_redact_stream *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->r = r;
	s->prev = -1;
	return s;
}

/* Keep in[from, n) as the held-back bytes (in may be s->buf itself, or a caller's chunk
 * when nothing was held). */
static int hold_rest(fdr_redact_stream *s, const uint8_t *in, size_t from, size_t n)
{
	size_t rest = n - from;
	if (from > 0)
		s->prev = in[from - 1];
	if (rest > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		while (cap < rest)
			cap *= 2;
		uint8_t *b = malloc(cap);
		if (!b)
			return -1;
		if (s->buf) {
			memset(s->buf, 0, s->cap);
			free(s->buf);
		}
		s->buf = b;
		s->cap = cap;
	}
	if (rest)
		memmove(s->buf, in + from, rest);
	if (s->len > rest)
		memset(s->buf + rest, 0, s->len - rest);
	s->len = rest;
	return 0;
}

long fdr_redact_stream_push(fdr_redact_stream *s, const void *in, size_t n,
			    fdr_redact_emit emit, void *ud)
{
	size_t consumed;
	long count;
	if (s->len == 0) {
		/* nothing held: scan the caller's chunk in place */
		count = scan(s->r, in, n, 0, s->prev, &s->swallow, emit, ud, &consumed);
		return hold_rest(s, in, consumed, n) ? FDR_REDACT_ENOMEM : count;
	}
	if (s->len + n > s->cap) {
		size_t cap = s->cap;
		while (cap < s->len + n)
			cap *= 2;
		uint8_t *b = malloc(cap);
		if (!b)
			return FDR_REDACT_ENOMEM;
		memcpy(b, s->buf, s->len);
		memset(s->buf, 0, s->cap);
		free(s->buf);
		s->buf = b;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, in, n);
	s->len += n;
	count = scan(s->r, s->buf, s->len, 0, s->prev, &s->swallow, emit, ud, &consumed);
	return hold_rest(s, s->buf, consumed, s->len) ? FDR_REDACT_ENOMEM : count;
}

static long drain(fdr_redact_stream *s, fdr_redact_emit emit, void *ud)
{
	size_t consumed;
	long count = scan(s->r, s->buf, s->len, 1, s->prev, &s->swallow, emit, ud, &consumed);
	if (s->len)
		s->prev = s->buf[s->len - 1];
	if (s->buf)
		memset(s->buf, 0, s->len);
	s->len = 0;
	return count;
}

long fdr_redact_stream_flush(fdr_redact_stream *s, fdr_redact_emit emit, void *ud)
{
	return drain(s, emit, ud);
}

long fdr_redact_stream_finish(fdr_redact_stream *s, fdr_redact_emit emit, void *ud)
{
	long count = drain(s, emit, ud);
	s->prev = -1;
	s->swallow = 0;
	return count;
}

size_t fdr_redact_stream_pending(const fdr_redact_stream *s)
{
	return s->len;
}

void fdr_redact_stream_free(fdr_redact_stream *s)
{
	if (!s)
		return;
	if (s->buf) {
		memset(s->buf, 0, s->cap);
		free(s->buf);
	}
	free(s);
}

#ifndef FDR_NO_LUA
/* ---- Lua binding ---- */
#include "fdr.h"

#define REDACTOR_MT "foundry.redact.Redactor"

int luaopen_foundry_redact(lua_State *L);
#define STREAM_MT "foundry.redact.Stream"

typedef struct {
	fdr_redactor *r;
} lredactor;

typedef struct {
	fdr_redact_stream *s;
} lstream; /* user value 1: the Redactor userdata */

/* Output of one call. While everything emitted is the caller's input, in order from its
 * start, nothing is copied: unchanged text (the common case) comes back as the very
 * string that went in. */
struct obuf {
	char *p;
	size_t n, cap;
	int oom;
	const char *src; /* the input, or NULL */
	size_t direct;   /* bytes of src passed through so far, not yet copied */
	int copying;
};

static void obuf_append(struct obuf *o, const char *p, size_t n)
{
	if (o->oom)
		return;
	if (o->n + n > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;
		while (cap < o->n + n)
			cap *= 2;
		char *q = realloc(o->p, cap);
		if (!q) {
			o->oom = 1;
			return;
		}
		o->p = q;
		o->cap = cap;
	}
	memcpy(o->p + o->n, p, n);
	o->n += n;
}

static void obuf_emit(void *ud, const char *p, size_t n)
{
	struct obuf *o = ud;
	if (!o->copying) {
		if (o->src && p == o->src + o->direct) {
			o->direct += n;
			return;
		}
		o->copying = 1;
		if (o->direct) {
			o->cap = o->direct + n + 64;
			if (!(o->p = malloc(o->cap))) {
				o->oom = 1;
				return;
			}
			obuf_append(o, o->src, o->direct);
		}
	}
	obuf_append(o, p, n);
}

/* Push the output (or raise on out of memory); frees the buffer. `in` is the stack index
 * of the input string (0: none). */
static int obuf_push(lua_State *L, struct obuf *o, long count, int in, size_t inlen)
{
	if (o->oom || count < 0) {
		free(o->p);
		return luaL_error(L, "redact: out of memory");
	}
	if (!o->copying && in && o->direct == inlen)
		lua_pushvalue(L, in);
	else if (!o->copying)
		lua_pushlstring(L, o->src ? o->src : "", o->direct);
	else
		lua_pushlstring(L, o->p, o->n);
	free(o->p);
	lua_pushinteger(L, count);
	return 2;
}

static lredactor *check_redactor(lua_State *L, int idx)
{
	lredactor *lr = luaL_checkudata(L, idx, REDACTOR_MT);
	if (!lr->r)
		luaL_error(L, "redactor is closed");
	return lr;
}

void fdr_redactor_push(lua_State *L, fdr_redactor *r)
{
	luaL_requiref(L, "foundry._redact", luaopen_foundry_redact, 0);
	lua_pop(L, 1);
	lredactor *lr = lua_newuserdatauv(L, sizeof *lr, 0);
	lr->r = r;
	luaL_setmetatable(L, REDACTOR_MT);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* _redact.new({NAME = value, ...}, shapes) -> Redactor, {names too short to redact} */
static int l_new(lua_State *L)
{
	int has = !lua_isnoneornil(L, 1);
	if (has)
		luaL_checktype(L, 1, LUA_TTABLE);
	int with_shapes = lua_isnone(L, 2) ? 1 : lua_toboolean(L, 2);
	/* names sorted so the result does not depend on table order */
	size_t n = 0;
	if (has) {
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			if (lua_type(L, -2) != LUA_TSTRING)
				return luaL_error(L, "redact.new: secret names must be strings");
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "redact.new: secret '%s': expected a string value, got %s",
						  lua_tostring(L, -2), luaL_typename(L, -1));
			n++;
			lua_pop(L, 1);
		}
	}
	const char **names = lua_newuserdatauv(L, (n ? n : 1) * sizeof *names, 0);
	size_t k = 0;
	if (has) {
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			names[k++] = lua_tostring(L, -2); /* anchored by the table */
			lua_pop(L, 1);
		}
	}
	qsort(names, n, sizeof *names, name_cmp);
	fdr_redactor *r = fdr_redactor_new(with_shapes);
	if (!r)
		return luaL_error(L, "redact: out of memory");
	lredactor *lr = lua_newuserdatauv(L, sizeof *lr, 0);
	lr->r = r;
	luaL_setmetatable(L, REDACTOR_MT);
	lua_newtable(L);
	int skipped = 0;
	for (k = 0; k < n; k++) {
		lua_getfield(L, 1, names[k]);
		size_t len;
		const char *v = lua_tolstring(L, -1, &len);
		int rc = fdr_redactor_add_secret(r, names[k], v, len);
		lua_pop(L, 1);
		if (rc == FDR_REDACT_TOO_SHORT) {
			lua_pushstring(L, names[k]);
			lua_rawseti(L, -2, ++skipped);
		} else if (rc != 0) {
			return luaL_error(L, "redact: out of memory");
		}
	}
	if (build(r) != 0)
		return luaL_error(L, "redact: out of memory");
	return 2;
}

/* r:apply(text) -> redacted text, number of replacements */
static int r_apply(lua_State *L)
{
	lredactor *lr = check_redactor(L, 1);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	struct obuf o = {0};
	o.src = s;
	long count = fdr_redact(lr->r, s, len, obuf_emit, &o);
	return obuf_push(L, &o, count, 2, len);
}

/* r:stream() -> Stream */
static int r_stream(lua_State *L)
{
	lredactor *lr = check_redactor(L, 1);
	lstream *ls = lua_newuserdatauv(L, sizeof *ls, 1);
	ls->s = NULL;
	luaL_setmetatable(L, STREAM_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	if (!(ls->s = fdr_redact_stream_new(lr->r)))
		return luaL_error(L, "redact: out of memory");
	return 1;
}

static int r_names(lua_State *L)
{
	lredactor *lr = check_redactor(L, 1);
	lua_createtable(L, (int)lr->r->nlit, 0);
	int n = 0;
	for (size_t i = 0; i < lr->r->nlit; i++) {
		if (i > 0 && strcmp(lr->r->names[i], lr->r->names[i - 1]) == 0)
			continue; /* a part of the previous secret */
		lua_pushstring(L, lr->r->names[i]);
		lua_rawseti(L, -2, ++n);
	}
	return 1;
}

static int r_close(lua_State *L)
{
	lredactor *lr = luaL_checkudata(L, 1, REDACTOR_MT);
	fdr_redactor_free(lr->r);
	lr->r = NULL;
	return 0;
}

static int r_tostring(lua_State *L)
{
	lredactor *lr = luaL_checkudata(L, 1, REDACTOR_MT);
	if (!lr->r)
		lua_pushliteral(L, "foundry.redact.Redactor (closed)");
	else
		lua_pushfstring(L, "foundry.redact.Redactor (%d patterns)", (int)lr->r->nlit);
	return 1;
}

static lstream *check_stream(lua_State *L)
{
	lstream *ls = luaL_checkudata(L, 1, STREAM_MT);
	if (!ls->s)
		luaL_error(L, "redaction stream is closed");
	lua_getiuservalue(L, 1, 1);
	lredactor *lr = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (!lr || !lr->r)
		luaL_error(L, "redaction stream: its redactor is closed");
	return ls;
}

/* stream:push(chunk) -> output that is safe to show now, replacements */
static int s_push(lua_State *L)
{
	lstream *ls = check_stream(L);
	size_t len;
	const char *s = luaL_checklstring(L, 2, &len);
	struct obuf o = {0};
	o.src = s;
	long count = fdr_redact_stream_push(ls->s, s, len, obuf_emit, &o);
	return obuf_push(L, &o, count, 2, len);
}

static int s_finish(lua_State *L)
{
	lstream *ls = check_stream(L);
	struct obuf o = {0};
	long count = fdr_redact_stream_finish(ls->s, obuf_emit, &o);
	return obuf_push(L, &o, count, 0, 0);
}

static int s_flush(lua_State *L)
{
	lstream *ls = check_stream(L);
	struct obuf o = {0};
	long count = fdr_redact_stream_flush(ls->s, obuf_emit, &o);
	return obuf_push(L, &o, count, 0, 0);
}

static int s_pending(lua_State *L)
{
	lstream *ls = check_stream(L);
	lua_pushinteger(L, (lua_Integer)fdr_redact_stream_pending(ls->s));
	return 1;
}

static int s_close(lua_State *L)
{
	lstream *ls = luaL_checkudata(L, 1, STREAM_MT);
	fdr_redact_stream_free(ls->s);
	ls->s = NULL;
	return 0;
}

static int s_tostring(lua_State *L)
{
	lstream *ls = luaL_checkudata(L, 1, STREAM_MT);
	if (!ls->s)
		lua_pushliteral(L, "foundry.redact.Stream (closed)");
	else
		lua_pushfstring(L, "foundry.redact.Stream (%d bytes held)", (int)ls->s->len);
	return 1;
}

/* _redact.shapes() -> {label, ...} (unique, in table order) */
static int l_shapes(lua_State *L)
{
	lua_newtable(L);
	int n = 0;
	for (size_t i = 0; i < NSHAPES; i++) {
		int dup = 0;
		for (size_t j = 0; j < i; j++)
			dup |= strcmp(shapes[i].label, shapes[j].label) == 0;
		if (!dup) {
			lua_pushstring(L, shapes[i].label);
			lua_rawseti(L, -2, ++n);
		}
	}
	return 1;
}

int luaopen_foundry_redact(lua_State *L)
{
	static const luaL_Reg rmethods[] = {{"apply", r_apply}, {"stream", r_stream},
					    {"names", r_names}, {"close", r_close},
					    {NULL, NULL}};
	fdr_new_class(L, REDACTOR_MT, rmethods, r_close, r_tostring);
	static const luaL_Reg smethods[] = {{"push", s_push}, {"finish", s_finish},
					    {"flush", s_flush}, {"pending", s_pending},
					    {"close", s_close}, {NULL, NULL}};
	fdr_new_class(L, STREAM_MT, smethods, s_close, s_tostring);
	static const luaL_Reg fns[] = {{"new", l_new}, {"shapes", l_shapes}, {NULL, NULL}};
	luaL_newlib(L, fns);
	lua_pushinteger(L, FDR_REDACT_MIN_SECRET);
	lua_setfield(L, -2, "MIN_SECRET");
	return 1;
}
#endif
