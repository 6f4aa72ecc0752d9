/* The shim's own SHA-256 and HMAC-SHA256 (shim/sha256.c) against OpenSSL's. */
#include "ctest.h"
#include "../../shim/sha256.c"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdlib.h>

static unsigned char *random_bytes(size_t n, unsigned *seed)
{
	unsigned char *p = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(rand_r(seed) >> 7);
	return p;
}

static void test_known_vectors(void)
{
	/* FIPS 180-4 examples and RFC 4231 test case 2. */
	unsigned char d[32];
	char hex[65];
	shim_sha256 c;
	shim_sha256_init(&c);
	shim_sha256_final(&c, d);
	shim_hex(d, 32, hex);
	CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	shim_sha256_init(&c);
	shim_sha256_update(&c, "abc", 3);
	shim_sha256_final(&c, d);
	shim_hex(d, 32, hex);
	CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	shim_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d);
	shim_hex(d, 32, hex);
	CHECK_EQ_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* Every length across the padding boundaries, fed in uneven pieces. */
static void test_sha256_matches_openssl(void)
{
	unsigned seed = 1;
	for (size_t n = 0; n < 300; n++) {
		unsigned char *m = random_bytes(n, &seed), mine[32], theirs[32];
		shim_sha256 c;
		shim_sha256_init(&c);
		size_t off = 0, step = 1 + n % 7;
		while (off < n) {
			size_t take = n - off < step ? n - off : step;
			shim_sha256_update(&c, m + off, take);
			off += take;
			step = step * 3 % 70 + 1;
		}
		shim_sha256_final(&c, mine);
		SHA256(m, n, theirs);
		if (memcmp(mine, theirs, 32) != 0) {
			fprintf(stderr, "sha256 differs at length %zu\n", n);
			CHECK(0);
		}
		free(m);
	}
	size_t big = (1u << 20) + 13;
	unsigned char *m = random_bytes(big, &seed), mine[32], theirs[32];
	shim_sha256 c;
	shim_sha256_init(&c);
	shim_sha256_update(&c, m, big);
	shim_sha256_final(&c, mine);
	SHA256(m, big, theirs);
	CHECK(memcmp(mine, theirs, 32) == 0);
	free(m);
}

/* Keys shorter than, equal to and longer than the block (hashed first). */
static void test_hmac_matches_openssl(void)
{
	unsigned seed = 7;
	size_t keylens[] = {0, 1, 16, 32, 63, 64, 65, 100, 200};
	for (size_t k = 0; k < sizeof keylens / sizeof *keylens; k++) {
		for (size_t n = 0; n < 200; n += 13) {
			unsigned char *key = random_bytes(keylens[k], &seed);
			unsigned char *m = random_bytes(n, &seed), mine[32], theirs[32];
			unsigned len = 0;
			shim_hmac_sha256(key, keylens[k], m, n, mine);
			HMAC(EVP_sha256(), key, (int)keylens[k], m, n, theirs, &len);
			CHECK_EQ_INT(len, 32);
			if (memcmp(mine, theirs, 32) != 0) {
				fprintf(stderr, "hmac differs: key %zu, message %zu\n", keylens[k], n);
				CHECK(0);
			}
			free(key);
			free(m);
		}
	}
}

int main(void)
{
	RUN(test_known_vectors);
	RUN(test_sha256_matches_openssl);
	RUN(test_hmac_matches_openssl);
	return ctest_done();
}
