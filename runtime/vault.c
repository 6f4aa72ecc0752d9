/*
 * vault.c - the encrypted secrets file and its Lua binding (module foundry._vault).
 *
 * File layout (integers big-endian; docs/security.md has the rationale):
 *
 *   0  magic "FDRVAULT"        8
 *   8  version (1)             2
 *  10  kdf (1 scrypt, 2 key file), 0    1 + 1
 *  12  scrypt log2 N, 0        1 + 1
 *  14  scrypt r, p             2 + 2
 *  18  0                       2
 *  20  salt                    16
 *  36  wrap nonce              12   AES-256-GCM(kek) of the data key, AAD = bytes 0..35
 *  48  wrapped data key        32
 *  80  wrap tag                16
 *  96  generation              8    incremented by every write
 * 104  entry count             4
 * 108  entries, sorted by name, each:
 *        name length 2, name, created 8, updated 8, size 4,   <- AAD (with a label)
 *        nonce 12, ciphertext (size), tag 16                   AES-256-GCM(entry key)
 * end-64  HMAC-SHA256(mac key, everything before it)
 * end-32  SHA-256(everything before it)
 *
 * The entry key and MAC key are HMAC-SHA256(data key, label). The plain checksum tells a
 * damaged file from a wrong passphrase without any key; the keyed MAC catches an entry
 * removed or swapped by someone who cannot decrypt.
 */
#include "vault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define MAGIC "FDRVAULT"
#define VERSION 1
#define OFF_VERSION 8
#define OFF_KDF 10
#define OFF_LOG2N 12
#define OFF_R 14
#define OFF_P 16
#define OFF_SALT 20
#define OFF_WNONCE 36
#define OFF_WKEY 48
#define OFF_WTAG 80
#define OFF_GEN 96
#define OFF_COUNT 104
#define HDR_LEN 108
#define TRAILER_LEN 64
#define SALT_LEN 16
#define NONCE_LEN 12
#define TAG_LEN 16
#define KEY_LEN 32
#define ENTRY_FIXED (2 + 8 + 8 + 4 + NONCE_LEN + TAG_LEN)
#define FILE_MAX (64u << 20)
#define KEYFILE_MIN 32
#define KEYFILE_MAX 4096
#define PASS_MAX 4096

static const char ENTRY_LABEL[] = "FDRVAULT entry v1";
static const char ENC_LABEL[] = "foundry vault v1 entries";
static const char MAC_LABEL[] = "foundry vault v1 mac";
static const char KEYFILE_LABEL[] = "foundry vault v1 key file";

int (*fdr_vault_test_hook)(const char *point);

static int fail(fdr_vault_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(fdr_vault_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof err->message, fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

const char *fdr_vault_code_name(int code)
{
	switch (code) {
	case FDR_VAULT_OK: return "ok";
	case FDR_VAULT_EIO: return "io";
	case FDR_VAULT_ENOENT: return "not_found";
	case FDR_VAULT_EPERM: return "permissions";
	case FDR_VAULT_EFORMAT: return "not_a_vault";
	case FDR_VAULT_EVERSION: return "version";
	case FDR_VAULT_ETRUNC: return "truncated";
	case FDR_VAULT_ECORRUPT: return "corrupt";
	case FDR_VAULT_EPASS: return "wrong_passphrase";
	case FDR_VAULT_EKEYFILE: return "wrong_key_file";
	case FDR_VAULT_ETAMPER: return "tampered";
	case FDR_VAULT_EMISSING: return "missing";
	case FDR_VAULT_EEXIST: return "exists";
	case FDR_VAULT_ENOSPC: return "disk_full";
	case FDR_VAULT_ELOCKED: return "locked";
	case FDR_VAULT_ESTALE: return "rekeyed";
	case FDR_VAULT_EINVAL: return "invalid";
	case FDR_VAULT_ENOMEM: return "nomem";
	default: return "crypto";
	}
}

/* ---- locked memory ---- */

struct secure_hdr {
	size_t map_len;
	size_t pad;
};

void *fdr_secure_alloc(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	if (n > SIZE_MAX - sizeof(struct secure_hdr) - page)
		return NULL;
	size_t len = (n + sizeof(struct secure_hdr) + page - 1) / page * page;
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	/* Best effort: RLIMIT_MEMLOCK may refuse; the pages are still kept out of core dumps. */
	(void)mlock(m, len);
	(void)madvise(m, len, MADV_DONTDUMP);
	(void)madvise(m, len, MADV_DONTFORK);
	struct secure_hdr *h = m;
	h->map_len = len;
	return h + 1;
}

void fdr_secure_free(void *p)
{
	if (!p)
		return;
	struct secure_hdr *h = (struct secure_hdr *)p - 1;
	size_t len = h->map_len;
	OPENSSL_cleanse(h, len);
	munlock(h, len);
	munmap(h, len);
}

int fdr_vault_protect_process(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return -errno;
	struct rlimit rl = {0, 0};
	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		return -errno;
	return 0;
}

/* ---- bytes ---- */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

/* ---- crypto ---- */

/* AES-256-GCM. Returns 0, or FDR_VAULT_ETAMPER when decryption fails authentication. */
static int gcm(int enc, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
	       size_t aadlen, const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len, rc = FDR_VAULT_ECRYPTO;
	if (!c)
		return FDR_VAULT_ENOMEM;
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
	    EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) != 1)
		goto out;
	if (aadlen && EVP_CipherUpdate(c, NULL, &len, aad, (int)aadlen) != 1)
		goto out;
	if (n && EVP_CipherUpdate(c, out, &len, in, (int)n) != 1)
		goto out;
	if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1)
		goto out;
	if (EVP_CipherFinal_ex(c, out + (n ? (size_t)len : 0), &len) != 1) {
		rc = enc ? FDR_VAULT_ECRYPTO : FDR_VAULT_ETAMPER;
		goto out;
	}
	if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) != 1)
		goto out;
	rc = 0;
out:
	EVP_CIPHER_CTX_free(c);
	return rc;
}

static int hmac(const uint8_t *key, size_t keylen, const void *a, size_t alen, const void *b,
		size_t blen, uint8_t out[32])
{
	unsigned int outlen = 32;
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
			       OSSL_PARAM_construct_end()};
	size_t got = 0;
	int ok = c && EVP_MAC_init(c, key, keylen, params) == 1 &&
		 EVP_MAC_update(c, a, alen) == 1 && (!blen || EVP_MAC_update(c, b, blen) == 1) &&
		 EVP_MAC_final(c, out, &got, outlen) == 1 && got == 32;
	EVP_MAC_CTX_free(c);
	EVP_MAC_free(mac);
	return ok ? 0 : FDR_VAULT_ECRYPTO;
}

struct keys {
	uint8_t data[KEY_LEN], enc[KEY_LEN], mac[KEY_LEN];
};

static struct keys *keys_new(void)
{
	return fdr_secure_alloc(sizeof(struct keys));
}

static int keys_derive(struct keys *k)
{
	if (hmac(k->data, KEY_LEN, ENC_LABEL, strlen(ENC_LABEL), NULL, 0, k->enc) ||
	    hmac(k->data, KEY_LEN, MAC_LABEL, strlen(MAC_LABEL), NULL, 0, k->mac))
		return FDR_VAULT_ECRYPTO;
	return 0;
}

void fdr_vault_kdf_default(fdr_vault_kdf *k)
{
	k->kdf = FDR_VAULT_KDF_SCRYPT;
	k->log2n = 16;
	k->r = 8;
	k->p = 1;
}

/* Bounds that keep a hostile header from asking for unbounded memory or time. */
static int kdf_check(const fdr_vault_kdf *k, fdr_vault_error *err)
{
	if (k->kdf == FDR_VAULT_KDF_KEYFILE)
		return k->log2n || k->r || k->p
			       ? fail(err, FDR_VAULT_ECORRUPT, "key-file vault with scrypt parameters")
			       : 0;
	if (k->kdf != FDR_VAULT_KDF_SCRYPT)
		return fail(err, FDR_VAULT_ECORRUPT, "unknown key derivation %d", k->kdf);
	if (k->log2n < 10 || k->log2n > 22 || k->r < 1 || k->r > 32 || k->p < 1 || k->p > 16)
		return fail(err, FDR_VAULT_ECORRUPT,
			    "scrypt parameters out of range (log2 N %u, r %u, p %u)", k->log2n, k->r,
			    k->p);
	uint64_t mem = (uint64_t)128 * k->r << k->log2n;
	uint64_t work = ((uint64_t)k->r * k->p) << k->log2n;
	if (mem > (1ull << 30) || work > (1ull << 26))
		return fail(err, FDR_VAULT_ECORRUPT,
			    "scrypt parameters too expensive (log2 N %u, r %u, p %u)", k->log2n, k->r,
			    k->p);
	return 0;
}

/* Read a whole file that must be a private regular file of ours. `what` names it in
 * messages ("vault", "key file"). */
