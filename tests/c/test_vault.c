/* The vault file: round trips, bad input, tampering, faults, concurrent writers, memory. */
#include "ctest.h"
#include "vault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/sha.h>

static char dir[] = "/tmp/foundry-test-vault-XXXXXX";
static char path[256];
static const fdr_vault_kdf cheap = {FDR_VAULT_KDF_SCRYPT, 10, 8, 1};
static const fdr_vault_secret pass = {"correct horse battery", 21, NULL};
static const fdr_vault_secret wrong = {"incorrect horse", 15, NULL};

static uint8_t *slurp(const char *p, size_t *len)
{
	FILE *f = fopen(p, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)n + 1);
	*len = fread(b, 1, (size_t)n, f);
	fclose(f);
	return b;
}

static void spit(const char *p, const uint8_t *b, size_t len)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, b, len) == (ssize_t)len);
	close(fd);
}

/* Recompute the plain checksum, as someone who edits the file on purpose would. */
static void reseal(uint8_t *b, size_t len)
{
	SHA256(b, len - 32, b + len - 32);
}

static void fresh(void)
{
	unlink(path);
	fdr_vault *v;
	fdr_vault_error err;
	int rc = fdr_vault_create(&v, path, &pass, &cheap, &err);
	if (rc)
		fprintf(stderr, "create: %s\n", err.message);
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(fdr_vault_set(v, "alpha", "first-secret", 12, NULL, &err), 0);
	CHECK_EQ_INT(fdr_vault_set(v, "beta", "second-secret", 13, NULL, &err), 0);
	fdr_vault_free(v);
}

static char *get(fdr_vault *v, const char *name, int *rc)
{
	uint8_t *val;
	size_t len;
	fdr_vault_error err;
	*rc = fdr_vault_get(v, name, &val, &len, &err);
	if (*rc)
		return NULL;
	char *s = strndup((char *)val, len);
	fdr_secure_free(val);
	return s;
}

static int count_temps(void)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strstr(de->d_name, ".tmp.") != NULL;
	closedir(d);
	return n;
}

static void test_round_trip(void)
{
	fresh();
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	int rc;
	char *s = get(v, "alpha", &rc);
	CHECK_EQ_STR(s, "first-secret");
	free(s);
	int created = -1;
	const char bin[] = {'x', 0, 'y'};
	CHECK_EQ_INT(fdr_vault_set(v, "bin", bin, 3, &created, &err), 0);
	CHECK_EQ_INT(created, 1);
	CHECK_EQ_INT(fdr_vault_set(v, "alpha", "replaced", 8, &created, &err), 0);
	CHECK_EQ_INT(created, 0);
	uint8_t *val;
	size_t len;
	CHECK_EQ_INT(fdr_vault_get(v, "bin", &val, &len, &err), 0);
	CHECK(len == 3 && memcmp(val, bin, 3) == 0);
	fdr_secure_free(val);
	const fdr_vault_image *img = fdr_vault_image_of(v);
	CHECK_EQ_INT(fdr_vault_image_count(img), 3);
	fdr_vault_meta m;
	fdr_vault_image_meta(img, 0, &m);
	CHECK_EQ_STR(m.name, "alpha");
	CHECK_EQ_INT(m.size, 8);
	CHECK(m.created > 0 && m.updated >= m.created);
	CHECK_EQ_INT(fdr_vault_rm(v, "beta", &err), 0);
	CHECK_EQ_INT(fdr_vault_rm(v, "beta", &err), FDR_VAULT_EMISSING);
	s = get(v, "beta", &rc);
	CHECK(s == NULL && rc == FDR_VAULT_EMISSING);
	fdr_vault_free(v);
	/* names are checked */
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	CHECK_EQ_INT(fdr_vault_set(v, "../x", "v", 1, NULL, &err), FDR_VAULT_EINVAL);
	CHECK_EQ_INT(fdr_vault_set(v, "", "v", 1, NULL, &err), FDR_VAULT_EINVAL);
	CHECK_EQ_INT(fdr_vault_set(v, "ok/with.dots-and_", "v", 1, NULL, &err), 0);
	CHECK_EQ_INT(fdr_vault_set(v, "big", "", FDR_VAULT_VALUE_MAX + 1, NULL, &err), FDR_VAULT_EINVAL);
	fdr_vault_free(v);
	/* the file never holds a value in clear */
	size_t flen;
	uint8_t *bytes = slurp(path, &flen);
	CHECK(memmem(bytes, flen, "replaced", 8) == NULL);
	CHECK(memmem(bytes, flen, "first-secret", 12) == NULL);
	free(bytes);
}

