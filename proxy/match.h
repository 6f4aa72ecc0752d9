/*
 * match.h - a compiled host matcher for allow and deny lists: exact names, "*." wildcard
 * suffixes, "*" (any host) and an optional port per entry. A lookup costs one hash probe
 * per label of the host, whatever the number of entries.
 */
#ifndef PX_MATCH_H
#define PX_MATCH_H

#include <stddef.h>

typedef struct px_matcher px_matcher;

/* Returns NULL when out of memory. Free with px_matcher_free. */
px_matcher *px_matcher_new(void);
void px_matcher_free(px_matcher *m);

/* Add `pattern` (canonical lower-case: "example.com", "*.example.com", "*", or an IP
 * address's canonical text) for `port` (0: any port) with `value` (>= 0). A lookup returns
 * the smallest value among the entries that match, so add rules with their position in
 * the list. Returns 0, or -1 for a malformed pattern or when out of memory. */
int px_matcher_add(px_matcher *m, const char *pattern, int port, int value);

/* The smallest value of the entries matching the canonical host and port, or -1. */
int px_matcher_lookup(const px_matcher *m, const char *host, int port);

size_t px_matcher_count(const px_matcher *m);
/* Bytes held by the matcher (for engine statistics). */
size_t px_matcher_bytes(const px_matcher *m);

/* Does the glob `pat` match `s`? '*' matches any run of bytes except '/', '**' any run
 * including '/', '?' one byte except '/'. Used for path rules. */
int px_glob_match(const char *pat, const char *s, size_t n);

#endif