static int read_private(int fd, const char *path, const char *what, size_t max, uint8_t **out,
			size_t *outlen, struct stat *st, fdr_vault_error *err)
{
	if (fstat(fd, st) != 0)
		return fail(err, FDR_VAULT_EIO, "cannot stat %s %s: %s", what, path, strerror(errno));
	if (!S_ISREG(st->st_mode))
		return fail(err, FDR_VAULT_EPERM, "%s %s is not a regular file", what, path);
	if (st->st_uid != geteuid())
		return fail(err, FDR_VAULT_EPERM, "%s %s belongs to uid %u, not to you (uid %u)", what,
			    path, (unsigned)st->st_uid, (unsigned)geteuid());
	if (st->st_mode & 077)
		return fail(err, FDR_VAULT_EPERM,
			    "%s %s is readable or writable by group or others (mode %04o): run "
			    "chmod 600 %s",
			    what, path, (unsigned)(st->st_mode & 07777), path);
	if ((uint64_t)st->st_size > max)
		return fail(err, FDR_VAULT_ECORRUPT, "%s %s is too large (%lld bytes)", what, path,
			    (long long)st->st_size);
	size_t len = (size_t)st->st_size;
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf)
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			free(buf);
			return fail(err, FDR_VAULT_EIO, "cannot read %s %s: %s", what, path, strerror(e));
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*out = buf;
	*outlen = got;
	return 0;
}

static int open_private(const char *path, const char *what, fdr_vault_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0)
		return fd;
	if (errno == ENOENT)
		return fail(err, FDR_VAULT_ENOENT, "no %s at %s", what, path);
	if (errno == ELOOP)
		return fail(err, FDR_VAULT_EPERM, "%s %s is a symbolic link", what, path);
	return fail(err, FDR_VAULT_EIO, "cannot open %s %s: %s", what, path, strerror(errno));
}

/* The key-encryption key: scrypt of the passphrase, or HMAC of the key file with the
 * salt. */
static int derive_kek(const fdr_vault_kdf *k, const uint8_t *salt, const fdr_vault_secret *how,
		      uint8_t kek[KEY_LEN], fdr_vault_error *err)
{
	if (k->kdf == FDR_VAULT_KDF_SCRYPT) {
		if (!how->passphrase)
			return fail(err, FDR_VAULT_EINVAL,
				    "this vault is locked with a passphrase, not a key file");
		uint64_t maxmem = ((uint64_t)128 * k->r << k->log2n) + ((uint64_t)128 * k->r * k->p) +
				  (1 << 20);
		if (EVP_PBE_scrypt(how->passphrase, how->passphrase_len, salt, SALT_LEN,
				   (uint64_t)1 << k->log2n, k->r, k->p, maxmem, kek, KEY_LEN) != 1)
			return fail(err, FDR_VAULT_ENOMEM, "scrypt failed (out of memory?)");
		return 0;
	}
	if (!how->key_file)
		return fail(err, FDR_VAULT_EINVAL,
			    "this vault is locked with a key file: give its path (--key-file or "
			    "FOUNDRY_VAULT_KEYFILE)");
	int fd = open_private(how->key_file, "key file", err);
	if (fd < 0)
		return fd == FDR_VAULT_ENOENT ? (err->code = FDR_VAULT_EKEYFILE) : fd;
	uint8_t *buf;
	size_t len;
	struct stat st;
	int rc = read_private(fd, how->key_file, "key file", KEYFILE_MAX, &buf, &len, &st, err);
	close(fd);
	if (rc)
		return rc == FDR_VAULT_ECORRUPT ? (err->code = FDR_VAULT_EKEYFILE) : rc;
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
		       buf[len - 1] == '\t'))
		len--;
	if (len < KEYFILE_MIN) {
		OPENSSL_cleanse(buf, len);
		free(buf);
		return fail(err, FDR_VAULT_EKEYFILE, "key file %s is too short (%zu bytes; at least %d)",
			    how->key_file, len, KEYFILE_MIN);
	}
	rc = hmac(buf, len, KEYFILE_LABEL, sizeof KEYFILE_LABEL, salt, SALT_LEN, kek);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return rc ? fail(err, rc, "HMAC failed") : 0;
}

/* ---- images ---- */

struct ientry {
	fdr_vault_meta meta;
	size_t off;      /* of the record */
	size_t meta_len; /* name length field .. size field */
	size_t rec_len;
};

struct fdr_vault_image {
	uint8_t *bytes;
	size_t len;
	fdr_vault_kdf kdf;
	uint64_t generation;
	size_t count;
	struct ientry *e;
};

void fdr_vault_image_free(fdr_vault_image *img)
{
	if (!img)
		return;
	free(img->bytes);
	free(img->e);
	free(img);
}

size_t fdr_vault_image_count(const fdr_vault_image *img)
{
	return img->count;
}

void fdr_vault_image_meta(const fdr_vault_image *img, size_t i, fdr_vault_meta *m)
{
	*m = img->e[i].meta;
}

void fdr_vault_image_kdf(const fdr_vault_image *img, fdr_vault_kdf *k)
{
	*k = img->kdf;
}

uint64_t fdr_vault_image_generation(const fdr_vault_image *img)
{
	return img->generation;
}

static int valid_name(const char *s, size_t n)
{
	if (n < 1 || n > FDR_VAULT_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			 c == '_' || (i > 0 && (c == '.' || c == '-' || c == '/'));
		if (!ok)
			return 0;
	}
	return 1;
}

static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	return c ? c : (alen > blen) - (alen < blen);
}

int fdr_vault_parse(fdr_vault_image **out, const void *data, size_t len, fdr_vault_error *err)
{
	const uint8_t *b = data;
	*out = NULL;
	if (len < 8) {
		if (memcmp(b, MAGIC, len) == 0)
			return fail(err, FDR_VAULT_ETRUNC, "the file is truncated (%zu bytes)", len);
		return fail(err, FDR_VAULT_EFORMAT, "not a Foundry vault file (bad magic)");
	}
	if (memcmp(b, MAGIC, 8) != 0)
		return fail(err, FDR_VAULT_EFORMAT, "not a Foundry vault file (bad magic)");
	if (len < OFF_VERSION + 2)
		return fail(err, FDR_VAULT_ETRUNC, "the file is truncated (%zu bytes)", len);
	unsigned version = get16(b + OFF_VERSION);
	if (version != VERSION)
		return fail(err, FDR_VAULT_EVERSION,
			    "unsupported vault version %u (this foundry reads version %d)", version,
			    VERSION);
	if (len < HDR_LEN + TRAILER_LEN)
		return fail(err, FDR_VAULT_ETRUNC, "the file is truncated (%zu bytes)", len);
	if (len > FILE_MAX)
		return fail(err, FDR_VAULT_ECORRUPT, "the file is too large (%zu bytes)", len);
	fdr_vault_kdf kdf = {b[OFF_KDF], b[OFF_LOG2N], get16(b + OFF_R), get16(b + OFF_P)};
	if (b[OFF_KDF + 1] || b[OFF_LOG2N + 1] || get16(b + 18))
		return fail(err, FDR_VAULT_ECORRUPT, "the header is damaged (reserved bytes set)");
	int rc = kdf_check(&kdf, err);
	if (rc)
		return rc;
	uint32_t count = get32(b + OFF_COUNT);
	if (count > FDR_VAULT_ENTRIES_MAX)
		return fail(err, FDR_VAULT_ECORRUPT, "the header is damaged (%u entries)", count);
	size_t end = len - TRAILER_LEN;
	struct ientry *e = calloc(count ? count : 1, sizeof *e);
	if (!e)
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	size_t pos = HDR_LEN;
	for (uint32_t i = 0; i < count; i++) {
		if (end - pos < 2) {
			rc = fail(err, FDR_VAULT_ETRUNC, "the file is truncated (entry %u of %u)", i + 1,
				  count);
			goto bad;
		}
		size_t nl = get16(b + pos);
		if (end - pos < ENTRY_FIXED + nl) {
			rc = fail(err, FDR_VAULT_ETRUNC, "the file is truncated (entry %u of %u)", i + 1,
				  count);
			goto bad;
		}
		if (!valid_name((const char *)b + pos + 2, nl)) {
			rc = fail(err, FDR_VAULT_ECORRUPT, "entry %u has an invalid name", i + 1);
			goto bad;
		}
		struct ientry *x = &e[i];
		memcpy(x->meta.name, b + pos + 2, nl);
		x->meta.name[nl] = 0;
		x->meta.created = get64(b + pos + 2 + nl);
		x->meta.updated = get64(b + pos + 10 + nl);
		x->meta.size = get32(b + pos + 18 + nl);
		if (x->meta.size > FDR_VAULT_VALUE_MAX) {
			rc = fail(err, FDR_VAULT_ECORRUPT, "entry %s has an impossible size (%u)",
				  x->meta.name, x->meta.size);
			goto bad;
		}
		x->off = pos;
		x->meta_len = 2 + nl + 20;
		x->rec_len = ENTRY_FIXED + nl + x->meta.size;
		if (end - pos < x->rec_len) {
			rc = fail(err, FDR_VAULT_ETRUNC, "the file is truncated (entry %s)", x->meta.name);
			goto bad;
		}
		if (i > 0 && name_cmp(e[i - 1].meta.name, strlen(e[i - 1].meta.name), x->meta.name,
				      nl) >= 0) {
			rc = fail(err, FDR_VAULT_ECORRUPT, "entries out of order at %s", x->meta.name);
			goto bad;
		}
		pos += x->rec_len;
	}
	if (pos != end) {
		rc = fail(err, FDR_VAULT_ECORRUPT, "unexpected data after the entries (%zu bytes)",
			  end - pos);
		goto bad;
	}
	uint8_t sum[32];
	SHA256(b, len - 32, sum);
	if (CRYPTO_memcmp(sum, b + len - 32, 32) != 0) {
		rc = fail(err, FDR_VAULT_ECORRUPT, "the file is damaged (checksum mismatch)");
		goto bad;
	}
	fdr_vault_image *img = calloc(1, sizeof *img);
	uint8_t *copy = malloc(len);
	if (!img || !copy) {
		free(img);
		free(copy);
		rc = fail(err, FDR_VAULT_ENOMEM, "out of memory");
		goto bad;
	}
	memcpy(copy, b, len);
	img->bytes = copy;
	img->len = len;
	img->kdf = kdf;
	img->generation = get64(b + OFF_GEN);
	img->count = count;
	img->e = e;
	*out = img;
	return 0;
bad:
	free(e);
	return rc;
}