static void test_create_refuses_existing_and_weak(void)
{
	fresh();
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_create(&v, path, &pass, &cheap, &err), FDR_VAULT_EEXIST);
	char other[300];
	snprintf(other, sizeof other, "%s/other", dir);
	fdr_vault_secret weak = {"short", 5, NULL};
	CHECK_EQ_INT(fdr_vault_create(&v, other, &weak, &cheap, &err), FDR_VAULT_EINVAL);
	CHECK(strstr(err.message, "at least 8") != NULL);
	fdr_vault_kdf silly = {FDR_VAULT_KDF_SCRYPT, 30, 8, 1};
	CHECK_EQ_INT(fdr_vault_create(&v, other, &pass, &silly, &err), FDR_VAULT_EINVAL);
	CHECK(access(other, F_OK) != 0);
}

static void test_wrong_passphrase_changes_nothing(void)
{
	fresh();
	size_t len0, len1;
	uint8_t *before = slurp(path, &len0);
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &wrong, &err), FDR_VAULT_EPASS);
	CHECK_EQ_STR(err.message, "wrong passphrase");
	CHECK(v == NULL);
	fdr_vault_secret kf = {NULL, 0, "/nonexistent"};
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &kf, &err), FDR_VAULT_EINVAL);
	CHECK(strstr(err.message, "passphrase") != NULL);
	uint8_t *after = slurp(path, &len1);
	CHECK(len0 == len1 && memcmp(before, after, len0) == 0);
	free(before);
	free(after);
}

static void test_permissions(void)
{
	fresh();
	fdr_vault_image *img;
	fdr_vault_error err;
	chmod(path, 0640);
	CHECK_EQ_INT(fdr_vault_load(&img, path, &err), FDR_VAULT_EPERM);
	CHECK(strstr(err.message, "chmod 600") != NULL);
	chmod(path, 0604);
	CHECK_EQ_INT(fdr_vault_load(&img, path, &err), FDR_VAULT_EPERM);
	chmod(path, 0600);
	CHECK_EQ_INT(fdr_vault_load(&img, path, &err), 0);
	fdr_vault_image_free(img);
	/* an unlocked handle re-checks on every read */
	fdr_vault *v;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	chmod(path, 0644);
	int rc;
	CHECK(get(v, "alpha", &rc) == NULL);
	CHECK_EQ_INT(rc, FDR_VAULT_EPERM);
	chmod(path, 0600);
	fdr_vault_free(v);
	/* a symbolic link is refused */
	char link[300];
	snprintf(link, sizeof link, "%s/link", dir);
	unlink(link);
	CHECK(symlink(path, link) == 0);
	CHECK_EQ_INT(fdr_vault_load(&img, link, &err), FDR_VAULT_EPERM);
	CHECK(strstr(err.message, "symbolic link") != NULL);
	unlink(link);
	CHECK_EQ_INT(fdr_vault_load(&img, "/nonexistent/vault", &err), FDR_VAULT_ENOENT);
}

