/*
 * tls.c - the CA, leaf minting and TLS contexts (see tls.h).
 *
 * Every leaf shares one P-256 key generated at open (in memory only): minting is then
 * one signature, and a leaf is worthless without the CA that every sandbox trusts, whose
 * key never leaves the host.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_SIZE 1024
#define LEAF_DAYS 90
#define PX_SAN_MAX 300

struct leaf {
	char *host;
	X509 *cert;
};

struct px_ca {
	X509 *cert;
	EVP_PKEY *key;
	EVP_PKEY *leaf_key;
	SSL_CTX *server;
	char *cert_path;
	struct leaf cache[CACHE_SIZE];
	size_t minted, cached;
};

static void set_err(char *err, size_t errsz, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	snprintf(err, errsz, "%s%s%s", what, e ? ": " : "", buf);
	ERR_clear_error();
}

static EVP_PKEY *new_p256(void)
{
	return EVP_EC_gen("P-256");
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -1;
	int ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static int random_serial(X509 *cert)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof b) != 1)
		return -1;
	b[0] &= 0x7f; /* positive */
	BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
	int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

static X509 *make_ca(EVP_PKEY *key)
{
	X509 *c = X509_new();
	if (!c)
		return NULL;
	char host[128] = "localhost", cn[256];
	gethostname(host, sizeof host - 1);
	snprintf(cn, sizeof cn, "Foundry local CA (%s)", host);
	X509_NAME *name = X509_get_subject_name(c);
	if (X509_set_version(c, 2) != 1 || random_serial(c) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(c), -86400) ||
	    !X509_gmtime_adj(X509_getm_notAfter(c), 10L * 365 * 86400) ||
	    !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (unsigned char *)"Foundry",
					-1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (unsigned char *)cn, -1, -1,
					0) ||
	    X509_set_issuer_name(c, name) != 1 || X509_set_pubkey(c, key) != 1 ||
	    add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
	    add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(c, c, NID_subject_key_identifier, "hash") < 0 ||
	    X509_sign(c, key, EVP_sha256()) == 0) {
		X509_free(c);
		return NULL;
	}
	return c;
}