/* Prefix "<path>: " to a parse error. */
static int at_path(fdr_vault_error *err, const char *path, int rc)
{
	if (rc && err) {
		char msg[sizeof err->message];
		memcpy(msg, err->message, sizeof msg);
		int n = snprintf(err->message, sizeof err->message, "vault %s: ", path);
		if (n > 0 && (size_t)n < sizeof err->message) {
			size_t ml = strnlen(msg, sizeof msg - 1), room = sizeof msg - 1 - (size_t)n;
			memcpy(err->message + n, msg, ml < room ? ml : room);
			err->message[(size_t)n + (ml < room ? ml : room)] = 0;
		}
	}
	return rc;
}

static int load_fd(fdr_vault_image **out, int fd, const char *path, struct stat *st,
		   fdr_vault_error *err)
{
	uint8_t *buf;
	size_t len;
	int rc = read_private(fd, path, "vault", FILE_MAX, &buf, &len, st, err);
	if (rc)
		return rc;
	rc = at_path(err, path, fdr_vault_parse(out, buf, len, err));
	free(buf);
	return rc;
}

int fdr_vault_load(fdr_vault_image **out, const char *path, fdr_vault_error *err)
{
	*out = NULL;
	int fd = open_private(path, "vault", err);
	if (fd < 0)
		return fd;
	struct stat st;
	int rc = load_fd(out, fd, path, &st, err);
	close(fd);
	return rc;
}

static int image_verify(const fdr_vault_image *img, const struct keys *k)
{
	uint8_t mac[32];
	if (hmac(k->mac, KEY_LEN, img->bytes, img->len - TRAILER_LEN, NULL, 0, mac))
		return FDR_VAULT_ECRYPTO;
	return CRYPTO_memcmp(mac, img->bytes + img->len - TRAILER_LEN, 32) ? FDR_VAULT_ETAMPER : 0;
}

static const struct ientry *image_find(const fdr_vault_image *img, const char *name)
{
	size_t lo = 0, hi = img->count, nl = strlen(name);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = name_cmp(img->e[mid].meta.name, strlen(img->e[mid].meta.name), name, nl);
		if (c == 0)
			return &img->e[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* AAD of an entry: a label and the metadata bytes. */
static size_t entry_aad(uint8_t *aad, const uint8_t *meta, size_t meta_len)
{
	memcpy(aad, ENTRY_LABEL, sizeof ENTRY_LABEL);
	memcpy(aad + sizeof ENTRY_LABEL, meta, meta_len);
	return sizeof ENTRY_LABEL + meta_len;
}

#define AAD_MAX (sizeof ENTRY_LABEL + 2 + FDR_VAULT_NAME_MAX + 20)

/* Decrypt entry x of img into locked memory. */
static int entry_open(const fdr_vault_image *img, const struct ientry *x, const struct keys *k,
		      uint8_t **value, fdr_vault_error *err)
{
	const uint8_t *rec = img->bytes + x->off;
	uint8_t aad[AAD_MAX];
	size_t aadlen = entry_aad(aad, rec, x->meta_len);
	const uint8_t *nonce = rec + x->meta_len, *ct = nonce + NONCE_LEN;
	uint8_t tag[TAG_LEN];
	memcpy(tag, ct + x->meta.size, TAG_LEN);
	uint8_t *v = fdr_secure_alloc((size_t)x->meta.size + 1);
	if (!v)
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	int rc = gcm(0, k->enc, nonce, aad, aadlen, ct, x->meta.size, v, tag);
	if (rc) {
		fdr_secure_free(v);
		return fail(err, rc == FDR_VAULT_ETAMPER ? FDR_VAULT_ETAMPER : rc,
			    "secret %s failed authentication: the vault was tampered with",
			    x->meta.name);
	}
	*value = v;
	return 0;
}

/* ---- building a new file ---- */

struct builder {
	uint8_t *p;
	size_t n, cap;
	int oom;
};

static uint8_t *grow(struct builder *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		uint8_t *q = realloc(b->p, cap);
		if (!q) {
			b->oom = 1;
			return NULL;
		}
		b->p = q;
		b->cap = cap;
	}
	uint8_t *at = b->p + b->n;
	b->n += n;
	return at;
}

/* The header: new wrapping of k->data under kek. */
static int build_header(struct builder *b, const fdr_vault_kdf *kdf, const uint8_t *salt,
			const uint8_t *kek, const struct keys *k, uint64_t generation)
{
	uint8_t *h = grow(b, HDR_LEN);
	if (!h)
		return FDR_VAULT_ENOMEM;
	memset(h, 0, HDR_LEN);
	memcpy(h, MAGIC, 8);
	put16(h + OFF_VERSION, VERSION);
	h[OFF_KDF] = (uint8_t)kdf->kdf;
	h[OFF_LOG2N] = (uint8_t)kdf->log2n;
	put16(h + OFF_R, (uint16_t)kdf->r);
	put16(h + OFF_P, (uint16_t)kdf->p);
	memcpy(h + OFF_SALT, salt, SALT_LEN);
	if (RAND_bytes(h + OFF_WNONCE, NONCE_LEN) != 1)
		return FDR_VAULT_ECRYPTO;
	int rc = gcm(1, kek, h + OFF_WNONCE, h, OFF_WNONCE, k->data, KEY_LEN, h + OFF_WKEY,
		     h + OFF_WTAG);
	put64(h + OFF_GEN, generation);
	return rc;
}

static int build_entry(struct builder *b, const struct keys *k, const char *name,
		       uint64_t created, uint64_t updated, const uint8_t *value, size_t size)
{
	size_t nl = strlen(name);
	uint8_t *r = grow(b, ENTRY_FIXED + nl + size);
	if (!r)
		return FDR_VAULT_ENOMEM;
	put16(r, (uint16_t)nl);
	memcpy(r + 2, name, nl);
	put64(r + 2 + nl, created);
	put64(r + 10 + nl, updated);
	put32(r + 18 + nl, (uint32_t)size);
	size_t meta_len = 2 + nl + 20;
	uint8_t aad[AAD_MAX];
	size_t aadlen = entry_aad(aad, r, meta_len);
	uint8_t *nonce = r + meta_len, *ct = nonce + NONCE_LEN;
	if (RAND_bytes(nonce, NONCE_LEN) != 1)
		return FDR_VAULT_ECRYPTO;
	return gcm(1, k->enc, nonce, aad, aadlen, value, size, ct, ct + size);
}

static int build_copy(struct builder *b, const fdr_vault_image *img, const struct ientry *x)
{
	uint8_t *r = grow(b, x->rec_len);
	if (!r)
		return FDR_VAULT_ENOMEM;
	memcpy(r, img->bytes + x->off, x->rec_len);
	return 0;
}

/* Count, MAC and checksum; then parse it back into an image. */
static int build_finish(struct builder *b, uint32_t count, const struct keys *k,
			fdr_vault_image **out, fdr_vault_error *err)
{
	if (b->oom || !grow(b, TRAILER_LEN))
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	if (b->n > FILE_MAX)
		return fail(err, FDR_VAULT_EINVAL, "the vault would be larger than %u MiB",
			    FILE_MAX >> 20);
	put32(b->p + OFF_COUNT, count);
	size_t len = b->n;
	if (hmac(k->mac, KEY_LEN, b->p, len - TRAILER_LEN, NULL, 0, b->p + len - TRAILER_LEN))
		return fail(err, FDR_VAULT_ECRYPTO, "HMAC failed");
	SHA256(b->p, len - 32, b->p + len - 32);
	return fdr_vault_parse(out, b->p, len, err);
}

/* ---- files ---- */

static char *path_with(const char *path, const char *suffix)
{
	size_t n = strlen(path) + strlen(suffix) + 1;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, "%s%s", path, suffix);
	return s;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

static int lock_file(const char *path, int *fd_out, fdr_vault_error *err)
{
	char *lp = path_with(path, ".lock");
	if (!lp)
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		int e = errno;
		free(lp);
		return fail(err, e == ENOENT ? FDR_VAULT_ENOENT : FDR_VAULT_EIO,
			    "cannot open the vault's lock file %s.lock: %s", path, strerror(e));
	}
	free(lp);
	while (flock(fd, LOCK_EX) != 0) {
		if (errno == EINTR)
			continue;
		int e = errno;
		close(fd);
		return fail(err, FDR_VAULT_EIO, "cannot lock %s.lock: %s", path, strerror(e));
	}
	*fd_out = fd;
	return 0;
}