static void test_truncated_everywhere(void)
{
	fresh();
	size_t len;
	uint8_t *b = slurp(path, &len);
	for (size_t n = 0; n < len; n++) {
		fdr_vault_image *img = NULL;
		fdr_vault_error err;
		int rc = fdr_vault_parse(&img, b, n, &err);
		CHECK(rc == FDR_VAULT_ETRUNC || rc == FDR_VAULT_ECORRUPT);
		if (rc == 0)
			fdr_vault_image_free(img);
		if (n >= 10 && n < len - 64 && rc != FDR_VAULT_ETRUNC) {
			fprintf(stderr, "truncated at %zu: %s\n", n, err.message);
			CHECK(0);
		}
	}
	/* through the file: the message names the problem and the file */
	spit(path, b, len - 5);
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), FDR_VAULT_ETRUNC);
	CHECK(strstr(err.message, "truncated") && strstr(err.message, path));
	free(b);
}

static void test_flipped_bytes_everywhere(void)
{
	fresh();
	size_t len;
	uint8_t *b = slurp(path, &len);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			b[i] ^= (uint8_t)(1 << bit);
			fdr_vault_image *img = NULL;
			fdr_vault_error err;
			int rc = fdr_vault_parse(&img, b, len, &err);
			b[i] ^= (uint8_t)(1 << bit);
			if (rc == 0) {
				fprintf(stderr, "flipped bit %d of byte %zu accepted\n", bit, i);
				fdr_vault_image_free(img);
				CHECK(0);
				continue;
			}
			int want = i < 8 ? FDR_VAULT_EFORMAT : i < 10 ? FDR_VAULT_EVERSION : 0;
			if (want && rc != want) {
				fprintf(stderr, "byte %zu: %s\n", i, err.message);
				CHECK(0);
			}
			CHECK(rc != FDR_VAULT_EPASS);
		}
	}
	free(b);
}

static void test_wrong_version(void)
{
	fresh();
	size_t len;
	uint8_t *b = slurp(path, &len);
	b[9] = 2;
	reseal(b, len);
	spit(path, b, len);
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), FDR_VAULT_EVERSION);
	CHECK(strstr(err.message, "version 2") != NULL);
	free(b);
}

static void test_hostile_kdf_parameters(void)
{
	fresh();
	size_t len;
	uint8_t *b = slurp(path, &len);
	b[12] = 40; /* N = 2^40 */
	reseal(b, len);
	fdr_vault_image *img;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_parse(&img, b, len, &err), FDR_VAULT_ECORRUPT);
	CHECK(strstr(err.message, "scrypt") != NULL);
	free(b);
}

/* Found by tests/fuzz: a name length pointing past the end of the file must be refused
 * before the name is read (ASan sees the over-read: the buffer has the exact size). */
static void test_name_past_end(void)
{
	fresh();
	size_t len;
	uint8_t *good = slurp(path, &len);
	size_t n = 108 + 2 + 64;
	uint8_t *b = malloc(n);
	memcpy(b, good, 108);
	b[104] = b[105] = b[106] = 0;
	b[107] = 1;
	b[108] = 0;
	b[109] = 100; /* <= the name limit, > what is left */
	memset(b + 110, 'a', 64);
	fdr_vault_image *img = NULL;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_parse(&img, b, n, &err), FDR_VAULT_ETRUNC);
	free(b);
	free(good);
}

/* Someone who can write the file but not decrypt it: recomputing the plain checksum is
 * not enough; the keyed MAC (or the entry's tag) refuses. */
static void test_tampering_detected(void)
{
	fresh();
	size_t len;
	uint8_t *b = slurp(path, &len);
	fdr_vault *v;
	fdr_vault_error err;
	/* a ciphertext byte of the last entry */
	uint8_t *t = malloc(len);
	memcpy(t, b, len);
	t[len - 64 - 20] ^= 1;
	reseal(t, len);
	spit(path, t, len);
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), FDR_VAULT_ETAMPER);
	/* drop the last entry: fix the count and the checksum */
	memcpy(t, b, len);
	size_t entry = 2 + 4 + 20 + 12 + 13 + 16; /* "beta", 13-byte value */
	size_t nlen = len - entry;
	memmove(t + len - 64 - entry, t + len - 64, 64);
	t[107] = 1;
	reseal(t, nlen);
	spit(path, t, nlen);
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), FDR_VAULT_ETAMPER);
	CHECK(strstr(err.message, "authentication") != NULL);
	/* change an entry's metadata (its size is authenticated data) */
	memcpy(t, b, len);
	t[108 + 2 + 5 + 4] ^= 1; /* a byte of alpha's created time */
	reseal(t, len);
	spit(path, t, len);
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), FDR_VAULT_ETAMPER);
	spit(path, b, len);
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	fdr_vault_free(v);
	free(t);
	free(b);
}

