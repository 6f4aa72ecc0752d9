/*
 * vault.h - the encrypted secrets file (module foundry._vault).
 *
 * One file holds every secret: a header naming the key derivation (scrypt of a passphrase,
 * or a key file), a random 256-bit data key wrapped (AES-256-GCM) by the derived key, then
 * one AES-256-GCM record per secret whose metadata (name, times, size) is authenticated as
 * associated data, then an HMAC-SHA256 of the whole file under a key derived from the data
 * key and a plain SHA-256 checksum. docs/security.md ("Vault") describes the layout.
 *
 * Every write takes an exclusive flock on "<vault>.lock", re-reads the file, changes it,
 * writes a temporary file, fsyncs it, renames it over the vault and fsyncs the directory:
 * a crash at any point leaves the old or the new vault, and concurrent writers serialise.
 * Readers take no lock.
 *
 * Functions return 0 or a negative FDR_VAULT_E* code with details in *err. Nothing here
 * touches a lua_State except the Lua binding at the end of vault.c, so the slow functions
 * (fdr_vault_create, fdr_vault_unlock, fdr_vault_rekey) run on the libuv thread pool.
 */
#ifndef FDR_VAULT_H
#define FDR_VAULT_H

#include <stddef.h>
#include <stdint.h>

enum {
	FDR_VAULT_OK = 0,
	FDR_VAULT_EIO = -1,         /* an I/O error other than those below */
	FDR_VAULT_ENOENT = -2,      /* the vault file does not exist */
	FDR_VAULT_EPERM = -3,       /* wrong owner, mode or file type (vault or key file) */
	FDR_VAULT_EFORMAT = -4,     /* not a vault file (bad magic) */
	FDR_VAULT_EVERSION = -5,    /* a version this build does not read */
	FDR_VAULT_ETRUNC = -6,      /* the file ends early */
	FDR_VAULT_ECORRUPT = -7,    /* checksum mismatch or impossible values */
	FDR_VAULT_EPASS = -8,       /* wrong passphrase */
	FDR_VAULT_EKEYFILE = -9,    /* wrong key file, or the key file is unusable */
	FDR_VAULT_ETAMPER = -10,    /* checksum fine but the keyed MAC or an entry tag fails */
	FDR_VAULT_EMISSING = -11,   /* no such secret */
	FDR_VAULT_EEXIST = -12,     /* the vault already exists (create) */
	FDR_VAULT_ENOSPC = -13,     /* disk full or file size limit: nothing was changed */
	FDR_VAULT_ELOCKED = -14,    /* the handle was locked (keys wiped) */
	FDR_VAULT_ESTALE = -15,     /* rekeyed since this handle was unlocked: unlock again */
	FDR_VAULT_EINVAL = -16,     /* bad name, value, parameter or unlock method */
	FDR_VAULT_ENOMEM = -17,
	FDR_VAULT_ECRYPTO = -18,    /* OpenSSL failed for a reason other than the above */
};

typedef struct {
	int code;
	char message[512];
} fdr_vault_error;

/* Stable names for codes ("wrong_passphrase", "truncated", ...): Lua error codes are
 * "vault." followed by this. */
const char *fdr_vault_code_name(int code);

#define FDR_VAULT_NAME_MAX 128
#define FDR_VAULT_VALUE_MAX (1u << 20)
#define FDR_VAULT_ENTRIES_MAX 10000

enum { FDR_VAULT_KDF_SCRYPT = 1, FDR_VAULT_KDF_KEYFILE = 2 };

typedef struct {
	int kdf;         /* FDR_VAULT_KDF_* */
	unsigned log2n;  /* scrypt N = 2^log2n */
	unsigned r, p;
} fdr_vault_kdf;

/* The defaults: scrypt N=2^16, r=8, p=1 (64 MiB, about 0.35 s on a 2020s core). */
void fdr_vault_kdf_default(fdr_vault_kdf *k);

/* How to unlock (or, for create and rekey, how to lock): a passphrase or a key file path.
 * Both are borrowed for the call. */
typedef struct {
	const char *passphrase;
	size_t passphrase_len;
	const char *key_file;
} fdr_vault_secret;

typedef struct {
	char name[FDR_VAULT_NAME_MAX + 1];
	uint64_t created, updated; /* unix seconds */
	uint32_t size;
} fdr_vault_meta;

/* A parsed vault file (names and metadata readable without a key). */
typedef struct fdr_vault_image fdr_vault_image;

