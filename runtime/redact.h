/*
 * redact.h - the redaction engine (module foundry._redact): replaces loaded secret values
 * with "[REDACTED:NAME]" and well-known token shapes (sk-ant-..., ghp_..., AKIA..., JWTs,
 * "Bearer ...") with "[REDACTED:<shape>]", in whole texts or in streams whose chunks may
 * split a secret anywhere.
 *
 * Matching is leftmost-longest; overlapping matches merge into one replacement (so no part
 * of a secret that overlaps another survives). A stream holds back only the bytes that could
 * still be the start of a match, so its output for any chunking equals fdr_redact() of the
 * concatenated input.
 *
 * This file's C API does not depend on Lua (the fuzzer and the proxy use it directly).
 */
#ifndef FDR_REDACT_H
#define FDR_REDACT_H

#include <stddef.h>

typedef struct fdr_redactor fdr_redactor;
typedef struct fdr_redact_stream fdr_redact_stream;

/* Receives output: `n` bytes at `p` (borrowed for the call only). */
typedef void (*fdr_redact_emit)(void *ud, const char *p, size_t n);

enum {
	FDR_REDACT_OK = 0,
	FDR_REDACT_ENOMEM = -1,
	FDR_REDACT_TOO_SHORT = -2, /* value shorter than FDR_REDACT_MIN_SECRET: not added */
	FDR_REDACT_EINVAL = -3,    /* bad name, or the redactor is already in use */
};

/* Secrets shorter than this are not redacted (they would match everywhere). */
#define FDR_REDACT_MIN_SECRET 4
/* A token shape longer than this is cut here (streams hold back at most this much). */
#define FDR_REDACT_SHAPE_MAX 16384

/* A new, empty redactor; `shapes` enables the token shapes. NULL when out of memory.
 * Free with fdr_redactor_free. */
fdr_redactor *fdr_redactor_new(int shapes);
/* Add a secret: the value is copied into locked memory (wiped when freed); `name` (copied)
 * labels its replacement. Only before the first use (redact or stream). */
int fdr_redactor_add(fdr_redactor *r, const char *name, const void *value, size_t len);
/* Add a secret and, when it is structured (a JSON credentials file, "user:token", an .env
 * file), each token-like part of it too: every run of at least 16 of A-Za-z0-9._~+/=-
 * holding a letter and a digit, so a token that appears alone is still caught. All parts
 * are labelled `name`. Returns as fdr_redactor_add for the whole value. */
int fdr_redactor_add_secret(fdr_redactor *r, const char *name, const void *value, size_t len);
/* Number of secrets added, and the length of the longest. */
size_t fdr_redactor_count(const fdr_redactor *r);
size_t fdr_redactor_max_len(const fdr_redactor *r);
/* Name of secret i (0-based), borrowed from r. */
const char *fdr_redactor_name(const fdr_redactor *r, size_t i);
/* Wipe and free. NULL is fine. */
void fdr_redactor_free(fdr_redactor *r);

/* Redact `len` bytes at `in`, emitting the result. Returns the number of replacements,
 * or FDR_REDACT_ENOMEM. */
long fdr_redact(fdr_redactor *r, const void *in, size_t len, fdr_redact_emit emit, void *ud);

/* A stream over r (r must outlive it). NULL when out of memory. */
fdr_redact_stream *fdr_redact_stream_new(fdr_redactor *r);
/* Feed a chunk; emits every byte that can no longer be part of a match. Returns the number
 * of replacements or FDR_REDACT_ENOMEM. */
long fdr_redact_stream_push(fdr_redact_stream *s, const void *in, size_t len,
			    fdr_redact_emit emit, void *ud);
/* End of input: emits the rest. The stream can be reused afterwards (a new input). */
long fdr_redact_stream_finish(fdr_redact_stream *s, fdr_redact_emit emit, void *ud);
/* Emit what is held back as if the input ended here, but keep the stream's position
 * (for idle flushes of interactive streams: a secret split across the flush point is then
 * not caught). */
long fdr_redact_stream_flush(fdr_redact_stream *s, fdr_redact_emit emit, void *ud);
/* Bytes currently held back. */
size_t fdr_redact_stream_pending(const fdr_redact_stream *s);
/* Wipe what is held back and free. NULL is fine. */
void fdr_redact_stream_free(fdr_redact_stream *s);

#ifndef FDR_NO_LUA
#include <lua.h>
/* Push r as a foundry.redact.Redactor userdata that owns it (frees it when collected). */
void fdr_redactor_push(lua_State *L, fdr_redactor *r);
#endif

#endif