static int inject(const char *point)
{
	return strcmp(point, "before_rename") == 0;
}

static void test_failure_before_rename_keeps_old(void)
{
	fresh();
	size_t len0, len1;
	uint8_t *before = slurp(path, &len0);
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	fdr_vault_test_hook = inject;
	CHECK_EQ_INT(fdr_vault_set(v, "gamma", "third", 5, NULL, &err), FDR_VAULT_EIO);
	fdr_vault_test_hook = NULL;
	CHECK(strstr(err.message, "not changed") != NULL);
	uint8_t *after = slurp(path, &len1);
	CHECK(len0 == len1 && memcmp(before, after, len0) == 0);
	CHECK_EQ_INT(count_temps(), 0);
	int rc;
	CHECK(get(v, "gamma", &rc) == NULL && rc == FDR_VAULT_EMISSING);
	fdr_vault_free(v);
	free(before);
	free(after);
}

static void test_disk_full_keeps_old(void)
{
	fresh();
	size_t len0, len1;
	uint8_t *before = slurp(path, &len0);
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	/* RLIMIT_FSIZE makes write() fail with EFBIG as a full disk fails with ENOSPC */
	struct rlimit old, lim;
	getrlimit(RLIMIT_FSIZE, &old);
	lim = old;
	lim.rlim_cur = len0 + 100;
	signal(SIGXFSZ, SIG_IGN);
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	char big[4096];
	memset(big, 'z', sizeof big);
	int rc = fdr_vault_set(v, "gamma", big, sizeof big, NULL, &err);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_DFL);
	CHECK_EQ_INT(rc, FDR_VAULT_ENOSPC);
	CHECK(strstr(err.message, "not changed") != NULL);
	uint8_t *after = slurp(path, &len1);
	CHECK(len0 == len1 && memcmp(before, after, len0) == 0);
	CHECK_EQ_INT(count_temps(), 0);
	/* and the vault still works */
	CHECK_EQ_INT(fdr_vault_set(v, "gamma", "small", 5, NULL, &err), 0);
	fdr_vault_free(v);
	free(before);
	free(after);
}

static void test_stale_temp_removed(void)
{
	fresh();
	char tmp[300];
	snprintf(tmp, sizeof tmp, "%s.tmp.leftover", path);
	spit(tmp, (const uint8_t *)"junk", 4);
	CHECK_EQ_INT(count_temps(), 1);
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	CHECK_EQ_INT(fdr_vault_set(v, "gamma", "third", 5, NULL, &err), 0);
	CHECK_EQ_INT(count_temps(), 0);
	fdr_vault_free(v);
}

