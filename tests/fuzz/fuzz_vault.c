/*
 * libFuzzer target: the vault file parser (everything that is read before any key).
 * Half the inputs get a correct checksum so the fuzzer also reaches what lies behind it.
 * Built by tests/fuzz/run.sh.
 */
#include "vault.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (size > 64 && (data[size - 1] & 1))
		SHA256(buf, size - 32, buf + size - 32);
	fdr_vault_image *img = NULL;
	fdr_vault_error err;
	int rc = fdr_vault_parse(&img, buf, size, &err);
	if (rc == 0) {
		size_t n = fdr_vault_image_count(img);
		uint64_t total = 0;
		for (size_t i = 0; i < n; i++) {
			fdr_vault_meta m;
			fdr_vault_image_meta(img, i, &m);
			total += m.size + strlen(m.name);
		}
		fdr_vault_kdf k;
		fdr_vault_image_kdf(img, &k);
		if (total > size) /* every value must lie inside the file */
			abort();
		fdr_vault_image_free(img);
	} else if (err.message[0] == 0 || strlen(err.message) >= sizeof err.message) {
		abort(); /* every refusal says why */
	}
	free(buf);
	return 0;
}
