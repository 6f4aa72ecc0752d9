/* The redaction engine: secrets, token shapes, overlaps, streams split anywhere. */
#include "ctest.h"
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
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
}

static char *apply(fdr_redactor *r, const char *in, size_t len, long *count)
{
	struct buf b = {0};
	emit(&b, "", 0);
	long c = fdr_redact(r, in, len, emit, &b);
	if (count)
		*count = c;
	return b.p;
}

static char *apply_s(fdr_redactor *r, const char *s)
{
	return apply(r, s, strlen(s), NULL);
}

/* Stream `in` in chunks of the sizes produced by `next` (cycled). */
static char *stream(fdr_redactor *r, const char *in, size_t len, const size_t *sizes,
		    size_t nsizes)
{
	struct buf b = {0};
	emit(&b, "", 0);
	fdr_redact_stream *s = fdr_redact_stream_new(r);
	size_t off = 0, k = 0;
	while (off < len) {
		size_t n = sizes[k++ % nsizes];
		if (n > len - off)
			n = len - off;
		fdr_redact_stream_push(s, in + off, n, emit, &b);
		off += n;
	}
	fdr_redact_stream_finish(s, emit, &b);
	fdr_redact_stream_free(s);
	return b.p;
}

#define EXPECT_REDACT(r, in, want)                                                           \
	do {                                                                                 \
		char *got_ = apply_s(r, in);                                                 \
		CHECK_EQ_STR(got_, want);                                                    \
		free(got_);                                                                  \
	} while (0)