static void unlock_file(int fd)
{
	flock(fd, LOCK_UN);
	close(fd);
}

/* Remove temporary files a killed writer left behind (we hold the lock: none is live). */
static void remove_stale_temps(const char *path)
{
	char *dir = dir_of(path);
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	char prefix[NAME_MAX + 1];
	snprintf(prefix, sizeof prefix, "%s.tmp.", base);
	DIR *d = dir ? opendir(dir) : NULL;
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)))
			if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
				unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	free(dir);
}

static int write_fail(fdr_vault_error *err, const char *path, const char *op, int e)
{
	if (e == ENOSPC || e == EDQUOT || e == EFBIG)
		return fail(err, FDR_VAULT_ENOSPC,
			    "cannot write the vault %s: %s (the vault was not changed)", path,
			    strerror(e));
	return fail(err, FDR_VAULT_EIO, "cannot %s the vault %s: %s (the vault was not changed)",
		    op, path, strerror(e));
}

/* Temporary file, fsync, rename, fsync the directory. */
static int write_atomic(const char *path, const uint8_t *buf, size_t len, fdr_vault_error *err)
{
	char *tmp = path_with(path, ".tmp.XXXXXX");
	if (!tmp)
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	int fd = mkostemp(tmp, O_CLOEXEC), rc = 0;
	if (fd < 0) {
		rc = write_fail(err, path, "create a temporary file for", errno);
		free(tmp);
		return rc;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = write_fail(err, path, "write", errno);
			goto undo;
		}
		off += (size_t)n;
	}
	if (fsync(fd) != 0) {
		rc = write_fail(err, path, "fsync", errno);
		goto undo;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = write_fail(err, path, "close", errno);
		goto undo;
	}
	fd = -1;
	if (fdr_vault_test_hook && fdr_vault_test_hook("before_rename")) {
		rc = fail(err, FDR_VAULT_EIO, "injected failure before rename (the vault was not changed)");
		goto undo;
	}
	if (rename(tmp, path) != 0) {
		rc = write_fail(err, path, "replace", errno);
		goto undo;
	}
	free(tmp);
	/* The rename is done; a failed directory fsync only weakens durability, so it is not
	 * reported as a failed write. */
	char *dir = dir_of(path);
	int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	free(dir);
	return 0;
undo:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

/* ---- the unlocked vault ---- */

struct fdr_vault {
	char *path;
	struct keys *k; /* NULL when locked */
	fdr_vault_image *img;
	dev_t dev;
	ino_t ino;
};

static fdr_vault *vault_new(const char *path)
{
	fdr_vault *v = calloc(1, sizeof *v);
	if (v && !(v->path = strdup(path))) {
		free(v);
		return NULL;
	}
	return v;
}

void fdr_vault_free(fdr_vault *v)
{
	if (!v)
		return;
	fdr_vault_lock(v);
	fdr_vault_image_free(v->img);
	free(v->path);
	free(v);
}

void fdr_vault_lock(fdr_vault *v)
{
	fdr_secure_free(v->k);
	v->k = NULL;
}

int fdr_vault_is_locked(const fdr_vault *v)
{
	return v->k == NULL;
}

const char *fdr_vault_path(const fdr_vault *v)
{
	return v->path;
}

const fdr_vault_image *fdr_vault_image_of(const fdr_vault *v)
{
	return v->img;
}

fdr_vault *fdr_vault_dup(const fdr_vault *v)
{
	if (!v->k)
		return NULL;
	fdr_vault *w = vault_new(v->path);
	if (!w)
		return NULL;
	fdr_vault_error err;
	w->k = keys_new();
	if (!w->k || fdr_vault_parse(&w->img, v->img->bytes, v->img->len, &err) != 0) {
		fdr_vault_free(w);
		return NULL;
	}
	memcpy(w->k, v->k, sizeof *w->k);
	w->dev = v->dev;
	w->ino = v->ino;
	return w;
}

void fdr_vault_adopt(fdr_vault *v, fdr_vault *w, int keys)
{
	if (w->img && (!v->img || w->img->generation > v->img->generation)) {
		fdr_vault_image *t = v->img;
		v->img = w->img;
		w->img = t;
		v->dev = w->dev;
		v->ino = w->ino;
	}
	if (keys && v->k && w->k)
		memcpy(v->k, w->k, sizeof *v->k);
}

/* Compare a freshly read image with what v knows: a MAC failure means another process
 * rekeyed (the wrapping changed) or someone tampered with the file. */
static int verify_with(const fdr_vault *v, const fdr_vault_image *img, fdr_vault_error *err)
{
	int rc = image_verify(img, v->k);
	if (rc == FDR_VAULT_ETAMPER) {
		if (v->img && memcmp(img->bytes + OFF_SALT, v->img->bytes + OFF_SALT, OFF_GEN - OFF_SALT))
			return fail(err, FDR_VAULT_ESTALE,
				    "the vault %s was rekeyed since it was unlocked: unlock it again",
				    v->path);
		return fail(err, FDR_VAULT_ETAMPER,
			    "vault %s failed authentication: it was modified by someone without the key",
			    v->path);
	}
	return rc ? fail(err, rc, "HMAC failed") : 0;
}

int fdr_vault_refresh(fdr_vault *v, fdr_vault_error *err)
{
	if (!v->k)
		return fail(err, FDR_VAULT_ELOCKED, "the vault is locked");
	int fd = open_private(v->path, "vault", err);
	if (fd < 0)
		return fd;
	struct stat st;
	uint8_t gen[8];
	int rc;
	if (fstat(fd, &st) != 0) {
		rc = fail(err, FDR_VAULT_EIO, "cannot stat vault %s: %s", v->path, strerror(errno));
		goto out;
	}
	/* Unchanged: same file, same generation (every write renames a new file over it and
	 * increments the generation). Permissions are checked again either way. */
	if (st.st_dev == v->dev && st.st_ino == v->ino && !(st.st_mode & 077) && S_ISREG(st.st_mode) &&
	    st.st_uid == geteuid() && pread(fd, gen, 8, OFF_GEN) == 8 &&
	    get64(gen) == v->img->generation) {
		rc = 0;
		goto out;
	}
	fdr_vault_image *img;
	rc = load_fd(&img, fd, v->path, &st, err);
	if (rc)
		goto out;
	rc = verify_with(v, img, err);
	if (rc) {
		fdr_vault_image_free(img);
		goto out;
	}
	fdr_vault_image_free(v->img);
	v->img = img;
	v->dev = st.st_dev;
	v->ino = st.st_ino;
out:
	close(fd);
	return rc;
}

static int unwrap(const fdr_vault_image *img, const uint8_t *kek, struct keys *k)
{
	uint8_t tag[TAG_LEN];
	memcpy(tag, img->bytes + OFF_WTAG, TAG_LEN);
	int rc = gcm(0, kek, img->bytes + OFF_WNONCE, img->bytes, OFF_WNONCE,
		     img->bytes + OFF_WKEY, KEY_LEN, k->data, tag);
	return rc ? rc : keys_derive(k);
}

int fdr_vault_unlock(fdr_vault **out, const char *path, const fdr_vault_secret *how,
		     fdr_vault_error *err)
{
	*out = NULL;
	fdr_vault *v = vault_new(path);
	if (!v)
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	int rc, fd = open_private(path, "vault", err);
	if (fd < 0) {
		fdr_vault_free(v);
		return fd;
	}
	struct stat st;
	rc = load_fd(&v->img, fd, path, &st, err);
	close(fd);
	if (rc)
		goto bad;
	v->dev = st.st_dev;
	v->ino = st.st_ino;
	uint8_t *kek = fdr_secure_alloc(KEY_LEN);
	v->k = keys_new();
	if (!kek || !v->k) {
		fdr_secure_free(kek);
		rc = fail(err, FDR_VAULT_ENOMEM, "out of memory");
		goto bad;
	}
	rc = derive_kek(&v->img->kdf, v->img->bytes + OFF_SALT, how, kek, err);
	if (!rc) {
		rc = unwrap(v->img, kek, v->k);
		if (rc == FDR_VAULT_ETAMPER)
			rc = v->img->kdf.kdf == FDR_VAULT_KDF_SCRYPT
				     ? fail(err, FDR_VAULT_EPASS, "wrong passphrase")
				     : fail(err, FDR_VAULT_EKEYFILE, "wrong key file (%s)", how->key_file);
		else if (rc)
			rc = fail(err, rc, "cannot unwrap the data key");
	}
	fdr_secure_free(kek);
	if (!rc)
		rc = verify_with(v, v->img, err);
	if (rc)
		goto bad;
	*out = v;
	return 0;
bad:
	fdr_vault_free(v);
	return rc;
}

