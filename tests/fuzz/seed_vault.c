/* Writes seed inputs for fuzz_vault: real vault files (0, 1 and 3 secrets; passphrase and
 * key file). Usage: seed_vault DIR. Built by tests/fuzz/run.sh. */
#include "vault.h"

#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	fdr_vault_kdf cheap = {FDR_VAULT_KDF_SCRYPT, 10, 8, 1}, kf = {FDR_VAULT_KDF_KEYFILE, 0, 0, 0};
	fdr_vault_secret pass = {"fuzzing passphrase", 18, NULL};
	char path[512], key[512];
	snprintf(key, sizeof key, "%s/.key", argv[1]);
	unlink(key);
	fdr_vault_error err;
	if (fdr_vault_make_key_file(key, &err))
		return 1;
	fdr_vault_secret keyfile = {NULL, 0, key};
	const char *names[] = {"anthropic", "github/token", "x.y-z_1"};
	for (int n = 0; n <= 3; n++) {
		snprintf(path, sizeof path, "%s/seed-%d", argv[1], n);
		unlink(path);
		fdr_vault *v;
		if (fdr_vault_create(&v, path, n == 2 ? &keyfile : &pass, n == 2 ? &kf : &cheap, &err)) {
			fprintf(stderr, "%s\n", err.message);
			return 1;
		}
		for (int i = 0; i < n; i++)
			fdr_vault_set(v, names[i], "seed-value-0123456789", 21, NULL, &err);
		fdr_vault_free(v);
	}
	unlink(key);
	return 0;
}
