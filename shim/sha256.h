/*
 * sha256.h - SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104) for the shim, which is
 * static and links nothing but libc. Not constant-time against cache attacks on the
 * message (it need not be: the shim only signs, with a key it read itself).
 */
#ifndef SHIM_SHA256_H
#define SHIM_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHIM_SHA256_LEN 32

typedef struct {
	uint32_t h[8];
	uint64_t len;          /* bytes hashed so far */
	unsigned char buf[64];
	size_t nbuf;
} shim_sha256;

void shim_sha256_init(shim_sha256 *c);
void shim_sha256_update(shim_sha256 *c, const void *data, size_t n);
void shim_sha256_final(shim_sha256 *c, unsigned char out[SHIM_SHA256_LEN]);

/* out = HMAC-SHA256(key, msg). */
void shim_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
		      unsigned char out[SHIM_SHA256_LEN]);

/* Lower-case hex of `n` bytes into `out` (2n + 1 bytes, NUL-terminated). */
void shim_hex(const unsigned char *in, size_t n, char *out);

#endif