/* Parse `len` bytes (copied). Checks magic, version, structure, bounds and checksum; not
 * the keyed MAC. Free with fdr_vault_image_free. */
int fdr_vault_parse(fdr_vault_image **out, const void *buf, size_t len, fdr_vault_error *err);
/* Read and parse the file at path, refusing a file group or others can read, a file not
 * owned by this user, and anything but a regular file. */
int fdr_vault_load(fdr_vault_image **out, const char *path, fdr_vault_error *err);
void fdr_vault_image_free(fdr_vault_image *img);
size_t fdr_vault_image_count(const fdr_vault_image *img);
/* Metadata of entry i (sorted by name). */
void fdr_vault_image_meta(const fdr_vault_image *img, size_t i, fdr_vault_meta *m);
void fdr_vault_image_kdf(const fdr_vault_image *img, fdr_vault_kdf *k);
uint64_t fdr_vault_image_generation(const fdr_vault_image *img);

/* An unlocked vault: keys in locked memory, wiped by fdr_vault_lock and fdr_vault_free. */
typedef struct fdr_vault fdr_vault;

/* Create a new, empty vault at path (refused when it exists) locked with `how`. For a key
 * file, kdf->kdf must be FDR_VAULT_KDF_KEYFILE. */
int fdr_vault_create(fdr_vault **out, const char *path, const fdr_vault_secret *how,
		     const fdr_vault_kdf *kdf, fdr_vault_error *err);
/* Load and unlock. The slow part (scrypt) runs here. */
int fdr_vault_unlock(fdr_vault **out, const char *path, const fdr_vault_secret *how,
		     fdr_vault_error *err);
/* Re-read the file if it changed on disk (another process wrote it). get and list call
 * it. */
int fdr_vault_refresh(fdr_vault *v, fdr_vault_error *err);
/* The current image (borrowed until the next call on v). */
const fdr_vault_image *fdr_vault_image_of(const fdr_vault *v);
/* Decrypt a secret into locked memory: *value (NUL-terminated, *len bytes), caller frees
 * with fdr_secure_free. */
int fdr_vault_get(fdr_vault *v, const char *name, uint8_t **value, size_t *len,
		  fdr_vault_error *err);
/* Add or replace a secret; *created is set to 1 when it was new. */
int fdr_vault_set(fdr_vault *v, const char *name, const void *value, size_t len, int *created,
		  fdr_vault_error *err);
int fdr_vault_rm(fdr_vault *v, const char *name, fdr_vault_error *err);
/* New key (passphrase or key file) and new data key; every secret re-encrypted. */
int fdr_vault_rekey(fdr_vault *v, const fdr_vault_secret *how, const fdr_vault_kdf *kdf,
		    fdr_vault_error *err);
/* A copy of v (keys and image) for work on another thread; adopt its results with
 * fdr_vault_adopt. NULL when out of memory or v is locked. */
fdr_vault *fdr_vault_dup(const fdr_vault *v);
/* Take from `w` (a dup of v, after set/rm/rekey) its image when it is newer than v's, and
 * its keys when `keys` and v is not locked. w is left for the caller to free. */
void fdr_vault_adopt(fdr_vault *v, fdr_vault *w, int keys);
/* Wipe the keys; every later call but free fails with FDR_VAULT_ELOCKED. */
void fdr_vault_lock(fdr_vault *v);
int fdr_vault_is_locked(const fdr_vault *v);
const char *fdr_vault_path(const fdr_vault *v);
void fdr_vault_free(fdr_vault *v);

/* Create a key file: 32 random bytes, hex, mode 0600, refused when path exists. */
int fdr_vault_make_key_file(const char *path, fdr_vault_error *err);

/* Make this process undumpable (no core dumps, no ptrace or /proc/<pid>/mem by other
 * processes of the same user): the process holding an unlocked vault calls it. Returns 0
 * or -errno. */
int fdr_vault_protect_process(void);

/* Locked, zeroed memory kept out of core dumps (page-granular; for keys and secret values).
 * NULL when out of memory. Free with fdr_secure_free, which wipes it. */
void *fdr_secure_alloc(size_t n);
void fdr_secure_free(void *p);

/* Test hook: when set, called at named points of a write ("before_rename"); a non-zero
 * return fails the write there as an I/O error. NULL in production. */
extern int (*fdr_vault_test_hook)(const char *point);

#endif