static void test_secrets(void)
{
	fdr_redactor *r = fdr_redactor_new(0);
	CHECK_EQ_INT(fdr_redactor_add(r, "KEY", "s3cr3t-value", 12), FDR_REDACT_OK);
	CHECK_EQ_INT(fdr_redactor_add(r, "PW", "hunter2!", 8), FDR_REDACT_OK);
	CHECK_EQ_INT(fdr_redactor_add(r, "TINY", "abc", 3), FDR_REDACT_TOO_SHORT);
	EXPECT_REDACT(r, "token=s3cr3t-value; pw=hunter2!", "token=[REDACTED:KEY]; pw=[REDACTED:PW]");
	EXPECT_REDACT(r, "s3cr3t-values3cr3t-value", "[REDACTED:KEY][REDACTED:KEY]");
	EXPECT_REDACT(r, "s3cr3t-vs3cr3t-value", "s3cr3t-v[REDACTED:KEY]");
	EXPECT_REDACT(r, "nothing here, abc", "nothing here, abc");
	EXPECT_REDACT(r, "", "");
	EXPECT_REDACT(r, "s3cr3t-valu", "s3cr3t-valu");
	/* shapes are off: a key-shaped string passes */
	EXPECT_REDACT(r, "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	CHECK_EQ_INT(fdr_redactor_count(r), 2);
	CHECK_EQ_INT(fdr_redactor_max_len(r), 12);
	CHECK_EQ_INT(fdr_redactor_add(r, "LATE", "after-use", 9), FDR_REDACT_EINVAL);
	fdr_redactor_free(r);
}

static void test_binary_values(void)
{
	fdr_redactor *r = fdr_redactor_new(0);
	const char v[] = {'a', 0, 'b', '\n', (char)0xff, 'c'};
	CHECK_EQ_INT(fdr_redactor_add(r, "BIN", v, sizeof v), 0);
	char in[32];
	memcpy(in, "x", 1);
	memcpy(in + 1, v, sizeof v);
	memcpy(in + 1 + sizeof v, "y", 1);
	long count;
	char *got = apply(r, in, sizeof v + 2, &count);
	CHECK_EQ_STR(got, "x[REDACTED:BIN]y");
	CHECK_EQ_INT(count, 1);
	free(got);
	fdr_redactor_free(r);
}

static void test_leftmost_longest_and_overlap(void)
{
	fdr_redactor *r = fdr_redactor_new(0);
	fdr_redactor_add(r, "SHORT", "abcd", 4);
	fdr_redactor_add(r, "LONG", "abcdefgh", 8);
	fdr_redactor_add(r, "TAIL", "ghijklmn", 8);
	/* the longest at the leftmost position wins */
	EXPECT_REDACT(r, "x abcdefgh y", "x [REDACTED:LONG] y");
	EXPECT_REDACT(r, "x abcdeXgh y", "x [REDACTED:SHORT]eXgh y");
	/* LONG and TAIL overlap on "gh": one replacement, no byte of either left */
	EXPECT_REDACT(r, "<abcdefghijklmn>", "<[REDACTED:LONG]>");
	fdr_redactor_free(r);
}

static void test_shapes(void)
{
	fdr_redactor *r = fdr_redactor_new(1);
	EXPECT_REDACT(r, "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz_0123456789-x end",
		      "key [REDACTED:anthropic_key] end");
	EXPECT_REDACT(r, "OPENAI=sk-proj-abcdefghijklmnopqrstuvwxyz012345",
		      "OPENAI=[REDACTED:openai_key]");
	EXPECT_REDACT(r, "task-abcdefghijklmnopqrstuvwxyz012345 sk-short",
		      "task-abcdefghijklmnopqrstuvwxyz012345 sk-short");
	EXPECT_REDACT(r, "ghp_0123456789abcdefghijklmnopqrstuvwxyz.", "[REDACTED:github_token].");
	EXPECT_REDACT(r, "gho_0123456789abcdefghijklmnopqrstuvwxyz ghs_0123456789abcdefghijklmnopqrstuvwxyz",
		      "[REDACTED:github_token] [REDACTED:github_token]");
	EXPECT_REDACT(r, "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
		      "[REDACTED:github_pat]");
	EXPECT_REDACT(r, "aws AKIAIOSFODNN7EXAMPLE here", "aws [REDACTED:aws_access_key] here");
	EXPECT_REDACT(r, "AKIAshort", "AKIAshort");
	EXPECT_REDACT(r, "xoxb-123456789012-abcdefghijkl", "[REDACTED:slack_token]");
	EXPECT_REDACT(r, "g=AIzaSyA-1234567890abcdefghijklmnopqrstu", "g=[REDACTED:google_api_key]");
	EXPECT_REDACT(r,
		      "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok",
		      "jwt [REDACTED:jwt] ok");
	EXPECT_REDACT(r, "eyJhbGciOiJIUzI1NiJ9 alone", "eyJhbGciOiJIUzI1NiJ9 alone");
	EXPECT_REDACT(r, "Authorization: Bearer abc.DEF-123_456~+/=\r\n",
		      "Authorization: Bearer [REDACTED:bearer]\r\n");
	EXPECT_REDACT(r, "authorization: bearer abcdefgh12", "authorization: bearer [REDACTED:bearer]");
	EXPECT_REDACT(r, "the Bearer of bad news", "the Bearer of bad news");
	EXPECT_REDACT(r, "ask-ghp_ a", "ask-ghp_ a");
	fdr_redactor_free(r);
}

static void test_named_secret_beats_shape(void)
{
	fdr_redactor *r = fdr_redactor_new(1);
	const char *key = "sk-ant-api03-realkeyrealkeyrealkey0123";
	fdr_redactor_add(r, "anthropic", key, strlen(key));
	EXPECT_REDACT(r, "x-api-key: sk-ant-api03-realkeyrealkeyrealkey0123\n",
		      "x-api-key: [REDACTED:anthropic]\n");
	EXPECT_REDACT(r, "Authorization: Bearer sk-ant-api03-realkeyrealkeyrealkey0123\n",
		      "Authorization: Bearer [REDACTED:anthropic]\n");
	fdr_redactor_free(r);
}

/* A shape keeps "Bearer " visible: a secret that is part of that prefix, or starts in
 * it, must not stay visible with it (found by fuzz_redact). */
static void test_secret_inside_kept_prefix(void)
{
	fdr_redactor *r = fdr_redactor_new(1);
	fdr_redactor_add(r, "a", "Beare", 5);
	fdr_redactor_add(r, "b", "arer lH", 7);
	char *out = apply_s(r, "Bearer lHeareYYYYYYunter2");
	CHECK(strstr(out, "Beare") == NULL);
	CHECK(strstr(out, "arer lH") == NULL);
	free(out);
	out = apply_s(r, "x: Bearer Zm9vYmFyYmF6cXV4 ok");
	CHECK(strstr(out, "Beare") == NULL);
	free(out);
	fdr_redactor_free(r);
	/* without a secret there, the prefix stays: "Bearer [REDACTED:bearer]" */
	r = fdr_redactor_new(1);
	EXPECT_REDACT(r, "Authorization: Bearer Zm9vYmFyYmF6cXV4\n", "Authorization: Bearer [REDACTED:bearer]\n");
	fdr_redactor_free(r);
}

static void test_parts(void)
{
	fdr_redactor *r = fdr_redactor_new(0);
	const char *blob = "{\"accessToken\":\"tok0123456789abcdefXYZ\",\"scopes\":[\"user:inference\"],"
			   "\"type\":\"application/json\"}";
	CHECK_EQ_INT(fdr_redactor_add_secret(r, "creds", blob, strlen(blob)), 0);
	/* the token inside the JSON is caught on its own; plain words are not */
	EXPECT_REDACT(r, "Authorization: tok0123456789abcdefXYZ", "Authorization: [REDACTED:creds]");
	EXPECT_REDACT(r, "Content-Type: application/json", "Content-Type: application/json");
	char *got = apply_s(r, blob);
	CHECK_EQ_STR(got, "[REDACTED:creds]");
	free(got);
	fdr_redactor_free(r);
}

static void test_split_across_chunks(void)
{
	fdr_redactor *r = fdr_redactor_new(1);
	fdr_redactor_add(r, "KEY", "correct-horse-battery", 21);
	const char *in = "before correct-horse-battery after Bearer abcdefghijklmnop!";
	size_t len = strlen(in);
	char *want = apply(r, in, len, NULL);
	CHECK_EQ_STR(want, "before [REDACTED:KEY] after Bearer [REDACTED:bearer]!");
	for (size_t cut = 0; cut <= len; cut++) {
		size_t sizes[2] = {cut ? cut : 1, len};
		char *got = stream(r, in, len, sizes, 2);
		CHECK_EQ_STR(got, want);
		free(got);
	}
	size_t one = 1;
	char *got = stream(r, in, len, &one, 1);
	CHECK_EQ_STR(got, want);
	free(got);
	free(want);
	fdr_redactor_free(r);
}

static void test_stream_holds_little(void)
{
	fdr_redactor *r = fdr_redactor_new(1);
	fdr_redactor_add(r, "KEY", "zq-secret-value", 15);
	fdr_redact_stream *s = fdr_redact_stream_new(r);
	struct buf b = {0};
	emit(&b, "", 0);
	fdr_redact_stream_push(s, "plain text line\n", 16, emit, &b);
	CHECK_EQ_STR(b.p, "plain text line\n");
	CHECK_EQ_INT(fdr_redact_stream_pending(s), 0);
	/* a possible start of the secret is held back, nothing else */
	fdr_redact_stream_push(s, "value zq-sec", 12, emit, &b);
	CHECK_EQ_STR(b.p, "plain text line\nvalue ");
	CHECK_EQ_INT(fdr_redact_stream_pending(s), 6);
	fdr_redact_stream_push(s, "ret-value!", 10, emit, &b);
	CHECK_EQ_STR(b.p, "plain text line\nvalue [REDACTED:KEY]!");
	/* flush shows a held partial match; the stream continues after it */
	fdr_redact_stream_push(s, " zq-se", 6, emit, &b);
	fdr_redact_stream_flush(s, emit, &b);
	CHECK_EQ_STR(b.p, "plain text line\nvalue [REDACTED:KEY]! zq-se");
	fdr_redact_stream_finish(s, emit, &b);
	fdr_redact_stream_free(s);
	free(b.p);
	fdr_redactor_free(r);
}

static void test_long_token_in_stream(void)
{
	fdr_redactor *r = fdr_redactor_new(1);
	size_t len = 7 + 3 * FDR_REDACT_SHAPE_MAX + 5;
	char *in = malloc(len + 1);
	memcpy(in, "Bearer ", 7);
	for (size_t i = 7; i < len - 5; i++)
		in[i] = "abcdefghij0123456789"[i % 20];
	memcpy(in + len - 5, " end.", 5);
	in[len] = 0;
	char *want = apply(r, in, len, NULL);
	CHECK_EQ_STR(want, "Bearer [REDACTED:bearer] end.");
	size_t sizes[] = {1000, 4096, 1, 65536};
	char *got = stream(r, in, len, sizes, 4);
	CHECK_EQ_STR(got, want);
	free(got);
	free(want);
	free(in);
	fdr_redactor_free(r);
}

/* Random texts with secrets and shapes inserted: whatever the chunking, a stream gives
 * exactly what apply gives, and no secret value survives. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

static void test_random_streams_match_apply(void)
{
	enum { NSEC = 40 };
	char secrets[NSEC][48];
	fdr_redactor *r = fdr_redactor_new(1);
	const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
	for (int i = 0; i < NSEC; i++) {
		size_t n = 6 + next() % 40;
		for (size_t k = 0; k < n; k++)
			secrets[i][k] = alphabet[next() % (sizeof alphabet - 1)];
		secrets[i][n] = 0;
		/* some secrets share prefixes, some contain others */
		if (i % 7 == 3)
			memcpy(secrets[i], secrets[i - 1], 5);
		char name[32];
		snprintf(name, sizeof name, "S%d", i);
		fdr_redactor_add(r, name, secrets[i], strlen(secrets[i]));
	}
	const char *fill[] = {"the ", "log ", "line\n", "Bearer ", "sk-", "ghp_", "eyJ", "a", "b", ".",
			      "ask", " ", "AKIA", "x"};
	int iterations = 300;
	for (int it = 0; it < iterations; it++) {
		struct buf text = {0};
		emit(&text, "", 0);
		int parts = 5 + (int)(next() % 60);
		for (int p = 0; p < parts; p++) {
			if (next() % 3 == 0) {
				const char *s = secrets[next() % NSEC];
				size_t n = strlen(s);
				if (next() % 5 == 0)
					n = 1 + next() % n; /* a partial secret: not redacted */
				emit(&text, s, n);
			} else {
				const char *f = fill[next() % (sizeof fill / sizeof fill[0])];
				emit(&text, f, strlen(f));
			}
		}
		char *want = apply(r, text.p, text.n, NULL);
		for (int i = 0; i < NSEC; i++)
			if (memmem(want, strlen(want), secrets[i], strlen(secrets[i]))) {
				fprintf(stderr, "secret S%d survived in: %s\n", i, want);
				CHECK(0);
			}
		size_t sizes[4];
		for (int k = 0; k < 4; k++)
			sizes[k] = 1 + next() % (it % 2 ? 3 : 50);
		char *got = stream(r, text.p, text.n, sizes, 4);
		if (strcmp(got, want) != 0) {
			fprintf(stderr, "stream differs for input: %s\n  apply:  %s\n  stream: %s\n",
				text.p, want, got);
			CHECK(0);
		}
		free(got);
		free(want);
		free(text.p);
	}
	fdr_redactor_free(r);
}

static void test_many_secrets_grow(void)
{
	fdr_redactor *r = fdr_redactor_new(0);
	char v[128];
	for (int i = 0; i < 300; i++) {
		snprintf(v, sizeof v, "secret-number-%04d-%0100d", i, i);
		char name[32];
		snprintf(name, sizeof name, "N%d", i);
		CHECK_EQ_INT(fdr_redactor_add(r, name, v, strlen(v)), 0);
	}
	snprintf(v, sizeof v, "secret-number-%04d-%0100d", 299, 299);
	char in[256];
	snprintf(in, sizeof in, "<%s>", v);
	EXPECT_REDACT(r, in, "<[REDACTED:N299]>");
	fdr_redactor_free(r);
}

int main(void)
{
	RUN(test_secrets);
	RUN(test_binary_values);
	RUN(test_leftmost_longest_and_overlap);
	RUN(test_shapes);
	RUN(test_named_secret_beats_shape);
	RUN(test_secret_inside_kept_prefix);
	RUN(test_parts);
	RUN(test_split_across_chunks);
	RUN(test_stream_holds_little);
	RUN(test_long_token_in_stream);
	RUN(test_random_streams_match_apply);
	RUN(test_many_secrets_grow);
	return ctest_done();
}
