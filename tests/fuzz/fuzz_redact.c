/*
 * libFuzzer target: the redactor. Input: [secret count][chunk seed] secrets separated by
 * 0xff, then the text. Checks that a stream with fuzzer-chosen chunk sizes gives exactly
 * what a whole-text redaction gives, and that no secret survives either: no occurrence of
 * a secret in the output lies wholly outside the "[REDACTED:...]" markers. (One that
 * overlaps a marker is made of the marker's own bytes — a secret "]\n\n" is "formed" by
 * every marker followed by two newlines — and is no leak.)
 * Built by tests/fuzz/run.sh.
 */
#include "redact.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct buf {
	char *p;
	size_t n, cap;
};

static void emit(void *ud, const char *p, size_t n)
{
	struct buf *b = ud;
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 16;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

/* Does [a, b) overlap a "[REDACTED:...]" marker of out? */
static int in_marker(const char *out, size_t n, size_t a, size_t b)
{
	static const char open[] = "[REDACTED:";
	for (const char *p = out; (p = memmem(p, n - (size_t)(p - out), open, sizeof open - 1));) {
		size_t m0 = (size_t)(p - out);
		const char *close = memchr(p, ']', n - m0);
		size_t m1 = close ? (size_t)(close - out) + 1 : n;
		if (m0 < b && a < m1)
			return 1;
		if (m0 >= b)
			return 0;
		p = out + m1;
		if (m1 >= n)
			break;
	}
	return 0;
}

/* Is there an occurrence of sec in out outside every marker? */
static int leaks(const char *out, size_t n, const uint8_t *sec, size_t len)
{
	for (size_t off = 0; off + len <= n;) {
		const char *p = memmem(out + off, n - off, sec, len);
		if (!p)
			return 0;
		size_t a = (size_t)(p - out);
		if (!in_marker(out, n, a, a + len))
			return 1;
		off = a + 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned nsec = data[0] % 8, seed = data[1];
	size_t pos = 2;
	fdr_redactor *r = fdr_redactor_new(seed & 1);
	const uint8_t *sec[8];
	size_t seclen[8];
	unsigned added = 0;
	for (unsigned i = 0; i < nsec && pos < size; i++) {
		const uint8_t *end = memchr(data + pos, 0xff, size - pos);
		size_t len = end ? (size_t)(end - (data + pos)) : size - pos;
		char name[8] = {'s', (char)('0' + i), 0};
		int rc = (seed & 2) ? fdr_redactor_add_secret(r, name, data + pos, len)
				    : fdr_redactor_add(r, name, data + pos, len);
		if (rc == FDR_REDACT_OK) {
			sec[added] = data + pos;
			seclen[added++] = len;
		}
		pos += len + (end ? 1 : 0);
	}
	const uint8_t *text = data + pos;
	size_t tlen = size - pos;
	struct buf whole = {0}, streamed = {0};
	if (fdr_redact(r, text, tlen, emit, &whole) < 0)
		abort();
	fdr_redact_stream *s = fdr_redact_stream_new(r);
	unsigned x = seed * 2654435761u + 1;
	for (size_t off = 0; off < tlen;) {
		x = x * 1103515245u + 12345u;
		size_t n = 1 + (x >> 16) % 17;
		if (n > tlen - off)
			n = tlen - off;
		fdr_redact_stream_push(s, text + off, n, emit, &streamed);
		off += n;
	}
	fdr_redact_stream_finish(s, emit, &streamed);
	fdr_redact_stream_free(s);
	if (whole.n != streamed.n || (whole.n && memcmp(whole.p, streamed.p, whole.n) != 0))
		abort();
	for (unsigned i = 0; i < added; i++)
		if (whole.n && leaks(whole.p, whole.n, sec[i], seclen[i]))
			abort();
	free(whole.p);
	free(streamed.p);
	fdr_redactor_free(r);
	return 0;
}