static void test_concurrent_writers(void)
{
	fresh();
	enum { N = 8 };
	pid_t pids[N];
	for (int i = 0; i < N; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			fdr_vault *v;
			fdr_vault_error err;
			if (fdr_vault_unlock(&v, path, &pass, &err))
				_exit(2);
			char name[32], val[48];
			for (int k = 0; k < 5; k++) {
				snprintf(name, sizeof name, "w%d-%d", i, k);
				snprintf(val, sizeof val, "value-%d-%d", i, k);
				if (fdr_vault_set(v, name, val, strlen(val), NULL, &err))
					_exit(3);
			}
			fdr_vault_free(v);
			_exit(0);
		}
	}
	for (int i = 0; i < N; i++) {
		int st;
		waitpid(pids[i], &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	CHECK_EQ_INT(fdr_vault_image_count(fdr_vault_image_of(v)), 2 + N * 5);
	int rc;
	char *s = get(v, "w7-4", &rc);
	CHECK_EQ_STR(s, "value-7-4");
	free(s);
	CHECK_EQ_INT(fdr_vault_image_generation(fdr_vault_image_of(v)), 3 + N * 5);
	fdr_vault_free(v);
}

static void test_sees_other_writers(void)
{
	fresh();
	fdr_vault *a, *b;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&a, path, &pass, &err), 0);
	CHECK_EQ_INT(fdr_vault_unlock(&b, path, &pass, &err), 0);
	CHECK_EQ_INT(fdr_vault_set(b, "alpha", "changed-by-b", 12, NULL, &err), 0);
	int rc;
	char *s = get(a, "alpha", &rc);
	CHECK_EQ_STR(s, "changed-by-b");
	free(s);
	/* a's write keeps b's */
	CHECK_EQ_INT(fdr_vault_set(a, "gamma", "from-a", 6, NULL, &err), 0);
	s = get(b, "gamma", &rc);
	CHECK_EQ_STR(s, "from-a");
	free(s);
	fdr_vault_free(a);
	fdr_vault_free(b);
}

static void test_rekey(void)
{
	fresh();
	fdr_vault *v, *other;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	CHECK_EQ_INT(fdr_vault_unlock(&other, path, &pass, &err), 0);
	fdr_vault_secret np = {"a whole new passphrase", 22, NULL};
	fdr_vault_kdf k = {FDR_VAULT_KDF_SCRYPT, 11, 8, 1};
	CHECK_EQ_INT(fdr_vault_rekey(v, &np, &k, &err), 0);
	int rc;
	char *s = get(v, "beta", &rc);
	CHECK_EQ_STR(s, "second-secret");
	free(s);
	/* the old passphrase no longer opens it; a handle from before is told */
	fdr_vault *x;
	CHECK_EQ_INT(fdr_vault_unlock(&x, path, &pass, &err), FDR_VAULT_EPASS);
	CHECK(get(other, "beta", &rc) == NULL);
	CHECK_EQ_INT(rc, FDR_VAULT_ESTALE);
	CHECK_EQ_INT(fdr_vault_unlock(&x, path, &np, &err), 0);
	fdr_vault_kdf got;
	fdr_vault_image_kdf(fdr_vault_image_of(x), &got);
	CHECK_EQ_INT(got.log2n, 11);
	s = get(x, "alpha", &rc);
	CHECK_EQ_STR(s, "first-secret");
	free(s);
	fdr_vault_free(x);
	fdr_vault_free(other);
	fdr_vault_free(v);
}

