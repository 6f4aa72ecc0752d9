/*
 * match.c - the compiled host matcher (see match.h) and path globs.
 *
 * Two open-addressing hash tables keyed by name: exact entries and wildcard suffixes
 * ("*.example.com" is stored under "example.com" and found by trying each suffix of the
 * host after a dot). Each key holds a short list of (port, value).
 */
#include "match.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	int port, value;
};

struct slot {
	char *key;         /* NULL when empty */
	size_t keylen;
	uint64_t hash;
	struct entry *ents;
	int nents;
};

struct table {
	struct slot *slots;
	size_t cap, used; /* cap is a power of two */
};

struct px_matcher {
	struct table exact, wild;
	int any_value;     /* "*" with any port, or -1 */
	struct entry *any; /* "*" with ports */
	int nany;
	size_t count, bytes;
};

static uint64_t hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static struct slot *find(const struct table *t, const char *key, size_t n, uint64_t h)
{
	if (!t->cap)
		return NULL;
	for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		struct slot *s = &t->slots[i];
		if (!s->key)
			return NULL;
		if (s->hash == h && s->keylen == n && memcmp(s->key, key, n) == 0)
			return s;
	}
}

static int grow(struct table *t, size_t *bytes)
{
	size_t cap = t->cap ? t->cap * 2 : 16;
	struct slot *slots = calloc(cap, sizeof *slots);
	if (!slots)
		return -1;
	for (size_t i = 0; i < t->cap; i++) {
		struct slot *s = &t->slots[i];
		if (!s->key)
			continue;
		size_t j = s->hash & (cap - 1);
		while (slots[j].key)
			j = (j + 1) & (cap - 1);
		slots[j] = *s;
	}
	*bytes += (cap - t->cap) * sizeof *slots;
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
	return 0;
}

static int table_add(struct table *t, const char *key, size_t n, int port, int value,
		     size_t *bytes)
{
	uint64_t h = hash(key, n);
	struct slot *s = find(t, key, n, h);
	if (!s) {
		if ((t->used + 1) * 4 > t->cap * 3 && grow(t, bytes) < 0)
			return -1;
		size_t i = h & (t->cap - 1);
		while (t->slots[i].key)
			i = (i + 1) & (t->cap - 1);
		s = &t->slots[i];
		s->key = malloc(n + 1);
		if (!s->key)
			return -1;
		memcpy(s->key, key, n);
		s->key[n] = 0;
		s->keylen = n;
		s->hash = h;
		t->used++;
		*bytes += n + 1;
	}
	struct entry *e = realloc(s->ents, (size_t)(s->nents + 1) * sizeof *e);
	if (!e)
		return -1;
	e[s->nents].port = port;
	e[s->nents].value = value;
	s->ents = e;
	s->nents++;
	*bytes += sizeof *e;
	return 0;
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->cap; i++) {
		free(t->slots[i].key);
		free(t->slots[i].ents);
	}
	free(t->slots);
}

px_matcher *px_matcher_new(void)
{
	px_matcher *m = calloc(1, sizeof *m);
	if (m) {
		m->any_value = -1;
		m->bytes = sizeof *m;
	}
	return m;
}

void px_matcher_free(px_matcher *m)
{
	if (!m)
		return;
	table_free(&m->exact);
	table_free(&m->wild);
	free(m->any);
	free(m);
}

int px_matcher_add(px_matcher *m, const char *pattern, int port, int value)
{
	size_t n = strlen(pattern);
	if (n == 0 || value < 0 || port < 0 || port > 65535)
		return -1;
	int rc;
	if (strcmp(pattern, "*") == 0) {
		if (port == 0) {
			if (m->any_value < 0 || value < m->any_value)
				m->any_value = value;
			rc = 0;
		} else {
			struct entry *e = realloc(m->any, (size_t)(m->nany + 1) * sizeof *e);
			if (!e)
				return -1;
			e[m->nany].port = port;
			e[m->nany].value = value;
			m->any = e;
			m->nany++;
			rc = 0;
		}
	} else if (n > 2 && pattern[0] == '*' && pattern[1] == '.') {
		if (strchr(pattern + 2, '*'))
			return -1;
		rc = table_add(&m->wild, pattern + 2, n - 2, port, value, &m->bytes);
	} else {
		if (strchr(pattern, '*'))
			return -1;
		rc = table_add(&m->exact, pattern, n, port, value, &m->bytes);
	}
	if (rc == 0)
		m->count++;
	return rc;
}

