/*
 * ctest.h - the smallest C test harness: CHECK(cond), CHECK_EQ_INT(a, b),
 * CHECK_EQ_STR(a, b); main() calls RUN(test_fn) for each and returns ctest_done(),
 * which prints "N passed, N failed" (read by tests/run.sh).
 */
#ifndef CTEST_H
#define CTEST_H
#include <stdio.h>
#include <string.h>

static int ctest_passed, ctest_failed, ctest_cur_failed;

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                              \
			ctest_cur_failed = 1;                                        \
		}                                                                    \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                           \
	do {                                                                         \
		long long ctest_a = (long long)(a), ctest_b = (long long)(b);        \
		if (ctest_a != ctest_b) {                                            \
			fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, \
				__LINE__, #a, ctest_a, ctest_b);                     \
			ctest_cur_failed = 1;                                        \
		}                                                                    \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                           \
	do {                                                                         \
		const char *ctest_a = (a), *ctest_b = (b);                           \
		if (!ctest_a || !ctest_b || strcmp(ctest_a, ctest_b) != 0) {         \
			fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n",    \
				__FILE__, __LINE__, #a, ctest_a ? ctest_a : "(null)", \
				ctest_b ? ctest_b : "(null)");                       \
			ctest_cur_failed = 1;                                        \
		}                                                                    \
	} while (0)

#define RUN(fn)                                                                      \
	do {                                                                         \
		ctest_cur_failed = 0;                                                \
		fn();                                                                \
		if (ctest_cur_failed) {                                              \
			ctest_failed++;                                              \
			fprintf(stderr, "FAIL %s\n", #fn);                           \
		} else {                                                             \
			ctest_passed++;                                              \
		}                                                                    \
	} while (0)

static inline int ctest_done(void)
{
	printf("%d passed, %d failed\n", ctest_passed, ctest_failed);
	return ctest_failed ? 1 : 0;
}
#endif