/* Write `data` to path atomically with mode `mode`. */
static int write_file(const char *path, int mode, int (*emit)(FILE *, void *), void *arg)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	int ok = emit(f, arg) == 1;
	ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok &= fclose(f) == 0;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int emit_key(FILE *f, void *k)
{
	return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int emit_cert(FILE *f, void *c)
{
	return PEM_write_X509(f, c);
}

static int mkdirs(const char *dir)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h11[] = "\x08http/1.1";
	unsigned char *sel;
	if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

px_ca *px_ca_open(const char *dir, char *err, size_t errsz)
{
	px_ca *ca = calloc(1, sizeof *ca);
	char keypath[4096], certpath[4096];
	if (!ca) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	snprintf(keypath, sizeof keypath, "%s/ca.key", dir);
	snprintf(certpath, sizeof certpath, "%s/ca.crt", dir);
	FILE *kf = fopen(keypath, "r");
	if (kf) {
		struct stat st;
		if (fstat(fileno(kf), &st) == 0 && (st.st_mode & 077)) {
			fclose(kf);
			snprintf(err, errsz, "%s: the CA key must be private (mode 0600), is %04o",
				 keypath, (unsigned)(st.st_mode & 0777));
			goto fail;
		}
		ca->key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
		fclose(kf);
		FILE *cf = fopen(certpath, "r");
		if (cf) {
			ca->cert = PEM_read_X509(cf, NULL, NULL, NULL);
			fclose(cf);
		}
		if (!ca->key || !ca->cert || X509_check_private_key(ca->cert, ca->key) != 1) {
			set_err(err, errsz, "cannot read the CA in ca_dir (ca.key/ca.crt)");
			goto fail;
		}
	} else {
		if (mkdirs(dir) < 0) {
			snprintf(err, errsz, "%s: %s", dir, strerror(errno));
			goto fail;
		}
		ca->key = new_p256();
		ca->cert = ca->key ? make_ca(ca->key) : NULL;
		if (!ca->cert) {
			set_err(err, errsz, "cannot create the CA");
			goto fail;
		}
		if (write_file(certpath, 0644, emit_cert, ca->cert) < 0 ||
		    write_file(keypath, 0600, emit_key, ca->key) < 0) {
			snprintf(err, errsz, "cannot write the CA into %s: %s", dir, strerror(errno));
			goto fail;
		}
	}
	ca->cert_path = strdup(certpath);
	ca->leaf_key = new_p256();
	ca->server = SSL_CTX_new(TLS_server_method());
	if (!ca->cert_path || !ca->leaf_key || !ca->server) {
		set_err(err, errsz, "cannot set up TLS");
		goto fail;
	}
	SSL_CTX_set_min_proto_version(ca->server, TLS1_2_VERSION);
	SSL_CTX_set_options(ca->server, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_alpn_select_cb(ca->server, alpn_select, NULL);
	SSL_CTX_set_session_cache_mode(ca->server, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ca->server, 0);
	return ca;
fail:
	px_ca_free(ca);
	return NULL;
}

void px_ca_free(px_ca *ca)
{
	if (!ca)
		return;
	for (int i = 0; i < CACHE_SIZE; i++) {
		free(ca->cache[i].host);
		X509_free(ca->cache[i].cert);
	}
	SSL_CTX_free(ca->server);
	EVP_PKEY_free(ca->leaf_key);
	EVP_PKEY_free(ca->key);
	X509_free(ca->cert);
	free(ca->cert_path);
	free(ca);
}

const char *px_ca_cert_path(const px_ca *ca)
{
	return ca->cert_path;
}

SSL_CTX *px_ca_server_ctx(px_ca *ca)
{
	return ca->server;
}

static X509 *mint(px_ca *ca, const char *host, int is_ip)
{
	X509 *c = X509_new();
	if (!c)
		return NULL;
	char san[PX_SAN_MAX];
	snprintf(san, sizeof san, "%s:%s", is_ip ? "IP" : "DNS", host);
	X509_NAME *name = X509_get_subject_name(c);
	/* A CN is limited to 64 bytes; the SAN is what clients check. */
	char cn[65];
	snprintf(cn, sizeof cn, "%s", host);
	if (X509_set_version(c, 2) != 1 || random_serial(c) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(c), -86400) ||
	    !X509_gmtime_adj(X509_getm_notAfter(c), (long)LEAF_DAYS * 86400) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (unsigned char *)cn, -1, -1,
					0) ||
	    X509_set_issuer_name(c, X509_get_subject_name(ca->cert)) != 1 ||
	    X509_set_pubkey(c, ca->leaf_key) != 1 ||
	    add_ext(c, ca->cert, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(c, ca->cert, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(c, ca->cert, NID_ext_key_usage, "serverAuth") < 0 ||
	    add_ext(c, ca->cert, NID_subject_alt_name, san) < 0 ||
	    add_ext(c, ca->cert, NID_authority_key_identifier, "keyid:always") < 0 ||
	    X509_sign(c, ca->key, EVP_sha256()) == 0) {
		X509_free(c);
		return NULL;
	}
	return c;
}

static size_t slot_of(const char *host)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (const char *p = host; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	return (size_t)(h % CACHE_SIZE);
}

int px_ca_use_leaf(px_ca *ca, SSL *ssl, const char *host, int is_ip)
{
	/* A direct-mapped cache: a collision replaces the older leaf. */
	struct leaf *l = &ca->cache[slot_of(host)];
	if (!l->host || strcmp(l->host, host) != 0) {
		X509 *c = mint(ca, host, is_ip);
		char *h = strdup(host);
		if (!c || !h) {
			X509_free(c);
			free(h);
			ERR_clear_error();
			return -1;
		}
		if (!l->host)
			ca->cached++;
		free(l->host);
		X509_free(l->cert);
		l->host = h;
		l->cert = c;
		ca->minted++;
	}
	if (SSL_use_certificate(ssl, l->cert) != 1 || SSL_use_PrivateKey(ssl, ca->leaf_key) != 1 ||
	    SSL_add1_chain_cert(ssl, ca->cert) != 1) {
		ERR_clear_error();
		return -1;
	}
	return 0;
}

void px_ca_stats(const px_ca *ca, size_t *minted, size_t *cached)
{
	*minted = ca->minted;
	*cached = ca->cached;
}

SSL_CTX *px_tls_client_ctx(const char *extra_ca_file, char *err, size_t errsz)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		set_err(err, errsz, "cannot set up TLS");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	static const unsigned char h11[] = "\x08http/1.1";
	SSL_CTX_set_alpn_protos(ctx, h11, sizeof h11 - 1);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		set_err(err, errsz, "cannot load the system trust store");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (extra_ca_file && *extra_ca_file &&
	    SSL_CTX_load_verify_locations(ctx, extra_ca_file, NULL) != 1) {
		char what[512];
		snprintf(what, sizeof what, "cannot load upstream_ca_file %s", extra_ca_file);
		set_err(err, errsz, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
