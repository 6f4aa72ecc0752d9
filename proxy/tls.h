/*
 * tls.h - Foundry's certificate authority (ECDSA P-256, created once per user), leaf
 * certificates minted on demand for inspected hosts (cached), and the TLS contexts of both
 * sides of an inspected connection.
 */
#ifndef PX_TLS_H
#define PX_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

typedef struct px_ca px_ca;

/* Load the CA from dir/ca.crt and dir/ca.key, creating both (dir 0700, key 0600) when
 * absent. Returns NULL with a message in err. Free with px_ca_free. */
px_ca *px_ca_open(const char *dir, char *err, size_t errsz);
void px_ca_free(px_ca *ca);
/* The PEM path of the CA certificate (borrowed). */
const char *px_ca_cert_path(const px_ca *ca);
/* The server-side context for sandbox-facing TLS (borrowed; HTTP/1.1 only). */
SSL_CTX *px_ca_server_ctx(px_ca *ca);
/* Give `ssl` a certificate for `host` (a canonical name or address), minted and signed
 * by the CA or taken from the cache. Returns 0 or -1. */
int px_ca_use_leaf(px_ca *ca, SSL *ssl, const char *host, int is_ip);
/* Leaf certificates minted since open (cache misses), and cached now. */
void px_ca_stats(const px_ca *ca, size_t *minted, size_t *cached);

/* A client context verifying upstreams against the system store plus `extra_ca_file`
 * (may be NULL). Returns NULL with a message in err. Free with SSL_CTX_free. */
SSL_CTX *px_tls_client_ctx(const char *extra_ca_file, char *err, size_t errsz);

#endif