static int new_secret_check(const fdr_vault_secret *how, const fdr_vault_kdf *kdf,
			    fdr_vault_error *err)
{
	if (kdf->kdf == FDR_VAULT_KDF_KEYFILE && !how->key_file)
		return fail(err, FDR_VAULT_EINVAL, "a key-file vault needs a key file");
	if (kdf->kdf == FDR_VAULT_KDF_SCRYPT) {
		if (!how->passphrase)
			return fail(err, FDR_VAULT_EINVAL, "a passphrase vault needs a passphrase");
		if (how->passphrase_len < 8)
			return fail(err, FDR_VAULT_EINVAL,
				    "the passphrase is too short: use at least 8 characters");
	}
	fdr_vault_error e2;
	if (kdf_check(kdf, &e2))
		return fail(err, FDR_VAULT_EINVAL, "%s", e2.message);
	return 0;
}

int fdr_vault_create(fdr_vault **out, const char *path, const fdr_vault_secret *how,
		     const fdr_vault_kdf *kdf, fdr_vault_error *err)
{
	*out = NULL;
	int rc = new_secret_check(how, kdf, err);
	if (rc)
		return rc;
	struct stat st;
	if (lstat(path, &st) == 0)
		return fail(err, FDR_VAULT_EEXIST, "a vault already exists at %s", path);
	fdr_vault *v = vault_new(path);
	uint8_t *kek = fdr_secure_alloc(KEY_LEN);
	uint8_t salt[SALT_LEN];
	struct builder b = {0};
	int lfd = -1;
	if (!v || !kek || !(v->k = keys_new())) {
		rc = fail(err, FDR_VAULT_ENOMEM, "out of memory");
		goto out;
	}
	if (RAND_bytes(salt, SALT_LEN) != 1 || RAND_bytes(v->k->data, KEY_LEN) != 1 ||
	    keys_derive(v->k)) {
		rc = fail(err, FDR_VAULT_ECRYPTO, "cannot generate keys");
		goto out;
	}
	rc = derive_kek(kdf, salt, how, kek, err);
	if (rc)
		goto out;
	rc = lock_file(path, &lfd, err);
	if (rc)
		goto out;
	if (lstat(path, &st) == 0) {
		rc = fail(err, FDR_VAULT_EEXIST, "a vault already exists at %s", path);
		goto out;
	}
	remove_stale_temps(path);
	rc = build_header(&b, kdf, salt, kek, v->k, 1);
	if (!rc)
		rc = build_finish(&b, 0, v->k, &v->img, err);
	else
		rc = fail(err, rc, "cannot build the vault header");
	if (!rc)
		rc = write_atomic(path, b.p, b.n, err);
	if (!rc && stat(path, &st) == 0) {
		v->dev = st.st_dev;
		v->ino = st.st_ino;
	}
out:
	if (lfd >= 0)
		unlock_file(lfd);
	fdr_secure_free(kek);
	free(b.p);
	if (rc) {
		fdr_vault_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

/*
 * The write transaction: lock, re-read and verify the file (another process may have
 * written it), let `change` build the new file from it, write it atomically, unlock.
 */
typedef int (*change_fn)(fdr_vault *v, const fdr_vault_image *cur, struct builder *b,
			 uint32_t *count, void *arg, fdr_vault_error *err);

static int transact(fdr_vault *v, change_fn change, void *arg, fdr_vault_error *err)
{
	if (!v->k)
		return fail(err, FDR_VAULT_ELOCKED, "the vault is locked");
	int lfd, rc = lock_file(v->path, &lfd, err);
	if (rc)
		return rc;
	fdr_vault_image *cur = NULL, *next = NULL;
	struct builder b = {0};
	int fd = open_private(v->path, "vault", err);
	struct stat st;
	if (fd < 0) {
		rc = fd == FDR_VAULT_ENOENT ? fail(err, fd, "the vault %s was removed", v->path) : fd;
		goto out;
	}
	rc = load_fd(&cur, fd, v->path, &st, err);
	close(fd);
	if (rc || (rc = verify_with(v, cur, err)))
		goto out;
	remove_stale_temps(v->path);
	uint32_t count = 0;
	rc = change(v, cur, &b, &count, arg, err);
	if (rc)
		goto out;
	rc = build_finish(&b, count, v->k, &next, err);
	if (rc)
		goto out;
	rc = write_atomic(v->path, b.p, b.n, err);
	if (rc)
		goto out;
	if (stat(v->path, &st) == 0) {
		v->dev = st.st_dev;
		v->ino = st.st_ino;
	}
	fdr_vault_image_free(v->img);
	v->img = next;
	next = NULL;
out:
	unlock_file(lfd);
	fdr_vault_image_free(cur);
	fdr_vault_image_free(next);
	free(b.p);
	return rc;
}

/* A header that keeps the current wrapping (salt, nonce, wrapped key) as it is. */
static int copy_header(const fdr_vault_image *cur, struct builder *b)
{
	uint8_t *h = grow(b, HDR_LEN);
	if (!h)
		return FDR_VAULT_ENOMEM;
	memcpy(h, cur->bytes, HDR_LEN);
	put64(h + OFF_GEN, cur->generation + 1);
	return 0;
}

struct set_arg {
	const char *name;
	const uint8_t *value;
	size_t len;
	int created;
	int remove;
};

static int change_set(fdr_vault *v, const fdr_vault_image *cur, struct builder *b,
		      uint32_t *count, void *arg, fdr_vault_error *err)
{
	struct set_arg *a = arg;
	if (copy_header(cur, b))
		return fail(err, FDR_VAULT_ENOMEM, "out of memory");
	uint64_t now = (uint64_t)time(NULL);
	size_t nl = strlen(a->name);
	int done = 0, rc = 0;
	a->created = 1;
	for (size_t i = 0; i <= cur->count && !rc; i++) {
		const struct ientry *x = i < cur->count ? &cur->e[i] : NULL;
		int c = x ? name_cmp(x->meta.name, strlen(x->meta.name), a->name, nl) : 1;
		if (!done && c >= 0) {
			done = 1;
			if (c == 0)
				a->created = 0;
			if (!a->remove) {
				rc = build_entry(b, v->k, a->name, c == 0 ? x->meta.created : now, now,
						 a->value, a->len);
				(*count)++;
			}
			if (c == 0)
				continue;
		}
		if (x) {
			rc = rc ? rc : build_copy(b, cur, x);
			(*count)++;
		}
	}
	if (rc)
		return fail(err, rc, "cannot encrypt the secret");
	if (a->remove && a->created)
		return fail(err, FDR_VAULT_EMISSING, "no secret named %s", a->name);
	if (*count > FDR_VAULT_ENTRIES_MAX)
		return fail(err, FDR_VAULT_EINVAL, "the vault is full (%d secrets)",
			    FDR_VAULT_ENTRIES_MAX);
	return 0;
}

int fdr_vault_set(fdr_vault *v, const char *name, const void *value, size_t len, int *created,
		  fdr_vault_error *err)
{
	if (!valid_name(name, strlen(name)))
		return fail(err, FDR_VAULT_EINVAL,
			    "invalid secret name '%.*s': use letters, digits, '_', '.', '-' and '/' "
			    "(up to %d, starting with a letter, digit or '_')",
			    FDR_VAULT_NAME_MAX, name, FDR_VAULT_NAME_MAX);
	if (len > FDR_VAULT_VALUE_MAX)
		return fail(err, FDR_VAULT_EINVAL, "the value of %s is too large (%zu bytes; at most %u)",
			    name, len, FDR_VAULT_VALUE_MAX);
	struct set_arg a = {name, value, len, 0, 0};
	int rc = transact(v, change_set, &a, err);
	if (!rc && created)
		*created = a.created;
	return rc;
}

int fdr_vault_rm(fdr_vault *v, const char *name, fdr_vault_error *err)
{
	if (!valid_name(name, strlen(name)))
		return fail(err, FDR_VAULT_EMISSING, "no secret named %.*s", FDR_VAULT_NAME_MAX, name);
	struct set_arg a = {name, NULL, 0, 0, 1};
	return transact(v, change_set, &a, err);
}

struct rekey_arg {
	const fdr_vault_kdf *kdf;
	const uint8_t *salt, *kek;
	struct keys *nk;
};

static int change_rekey(fdr_vault *v, const fdr_vault_image *cur, struct builder *b,
			uint32_t *count, void *arg, fdr_vault_error *err)
{
	struct rekey_arg *a = arg;
	int rc = build_header(b, a->kdf, a->salt, a->kek, a->nk, cur->generation + 1);
	for (size_t i = 0; i < cur->count && !rc; i++) {
		const struct ientry *x = &cur->e[i];
		uint8_t *val;
		rc = entry_open(cur, x, v->k, &val, err);
		if (rc)
			return rc;
		rc = build_entry(b, a->nk, x->meta.name, x->meta.created, x->meta.updated, val,
				 x->meta.size);
		fdr_secure_free(val);
		(*count)++;
	}
	if (rc)
		return fail(err, rc, "cannot re-encrypt the vault");
	/* The MAC of the new file is under the new key. */
	memcpy(v->k, a->nk, sizeof *v->k);
	return 0;
}

int fdr_vault_rekey(fdr_vault *v, const fdr_vault_secret *how, const fdr_vault_kdf *kdf,
		    fdr_vault_error *err)
{
	if (!v->k)
		return fail(err, FDR_VAULT_ELOCKED, "the vault is locked");
	int rc = new_secret_check(how, kdf, err);
	if (rc)
		return rc;
	uint8_t salt[SALT_LEN];
	uint8_t *kek = fdr_secure_alloc(KEY_LEN);
	struct keys *nk = keys_new(), *old = keys_new();
	if (!kek || !nk || !old) {
		rc = fail(err, FDR_VAULT_ENOMEM, "out of memory");
		goto out;
	}
	if (RAND_bytes(salt, SALT_LEN) != 1 || RAND_bytes(nk->data, KEY_LEN) != 1 || keys_derive(nk)) {
		rc = fail(err, FDR_VAULT_ECRYPTO, "cannot generate keys");
		goto out;
	}
	rc = derive_kek(kdf, salt, how, kek, err);
	if (rc)
		goto out;
	memcpy(old, v->k, sizeof *old);
	struct rekey_arg a = {kdf, salt, kek, nk};
	rc = transact(v, change_rekey, &a, err);
	if (rc) /* keep the old keys when nothing was written */
		memcpy(v->k, old, sizeof *old);
out:
	fdr_secure_free(kek);
	fdr_secure_free(nk);
	fdr_secure_free(old);
	return rc;
}

int fdr_vault_get(fdr_vault *v, const char *name, uint8_t **value, size_t *len,
		  fdr_vault_error *err)
{
	int rc = fdr_vault_refresh(v, err);
	if (rc)
		return rc;
	const struct ientry *x = image_find(v->img, name);
	if (!x)
		return fail(err, FDR_VAULT_EMISSING, "no secret named %.*s", FDR_VAULT_NAME_MAX, name);
	rc = entry_open(v->img, x, v->k, value, err);
	if (!rc)
		*len = x->meta.size;
	return rc;
}

int fdr_vault_make_key_file(const char *path, fdr_vault_error *err)
{
	uint8_t raw[32];
	char hex[65];
	if (RAND_bytes(raw, sizeof raw) != 1)
		return fail(err, FDR_VAULT_ECRYPTO, "cannot generate a key");
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	hex[64] = '\n';
	OPENSSL_cleanse(raw, sizeof raw);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		OPENSSL_cleanse(hex, sizeof hex);
		return fail(err, e == EEXIST ? FDR_VAULT_EEXIST : FDR_VAULT_EIO,
			    "cannot create key file %s: %s", path, strerror(e));
	}
	ssize_t n = write(fd, hex, sizeof hex);
	OPENSSL_cleanse(hex, sizeof hex);
	if (n != (ssize_t)sizeof hex || fsync(fd) != 0) {
		int e = n < 0 ? errno : EIO;
		close(fd);
		unlink(path);
		return fail(err, FDR_VAULT_EIO, "cannot write key file %s: %s", path, strerror(e));
	}
	close(fd);
	return 0;
}

#ifndef FDR_NO_LUA
/* ---- Lua binding ---- */
#include "fdr.h"
#include "redact.h"

#include <signal.h>
#include <termios.h>

#define VAULT_MT "foundry.vault.Vault"

typedef struct {
	fdr_vault *v;
} lvault;

static const char *hint_for(int code)
{
	switch (code) {
	case FDR_VAULT_ENOENT: return "create one with: foundry vault init";
	case FDR_VAULT_EPASS: return "check FOUNDRY_VAULT_PASSPHRASE or retype the passphrase";
	case FDR_VAULT_EVERSION: return "this vault was written by a newer foundry: upgrade foundry";
	case FDR_VAULT_ETRUNC:
	case FDR_VAULT_ECORRUPT:
		return "restore the vault from a backup, or move it away and run foundry vault init";
	case FDR_VAULT_ETAMPER: return "restore the vault from a backup you trust";
	case FDR_VAULT_ESTALE: return "unlock the vault again with the new passphrase";
	case FDR_VAULT_ENOSPC: return "free some disk space and try again";
	default: return NULL;
	}
}

static void push_verr(lua_State *L, const fdr_vault_error *err)
{
	char code[64];
	snprintf(code, sizeof code, "vault.%s", fdr_vault_code_name(err->code));
	fdr_push_error(L, code, hint_for(err->code), "%s", err->message);
}

static int raise_verr(lua_State *L, const fdr_vault_error *err)
{
	push_verr(L, err);
	return lua_error(L);
}

static lvault *check_vault(lua_State *L, int idx)
{
	lvault *lv = luaL_checkudata(L, idx, VAULT_MT);
	if (!lv->v)
		luaL_error(L, "vault: use after close");
	return lv;
}

static void push_vault(lua_State *L, fdr_vault *v)
{
	lvault *lv = lua_newuserdatauv(L, sizeof *lv, 0);
	lv->v = v;
	luaL_setmetatable(L, VAULT_MT);
}

/* ---- reading secrets from a terminal, without echo ---- */

static int tty_fd = -1;
static struct termios tty_saved;
static struct sigaction tty_old_int, tty_old_term;

static void tty_restore_and_die(int sig)
{
	if (tty_fd >= 0)
		tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Read one line from /dev/tty with echo off into locked memory. Returns its length, or -1
 * with a message in err. */
static long tty_read(const char *prompt, uint8_t **out, fdr_vault_error *err)
{
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios t;
	if (fd < 0 || tcgetattr(fd, &tty_saved) != 0) {
		if (fd >= 0)
			close(fd);
		fail(err, FDR_VAULT_ELOCKED, "no terminal to ask for the secret on");
		return -1;
	}
	uint8_t *buf = fdr_secure_alloc(PASS_MAX + 1);
	if (!buf) {
		close(fd);
		fail(err, FDR_VAULT_ENOMEM, "out of memory");
		return -1;
	}
	tty_fd = fd;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = tty_restore_and_die;
	sigaction(SIGINT, &sa, &tty_old_int);
	sigaction(SIGTERM, &sa, &tty_old_term);
	t = tty_saved;
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	t.c_lflag |= ICANON;
	tcsetattr(fd, TCSAFLUSH, &t);
	if (write(fd, prompt, strlen(prompt)) < 0) { /* the read below reports a dead tty */
	}
	size_t n = 0;
	int done = 0, eof = 0;
	while (!done && n < PASS_MAX) {
		ssize_t got = read(fd, buf + n, PASS_MAX - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			eof = 1;
			break;
		}
		for (ssize_t i = 0; i < got; i++)
			if (buf[n + (size_t)i] == '\n') {
				n += (size_t)i;
				done = 1;
				break;
			}
		if (!done)
			n += (size_t)got;
	}
	tcsetattr(fd, TCSAFLUSH, &tty_saved);
	sigaction(SIGINT, &tty_old_int, NULL);
	sigaction(SIGTERM, &tty_old_term, NULL);
	tty_fd = -1;
	if (write(fd, "\n", 1) < 0) { /* cosmetic */
	}
	close(fd);
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	for (size_t i = n; i <= PASS_MAX; i++)
		buf[i] = 0;
	if (eof && n == 0) {
		fdr_secure_free(buf);
		fail(err, FDR_VAULT_ELOCKED, "no input on the terminal");
		return -1;
	}
	*out = buf;
	return (long)n;
}

/* What a create/unlock/rekey needs to know: the secret (copied into locked memory). */
struct how {
	uint8_t *pass;
	size_t pass_len;
	char *key_file;
};

static void how_free(struct how *h)
{
	fdr_secure_free(h->pass);
	free(h->key_file);
	h->pass = NULL;
	h->key_file = NULL;
}

static void how_secret(const struct how *h, fdr_vault_secret *s)
{
	s->passphrase = h->pass ? (const char *)h->pass : NULL;
	s->passphrase_len = h->pass_len;
	s->key_file = h->key_file;
}

/* Scrub an environment variable: overwrite its bytes (which /proc/<pid>/environ shows
 * for the variables the process started with) and remove it, so children do not inherit
 * it either. */
static void scrub_env(const char *name)
{
	char *v = getenv(name);
	if (v)
		OPENSSL_cleanse(v, strlen(v));
	unsetenv(name);
}

/* Fill h from the table at idx: {passphrase=} | {key_file=} | {env=NAME} |
 * {prompt=TEXT, confirm=bool}. Raises on misuse or when the source is empty. An env
 * variable is scrubbed once read. */
static void how_from_lua(lua_State *L, int idx, struct how *h)
{
	memset(h, 0, sizeof *h);
	luaL_checktype(L, idx, LUA_TTABLE);
	int top = lua_gettop(L);
	fdr_vault_error err = {0};
	const char *src = NULL, *env = NULL;
	size_t len = 0;
	uint8_t *tty = NULL;
	if (lua_getfield(L, idx, "key_file") == LUA_TSTRING) {
		if (!(h->key_file = strdup(lua_tostring(L, -1))))
			luaL_error(L, "out of memory");
		lua_settop(L, top);
		return;
	}
	if (lua_getfield(L, idx, "passphrase") == LUA_TSTRING) {
		src = lua_tolstring(L, -1, &len);
	} else if (lua_getfield(L, idx, "env") == LUA_TSTRING) {
		env = lua_tostring(L, -1);
		src = getenv(env);
		if (!src || !*src)
			fdr_error(L, "vault.locked", NULL, "%s is not set", env);
		len = strlen(src);
	} else if (lua_getfield(L, idx, "prompt") == LUA_TSTRING) {
		const char *prompt = lua_tostring(L, -1);
		lua_getfield(L, idx, "confirm");
		int confirm = lua_toboolean(L, -1);
		long n = tty_read(prompt, &tty, &err);
		if (n < 0)
			raise_verr(L, &err);
		if (confirm) {
			uint8_t *again;
			long m = tty_read("Repeat it: ", &again, &err);
			if (m < 0) {
				fdr_secure_free(tty);
				raise_verr(L, &err);
			}
			int same = m == n && CRYPTO_memcmp(tty, again, (size_t)n) == 0;
			fdr_secure_free(again);
			if (!same) {
				fdr_secure_free(tty);
				fdr_error(L, "vault.mismatch", "try again", "the passphrases do not match");
			}
		}
		src = (const char *)tty;
		len = (size_t)n;
	} else {
		luaL_error(L, "vault: expected {passphrase=}, {key_file=}, {env=} or {prompt=}");
	}
	if (len > PASS_MAX) {
		fdr_secure_free(tty);
		fdr_error(L, "vault.invalid", NULL, "the passphrase is too long (at most %d bytes)",
			  PASS_MAX);
	}
	if (!(h->pass = fdr_secure_alloc(len + 1))) {
		fdr_secure_free(tty);
		luaL_error(L, "out of memory");
	}
	memcpy(h->pass, src, len);
	h->pass_len = len;
	fdr_secure_free(tty);
	if (env)
		scrub_env(env);
	lua_settop(L, top);
}

static void kdf_from_lua(lua_State *L, int idx, fdr_vault_kdf *k, int keyfile)
{
	fdr_vault_kdf_default(k);
	if (keyfile) {
		k->kdf = FDR_VAULT_KDF_KEYFILE;
		k->log2n = k->r = k->p = 0;
		return;
	}
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, "log2n");
	k->log2n = (unsigned)luaL_optinteger(L, -1, k->log2n);
	lua_getfield(L, idx, "r");
	k->r = (unsigned)luaL_optinteger(L, -1, k->r);
	lua_getfield(L, idx, "p");
	k->p = (unsigned)luaL_optinteger(L, -1, k->p);
	lua_pop(L, 3);
	fdr_vault_error err;
	if (kdf_check(k, &err))
		luaL_error(L, "vault: kdf: %s", err.message);
}

/* ---- operations on the thread pool ---- */

enum { OP_CREATE, OP_UNLOCK, OP_SET, OP_RM, OP_REKEY };

struct job {
	int op;
	char *path;
	struct how how;
	fdr_vault_kdf kdf;
	char name[FDR_VAULT_NAME_MAX + 1];
	uint8_t *value;
	size_t value_len;
	fdr_vault *work; /* the result (create, unlock) or a dup of the vault (others) */
	int rc, created;
	fdr_vault_error err;
	lua_State *main;
	lvault *lv;    /* set/rm/rekey: the Vault userdata, */
	int vault_ref; /* kept alive by this reference */
};

static void job_free(struct job *j)
{
	how_free(&j->how);
	fdr_secure_free(j->value);
	fdr_vault_free(j->work);
	if (j->vault_ref != LUA_NOREF)
		luaL_unref(j->main, LUA_REGISTRYINDEX, j->vault_ref);
	free(j->path);
	free(j);
}

static void job_work(void *data)
{
	struct job *j = data;
	fdr_vault_secret s;
	how_secret(&j->how, &s);
	switch (j->op) {
	case OP_CREATE: j->rc = fdr_vault_create(&j->work, j->path, &s, &j->kdf, &j->err); break;
	case OP_UNLOCK: j->rc = fdr_vault_unlock(&j->work, j->path, &s, &j->err); break;
	case OP_SET:
		j->rc = fdr_vault_set(j->work, j->name, j->value, j->value_len, &j->created, &j->err);
		break;
	case OP_RM: j->rc = fdr_vault_rm(j->work, j->name, &j->err); break;
	case OP_REKEY: j->rc = fdr_vault_rekey(j->work, &s, &j->kdf, &j->err); break;
	}
	how_free(&j->how);
	/* Free the random generator and error state OpenSSL keeps for this pool thread: the
	 * pool's threads outlive everything, so it would otherwise be lost at exit. */
	OPENSSL_thread_stop();
}

static void job_after(fdr_wait *w, void *data)
{
	struct job *j = data;
	if (!fdr_wait_live(w)) {
		job_free(j);
		fdr_wait_drop(w);
		return;
	}
	lua_State *S = fdr_wait_state(w);
	if (j->rc) {
		push_verr(S, &j->err);
		job_free(j);
		fdr_wait_reject(w);
		return;
	}
	int n = 1;
	if (j->op == OP_CREATE || j->op == OP_UNLOCK) {
		push_vault(S, j->work);
		j->work = NULL;
	} else {
		if (j->lv->v) /* not closed meanwhile */
			fdr_vault_adopt(j->lv->v, j->work, j->op == OP_REKEY);
		if (j->op == OP_SET)
			lua_pushboolean(S, j->created);
		else
			n = 0;
	}
	job_free(j);
	fdr_wait_resolve(w, n);
}

static struct job *job_new(lua_State *L, int op)
{
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		luaL_error(L, "out of memory");
	j->op = op;
	j->vault_ref = LUA_NOREF;
	j->main = fdr_host_state(fdr_host_of(L));
	return j;
}

static int job_start(lua_State *L, struct job *j, const char *what)
{
	fdr_wait *w = fdr_wait_new(L, what, NULL, j);
	int rc = fdr_queue_work(L, w, job_work, job_after);
	if (rc < 0) {
		job_free(j);
		fdr_wait_drop(w);
		return luaL_error(L, "%s: cannot queue work: %s", what, uv_strerror(rc));
	}
	return fdr_await(L, w);
}

/* Guard a job being built against a Lua error (how_from_lua may raise). */
static int job_gc(lua_State *L)
{
	struct job **jp = lua_touserdata(L, 1);
	if (*jp)
		job_free(*jp);
	*jp = NULL;
	return 0;
}

static struct job **job_guard(lua_State *L, struct job *j)
{
	struct job **jp = lua_newuserdatauv(L, sizeof *jp, 0);
	*jp = j;
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, job_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	return jp;
}

/* _vault.create(path, how, kdf) -> Vault */
static int l_create(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct job **jp = job_guard(L, job_new(L, OP_CREATE));
	struct job *j = *jp;
	if (!(j->path = strdup(path)))
		return luaL_error(L, "out of memory");
	how_from_lua(L, 2, &j->how);
	kdf_from_lua(L, 3, &j->kdf, j->how.key_file != NULL);
	*jp = NULL;
	return job_start(L, j, "vault.create");
}

/* _vault.unlock(path, how) -> Vault */
static int l_unlock(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct job **jp = job_guard(L, job_new(L, OP_UNLOCK));
	struct job *j = *jp;
	if (!(j->path = strdup(path)))
		return luaL_error(L, "out of memory");
	how_from_lua(L, 2, &j->how);
	*jp = NULL;
	return job_start(L, j, "vault.unlock");
}

static struct job *vault_job(lua_State *L, int op, lvault **lvp)
{
	lvault *lv = check_vault(L, 1);
	if (fdr_vault_is_locked(lv->v))
		fdr_error(L, "vault.locked", "unlock it again", "the vault is locked");
	struct job **jp = job_guard(L, job_new(L, op));
	struct job *j = *jp;
	if (!(j->work = fdr_vault_dup(lv->v)))
		luaL_error(L, "out of memory");
	lua_pushvalue(L, 1);
	j->vault_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	j->lv = lv;
	*lvp = lv;
	return j;
}

static void check_name(lua_State *L, int idx, char *out)
{
	size_t n;
	const char *name = luaL_checklstring(L, idx, &n);
	if (!valid_name(name, n))
		fdr_error(L, "vault.invalid", NULL,
			  "invalid secret name '%.*s': use letters, digits, '_', '.', '-' and '/' "
			  "(up to %d, starting with a letter, digit or '_')",
			  FDR_VAULT_NAME_MAX, name, FDR_VAULT_NAME_MAX);
	memcpy(out, name, n + 1);
}

/* v:set(name, value) -> true when the secret is new */
static int v_set(lua_State *L)
{
	char name[FDR_VAULT_NAME_MAX + 1];
	check_name(L, 2, name);
	size_t len;
	const char *value = luaL_checklstring(L, 3, &len);
	if (len > FDR_VAULT_VALUE_MAX)
		fdr_error(L, "vault.invalid", NULL, "the value of %s is too large (%zu bytes; at most %u)",
			  name, len, FDR_VAULT_VALUE_MAX);
	lvault *lv;
	lua_settop(L, 3);
	struct job *j = vault_job(L, OP_SET, &lv);
	struct job **jp = lua_touserdata(L, -1);
	memcpy(j->name, name, sizeof name);
	if (!(j->value = fdr_secure_alloc(len + 1)))
		return luaL_error(L, "out of memory");
	memcpy(j->value, value, len);
	j->value_len = len;
	*jp = NULL;
	return job_start(L, j, "vault.set");
}

/* v:rm(name) */
static int v_rm(lua_State *L)
{
	char name[FDR_VAULT_NAME_MAX + 1];
	size_t n;
	const char *s = luaL_checklstring(L, 2, &n);
	if (!valid_name(s, n))
		fdr_error(L, "vault.missing", NULL, "no secret named %.*s", FDR_VAULT_NAME_MAX, s);
	memcpy(name, s, n + 1);
	lvault *lv;
	lua_settop(L, 2);
	struct job *j = vault_job(L, OP_RM, &lv);
	struct job **jp = lua_touserdata(L, -1);
	memcpy(j->name, name, sizeof name);
	*jp = NULL;
	return job_start(L, j, "vault.rm");
}

/* v:rekey(how, kdf) */
static int v_rekey(lua_State *L)
{
	lvault *lv;
	lua_settop(L, 3);
	luaL_checktype(L, 2, LUA_TTABLE);
	struct job *j = vault_job(L, OP_REKEY, &lv);
	struct job **jp = lua_touserdata(L, -1);
	how_from_lua(L, 2, &j->how);
	kdf_from_lua(L, 3, &j->kdf, j->how.key_file != NULL);
	*jp = NULL;
	return job_start(L, j, "vault.rekey");
}

/* v:get(name) -> value (synchronous: a small file read when it changed, one decryption) */
static int v_get(lua_State *L)
{
	lvault *lv = check_vault(L, 1);
	size_t n;
	const char *name = luaL_checklstring(L, 2, &n);
	fdr_vault_error err;
	uint8_t *value;
	size_t len;
	int rc = fdr_vault_get(lv->v, name, &value, &len, &err);
	if (rc)
		return raise_verr(L, &err);
	lua_pushlstring(L, (const char *)value, len);
	fdr_secure_free(value);
	return 1;
}

static void push_meta(lua_State *L, const fdr_vault_meta *m)
{
	lua_createtable(L, 0, 4);
	lua_pushstring(L, m->name);
	lua_setfield(L, -2, "name");
	lua_pushinteger(L, m->size);
	lua_setfield(L, -2, "size");
	lua_pushinteger(L, (lua_Integer)m->created);
	lua_setfield(L, -2, "created");
	lua_pushinteger(L, (lua_Integer)m->updated);
	lua_setfield(L, -2, "updated");
}

static void push_entries(lua_State *L, const fdr_vault_image *img)
{
	size_t n = fdr_vault_image_count(img);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		fdr_vault_meta m;
		fdr_vault_image_meta(img, i, &m);
		push_meta(L, &m);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
}

/* v:list() -> { {name=, size=, created=, updated=}, ... } */
static int v_list(lua_State *L)
{
	lvault *lv = check_vault(L, 1);
	fdr_vault_error err;
	if (fdr_vault_refresh(lv->v, &err))
		return raise_verr(L, &err);
	push_entries(L, lv->v->img);
	return 1;
}

static int v_has(lua_State *L)
{
	lvault *lv = check_vault(L, 1);
	const char *name = luaL_checkstring(L, 2);
	fdr_vault_error err;
	if (fdr_vault_refresh(lv->v, &err))
		return raise_verr(L, &err);
	lua_pushboolean(L, image_find(lv->v->img, name) != NULL);
	return 1;
}

/* v:redactor([shapes]) -> a Redactor over every secret, built without Lua strings */
static int v_redactor(lua_State *L)
{
	lvault *lv = check_vault(L, 1);
	int with_shapes = lua_isnone(L, 2) ? 1 : lua_toboolean(L, 2);
	fdr_vault_error err;
	if (fdr_vault_refresh(lv->v, &err))
		return raise_verr(L, &err);
	fdr_redactor *r = fdr_redactor_new(with_shapes);
	if (!r)
		return luaL_error(L, "out of memory");
	const fdr_vault_image *img = lv->v->img;
	for (size_t i = 0; i < img->count; i++) {
		uint8_t *val;
		if (entry_open(img, &img->e[i], lv->v->k, &val, &err)) {
			fdr_redactor_free(r);
			return raise_verr(L, &err);
		}
		int rc = fdr_redactor_add_secret(r, img->e[i].meta.name, val, img->e[i].meta.size);
		fdr_secure_free(val);
		if (rc == FDR_REDACT_ENOMEM) {
			fdr_redactor_free(r);
			return luaL_error(L, "out of memory");
		}
	}
	fdr_redactor_push(L, r);
	return 1;
}

static int v_lock(lua_State *L)
{
	lvault *lv = luaL_checkudata(L, 1, VAULT_MT);
	if (lv->v)
		fdr_vault_lock(lv->v);
	return 0;
}

static int v_locked(lua_State *L)
{
	lvault *lv = luaL_checkudata(L, 1, VAULT_MT);
	lua_pushboolean(L, !lv->v || fdr_vault_is_locked(lv->v));
	return 1;
}

static int v_close(lua_State *L)
{
	lvault *lv = luaL_checkudata(L, 1, VAULT_MT);
	fdr_vault_free(lv->v);
	lv->v = NULL;
	return 0;
}

static int v_path(lua_State *L)
{
	lvault *lv = check_vault(L, 1);
	lua_pushstring(L, lv->v->path);
	return 1;
}

static int v_tostring(lua_State *L)
{
	lvault *lv = luaL_checkudata(L, 1, VAULT_MT);
	if (!lv->v)
		lua_pushliteral(L, "foundry.vault.Vault (closed)");
	else
		lua_pushfstring(L, "foundry.vault.Vault (%s, %s, %d secrets)", lv->v->path,
				lv->v->k ? "unlocked" : "locked", (int)lv->v->img->count);
	return 1;
}

static void push_kdf(lua_State *L, const fdr_vault_kdf *k)
{
	lua_pushstring(L, k->kdf == FDR_VAULT_KDF_SCRYPT ? "scrypt" : "keyfile");
	lua_setfield(L, -2, "kdf");
	if (k->kdf == FDR_VAULT_KDF_SCRYPT) {
		lua_pushinteger(L, k->log2n);
		lua_setfield(L, -2, "log2n");
		lua_pushinteger(L, k->r);
		lua_setfield(L, -2, "r");
		lua_pushinteger(L, k->p);
		lua_setfield(L, -2, "p");
	}
}

/* _vault.info(path) -> {version=, kdf=, log2n=, r=, p=, generation=, size=, entries=} */
static int l_info(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	fdr_vault_image *img;
	fdr_vault_error err;
	if (fdr_vault_load(&img, path, &err))
		return raise_verr(L, &err);
	lua_createtable(L, 0, 8);
	lua_pushinteger(L, VERSION);
	lua_setfield(L, -2, "version");
	push_kdf(L, &img->kdf);
	lua_pushinteger(L, (lua_Integer)img->generation);
	lua_setfield(L, -2, "generation");
	lua_pushinteger(L, (lua_Integer)img->len);
	lua_setfield(L, -2, "size");
	push_entries(L, img);
	lua_setfield(L, -2, "entries");
	fdr_vault_image_free(img);
	return 1;
}

/* _vault.make_key_file(path) */
static int l_make_key_file(lua_State *L)
{
	fdr_vault_error err;
	if (fdr_vault_make_key_file(luaL_checkstring(L, 1), &err))
		return raise_verr(L, &err);
	return 0;
}

/* _vault.read_secret(prompt) -> string read from the terminal without echo */
static int l_read_secret(lua_State *L)
{
	const char *prompt = luaL_checkstring(L, 1);
	uint8_t *buf;
	fdr_vault_error err;
	long n = tty_read(prompt, &buf, &err);
	if (n < 0)
		return raise_verr(L, &err);
	lua_pushlstring(L, (const char *)buf, (size_t)n);
	fdr_secure_free(buf);
	return 1;
}

static int l_has_tty(lua_State *L)
{
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	lua_pushboolean(L, fd >= 0);
	if (fd >= 0)
		close(fd);
	return 1;
}

static int l_protect_process(lua_State *L)
{
	int rc = fdr_vault_protect_process();
	if (rc)
		return fdr_error(L, "vault.protect", NULL, "cannot protect the process: %s",
				 strerror(-rc));
	lua_pushboolean(L, 1);
	return 1;
}

static int l_dumpable(lua_State *L)
{
	lua_pushboolean(L, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1);
	return 1;
}

static int l_kdf_default(lua_State *L)
{
	fdr_vault_kdf k;
	fdr_vault_kdf_default(&k);
	lua_newtable(L);
	push_kdf(L, &k);
	return 1;
}

/* _vault.scrub_env(name): wipe and remove an environment variable */
static int l_scrub_env(lua_State *L)
{
	scrub_env(luaL_checkstring(L, 1));
	return 0;
}

int luaopen_foundry_vault(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"get", v_get},	      {"set", v_set},	{"rm", v_rm},
		{"list", v_list},     {"has", v_has},	{"rekey", v_rekey},
		{"lock", v_lock},     {"locked", v_locked}, {"close", v_close},
		{"path", v_path},     {"redactor", v_redactor}, {NULL, NULL}};
	fdr_new_class(L, VAULT_MT, methods, v_close, v_tostring);
	static const luaL_Reg fns[] = {{"create", l_create},
				       {"unlock", l_unlock},
				       {"info", l_info},
				       {"make_key_file", l_make_key_file},
				       {"read_secret", l_read_secret},
				       {"has_tty", l_has_tty},
				       {"protect_process", l_protect_process},
				       {"dumpable", l_dumpable},
				       {"kdf_default", l_kdf_default},
				       {"scrub_env", l_scrub_env},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
#endif