static int best(const struct slot *s, int port, int cur)
{
	if (!s)
		return cur;
	for (int i = 0; i < s->nents; i++)
		if ((s->ents[i].port == 0 || s->ents[i].port == port) &&
		    (cur < 0 || s->ents[i].value < cur))
			cur = s->ents[i].value;
	return cur;
}

int px_matcher_lookup(const px_matcher *m, const char *host, int port)
{
	size_t n = strlen(host);
	int v = m->any_value;
	for (int i = 0; i < m->nany; i++)
		if (m->any[i].port == port && (v < 0 || m->any[i].value < v))
			v = m->any[i].value;
	v = best(find(&m->exact, host, n, hash(host, n)), port, v);
	if (m->wild.used) {
		for (const char *p = memchr(host, '.', n); p; p = memchr(p + 1, '.', n - (size_t)(p + 1 - host))) {
			size_t k = n - (size_t)(p + 1 - host);
			if (k == 0)
				break;
			v = best(find(&m->wild, p + 1, k, hash(p + 1, k)), port, v);
		}
	}
	return v;
}

size_t px_matcher_count(const px_matcher *m)
{
	return m->count;
}

size_t px_matcher_bytes(const px_matcher *m)
{
	return m->bytes;
}

/* An NFA simulation over the pattern's positions: time O(path x pattern), whatever the
 * stars, so a path chosen by a sandbox cannot make matching slow. */
enum { G_LIT, G_ONE, G_STAR, G_DSTAR };
#define GLOB_MAX 512

static void closure(const unsigned char *kind, int nt, unsigned char *set)
{
	for (int i = 0; i < nt; i++)
		if (set[i] && (kind[i] == G_STAR || kind[i] == G_DSTAR))
			set[i + 1] = 1;
}

int px_glob_match(const char *pat, const char *s, size_t n)
{
	unsigned char kind[GLOB_MAX], lit[GLOB_MAX];
	int nt = 0;
	for (const char *p = pat; *p; p++) {
		if (nt == GLOB_MAX)
			return 0;
		if (p[0] == '*' && p[1] == '*') {
			kind[nt] = G_DSTAR;
			p++;
			while (p[1] == '*')
				p++;
		} else if (*p == '*') {
			kind[nt] = G_STAR;
		} else if (*p == '?') {
			kind[nt] = G_ONE;
		} else {
			kind[nt] = G_LIT;
			lit[nt] = (unsigned char)*p;
		}
		nt++;
	}
	unsigned char a[GLOB_MAX + 1], b[GLOB_MAX + 1];
	unsigned char *cur = a, *next = b;
	memset(cur, 0, (size_t)nt + 1);
	cur[0] = 1;
	closure(kind, nt, cur);
	for (size_t k = 0; k < n; k++) {
		unsigned char ch = (unsigned char)s[k];
		int any = 0;
		memset(next, 0, (size_t)nt + 1);
		for (int i = 0; i < nt; i++) {
			if (!cur[i])
				continue;
			switch (kind[i]) {
			case G_LIT:
				if (lit[i] == ch)
					next[i + 1] = any = 1;
				break;
			case G_ONE:
				if (ch != '/')
					next[i + 1] = any = 1;
				break;
			case G_STAR:
				if (ch != '/')
					next[i] = any = 1;
				break;
			case G_DSTAR:
				next[i] = any = 1;
				break;
			}
		}
		if (!any)
			return 0;
		closure(kind, nt, next);
		unsigned char *t = cur;
		cur = next;
		next = t;
	}
	return cur[nt];
}
