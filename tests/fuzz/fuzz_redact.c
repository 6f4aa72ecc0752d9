/*
 * libFuzzer target: the redactor. Input: [secret count][chunk seed] secrets separated by
 * 0xff, then the text. Checks that a stream with fuzzer-chosen chunk sizes gives exactly
 * what a whole-text redaction gives, and that no secret survives either.
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
		if (whole.n && memmem(whole.p, whole.n, sec[i], seclen[i]))
			abort();
	free(whole.p);
	free(streamed.p);
	fdr_redactor_free(r);
	return 0;
}
