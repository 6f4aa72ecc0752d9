/*
 * crypto.c - small cryptographic primitives over OpenSSL (module foundry._crypto).
 *
 *   sha256(data) -> 32 raw bytes
 *   hmac_sha256(key, data) -> 32 raw bytes
 *   random_bytes(n) -> n bytes from the OS CSPRNG (through OpenSSL's DRBG)
 *   equal(a, b) -> boolean, in time independent of where a and b differ
 *   hex(s) -> lowercase hexadecimal of s
 *
 * All of them are synchronous and cheap enough to run on the loop thread.
 */
#include "fdr.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>

/* random_bytes refuses more than this: a caller wanting more has a bug. */
#define MAX_RANDOM (1 << 20)

static int l_sha256(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)s, n, md);
	lua_pushlstring(L, (const char *)md, sizeof md);
	return 1;
}

static int l_hmac_sha256(lua_State *L)
{
	size_t klen, n;
	const char *key = luaL_checklstring(L, 1, &klen);
	const char *s = luaL_checklstring(L, 2, &n);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)s, n, md, &mdlen))
		return fdr_error(L, "crypto.error", NULL, "hmac_sha256 failed");
	lua_pushlstring(L, (const char *)md, mdlen);
	fdr_wipe(md, sizeof md);
	return 1;
}

static int l_random_bytes(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	luaL_argcheck(L, n >= 0 && n <= MAX_RANDOM, 1, "expected 0 to 1048576 bytes");
	luaL_Buffer b;
	unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
	if (n > 0 && RAND_bytes(p, (int)n) != 1)
		return fdr_error(L, "crypto.error", "the system's random number generator failed",
				 "random_bytes(%lld) failed", (long long)n);
	luaL_pushresultsize(&b, (size_t)n);
	return 1;
}

static int l_equal(lua_State *L)
{
	size_t na, nb;
	const char *a = luaL_checklstring(L, 1, &na);
	const char *b = luaL_checklstring(L, 2, &nb);
	/* The lengths are not secret (tokens and MACs have fixed sizes). */
	lua_pushboolean(L, na == nb && CRYPTO_memcmp(a, b, na) == 0);
	return 1;
}

static int l_hex(lua_State *L)
{
	static const char digits[] = "0123456789abcdef";
	size_t n;
	const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	char *p = luaL_buffinitsize(L, &b, n * 2);
	for (size_t i = 0; i < n; i++) {
		p[2 * i] = digits[s[i] >> 4];
		p[2 * i + 1] = digits[s[i] & 15];
	}
	luaL_pushresultsize(&b, n * 2);
	return 1;
}

int luaopen_foundry_crypto(lua_State *L)
{
	static const luaL_Reg fns[] = {{"sha256", l_sha256},
				       {"hmac_sha256", l_hmac_sha256},
				       {"random_bytes", l_random_bytes},
				       {"equal", l_equal},
				       {"hex", l_hex},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
