/* proxy/match.c: the compiled allowlist matcher and path globs. */
#include "ctest.h"
#include "match.h"

#include <stdlib.h>
#include <time.h>

static void test_exact_and_wildcard(void)
{
	px_matcher *m = px_matcher_new();
	CHECK_EQ_INT(px_matcher_add(m, "api.github.com", 0, 0), 0);
	CHECK_EQ_INT(px_matcher_add(m, "*.example.com", 0, 1), 0);
	CHECK_EQ_INT(px_matcher_add(m, "internal.test", 8443, 2), 0);
	CHECK_EQ_INT(px_matcher_lookup(m, "api.github.com", 443), 0);
	CHECK_EQ_INT(px_matcher_lookup(m, "github.com", 443), -1);
	CHECK_EQ_INT(px_matcher_lookup(m, "xapi.github.com", 443), -1);
	CHECK_EQ_INT(px_matcher_lookup(m, "a.example.com", 443), 1);
	CHECK_EQ_INT(px_matcher_lookup(m, "a.b.example.com", 80), 1);
	CHECK_EQ_INT(px_matcher_lookup(m, "example.com", 443), -1);
	CHECK_EQ_INT(px_matcher_lookup(m, "badexample.com", 443), -1);
	CHECK_EQ_INT(px_matcher_lookup(m, "internal.test", 8443), 2);
	CHECK_EQ_INT(px_matcher_lookup(m, "internal.test", 443), -1);
	CHECK_EQ_INT(px_matcher_add(m, "a*.b", 0, 3), -1);
	CHECK_EQ_INT(px_matcher_add(m, "*.*.b", 0, 3), -1);
	CHECK_EQ_INT(px_matcher_count(m), 3);
	px_matcher_free(m);
}

static void test_lowest_value_wins(void)
{
	px_matcher *m = px_matcher_new();
	px_matcher_add(m, "*.example.com", 0, 5);
	px_matcher_add(m, "a.example.com", 0, 7);
	px_matcher_add(m, "*", 443, 9);
	CHECK_EQ_INT(px_matcher_lookup(m, "a.example.com", 443), 5);
	CHECK_EQ_INT(px_matcher_lookup(m, "elsewhere.org", 443), 9);
	CHECK_EQ_INT(px_matcher_lookup(m, "elsewhere.org", 80), -1);
	px_matcher_add(m, "*", 0, 1);
	CHECK_EQ_INT(px_matcher_lookup(m, "a.example.com", 443), 1);
	px_matcher_free(m);
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The goal: <= 2 us p99 per decision with 1 000 rules. */
static void test_thousand_rules_fast(void)
{
	px_matcher *m = px_matcher_new();
	char name[64];
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, i % 2 ? "*.svc%d.example.org" : "host%d.example.net", i);
		CHECK_EQ_INT(px_matcher_add(m, name, i % 3 ? 0 : 443, i), 0);
	}
	enum { N = 20000 };
	static double t[N];
	int hits = 0;
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, i % 2 ? "a.b.svc%d.example.org" : "host%d.example.net",
			 i % 1000);
		double t0 = now_ns();
		hits += px_matcher_lookup(m, name, 443) >= 0;
		t[i] = now_ns() - t0;
	}
	qsort(t, N, sizeof t[0], cmp);
	double p99 = t[N * 99 / 100];
	printf("matcher: 1000 rules, p50 %.0f ns, p99 %.0f ns\n", t[N / 2], p99);
	CHECK(hits > N / 2);
	/* The 2 us goal is the benchmark's (bench/proxy.sh); here only an algorithmic blowup
	 * (a scan of every rule, backtracking) fails, with room for loaded and valgrind runs. */
	CHECK(getenv("FOUNDRY_VALGRIND") || p99 < 50000);
	px_matcher_free(m);
}

static void test_globs(void)
{
	CHECK(px_glob_match("/repos/*/pulls", "/repos/x/pulls", 14));
	CHECK(!px_glob_match("/repos/*/pulls", "/repos/x/y/pulls", 16));
	CHECK(px_glob_match("/repos/**", "/repos/x/y/pulls", 16));
	CHECK(px_glob_match("/**/info/refs", "/o/r.git/info/refs", 18));
	CHECK(px_glob_match("/*/*.git/**", "/o/r.git/git-upload-pack", 24));
	CHECK(px_glob_match("/v?/models", "/v1/models", 10));
	CHECK(!px_glob_match("/v?/models", "/v12/models", 11));
	CHECK(px_glob_match("*", "", 0));
	CHECK(!px_glob_match("/a", "/ab", 3));
	CHECK(px_glob_match("/**/x/*.git", "/a/b/x/r.git", 12));
	CHECK(px_glob_match("/a/**", "/a/", 3));
	CHECK(!px_glob_match("/a/*", "/a/b/c", 6));
}

/* A path chosen by the sandbox must not make matching slow (found by fuzz_addr: the first
 * matcher backtracked over every star). */
static void test_glob_linear(void)
{
	enum { N = 60000 };
	static char path[N];
	memset(path, 'a', N);
	double t0 = now_ns();
	CHECK(!px_glob_match("/**a**a**a**a**a**a**b", path, N));
	CHECK(!px_glob_match("*a*a*a*a*a*a*a*a*b", path, N));
	double ms = (now_ns() - t0) / 1e6;
	printf("glob: pathological 60 kB path in %.1f ms\n", ms);
	CHECK(ms < 200);
}

int main(void)
{
	RUN(test_exact_and_wildcard);
	RUN(test_lowest_value_wins);
	RUN(test_thousand_rules_fast);
	RUN(test_globs);
	RUN(test_glob_linear);
	return ctest_done();
}