static void test_key_file(void)
{
	char kp[300], kp2[300], vp[300];
	snprintf(kp, sizeof kp, "%s/key", dir);
	snprintf(kp2, sizeof kp2, "%s/key2", dir);
	snprintf(vp, sizeof vp, "%s/kvault", dir);
	unlink(kp);
	unlink(kp2);
	unlink(vp);
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_make_key_file(kp, &err), 0);
	CHECK_EQ_INT(fdr_vault_make_key_file(kp, &err), FDR_VAULT_EEXIST);
	CHECK_EQ_INT(fdr_vault_make_key_file(kp2, &err), 0);
	struct stat st;
	CHECK(stat(kp, &st) == 0 && (st.st_mode & 0777) == 0600);
	fdr_vault_secret how = {NULL, 0, kp}, how2 = {NULL, 0, kp2};
	fdr_vault_kdf kf = {FDR_VAULT_KDF_KEYFILE, 0, 0, 0};
	fdr_vault *v;
	CHECK_EQ_INT(fdr_vault_create(&v, vp, &how, &kf, &err), 0);
	CHECK_EQ_INT(fdr_vault_set(v, "k", "vvvv", 4, NULL, &err), 0);
	fdr_vault_free(v);
	CHECK_EQ_INT(fdr_vault_unlock(&v, vp, &how2, &err), FDR_VAULT_EKEYFILE);
	CHECK_EQ_INT(fdr_vault_unlock(&v, vp, &pass, &err), FDR_VAULT_EINVAL);
	CHECK(strstr(err.message, "key file") != NULL);
	chmod(kp, 0644);
	CHECK_EQ_INT(fdr_vault_unlock(&v, vp, &how, &err), FDR_VAULT_EPERM);
	CHECK(strstr(err.message, "chmod 600") != NULL);
	chmod(kp, 0600);
	CHECK_EQ_INT(fdr_vault_unlock(&v, vp, &how, &err), 0);
	/* from key file to passphrase */
	CHECK_EQ_INT(fdr_vault_rekey(v, &pass, &cheap, &err), 0);
	fdr_vault_free(v);
	CHECK_EQ_INT(fdr_vault_unlock(&v, vp, &pass, &err), 0);
	int rc;
	char *s = get(v, "k", &rc);
	CHECK_EQ_STR(s, "vvvv");
	free(s);
	fdr_vault_free(v);
	/* a short key file is refused */
	spit(kp2, (const uint8_t *)"short\n", 6);
	CHECK_EQ_INT(fdr_vault_create(&v, vp, &how2, &kf, &err), FDR_VAULT_EEXIST);
	unlink(vp);
	CHECK_EQ_INT(fdr_vault_create(&v, vp, &how2, &kf, &err), FDR_VAULT_EKEYFILE);
}

static void test_lock_wipes(void)
{
	fresh();
	fdr_vault *v;
	fdr_vault_error err;
	CHECK_EQ_INT(fdr_vault_unlock(&v, path, &pass, &err), 0);
	fdr_vault_lock(v);
	CHECK(fdr_vault_is_locked(v));
	int rc;
	CHECK(get(v, "alpha", &rc) == NULL && rc == FDR_VAULT_ELOCKED);
	CHECK_EQ_INT(fdr_vault_set(v, "x", "y", 1, NULL, &err), FDR_VAULT_ELOCKED);
	CHECK(fdr_vault_dup(v) == NULL);
	fdr_vault_free(v);
}

/* The pages holding keys and values are locked and left out of core dumps. */
static void test_secure_memory(void)
{
	char *p = fdr_secure_alloc(100);
	CHECK(p != NULL);
	memset(p, 'k', 100);
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long lo = 0, hi = 0, want = (unsigned long)p;
	int in = 0, dd = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
			in = a <= want && want < b, lo = a, hi = b;
		else if (in && strncmp(line, "VmFlags:", 8) == 0)
			dd = strstr(line, " dd") != NULL;
	}
	fclose(f);
	(void)lo;
	(void)hi;
	CHECK(dd);
	fdr_secure_free(p);
	fdr_secure_free(NULL);
}

static void test_protect_process(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		if (fdr_vault_protect_process() != 0)
			_exit(2);
		struct rlimit rl;
		getrlimit(RLIMIT_CORE, &rl);
		_exit(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 && rl.rlim_cur == 0 ? 0 : 1);
	}
	int st;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(path, sizeof path, "%s/vault", dir);
	RUN(test_round_trip);
	RUN(test_create_refuses_existing_and_weak);
	RUN(test_wrong_passphrase_changes_nothing);
	RUN(test_permissions);
	RUN(test_truncated_everywhere);
	RUN(test_flipped_bytes_everywhere);
	RUN(test_wrong_version);
	RUN(test_hostile_kdf_parameters);
	RUN(test_name_past_end);
	RUN(test_tampering_detected);
	RUN(test_failure_before_rename_keeps_old);
	RUN(test_disk_full_keeps_old);
	RUN(test_stale_temp_removed);
	RUN(test_concurrent_writers);
	RUN(test_sees_other_writers);
	RUN(test_rekey);
	RUN(test_key_file);
	RUN(test_lock_wipes);
	RUN(test_secure_memory);
	RUN(test_protect_process);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return ctest_done();
}
