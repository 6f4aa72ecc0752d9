/*
 * addr.h - host names and IP addresses as the proxy sees them: one canonical text for
 * every spelling of a host, and the class of every address (public or not).
 */
#ifndef PX_ADDR_H
#define PX_ADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum px_ip_class {
	PX_PUBLIC = 0,
	PX_LOOPBACK,
	PX_PRIVATE,
	PX_LINK_LOCAL,
	PX_CGNAT,
	PX_MULTICAST,
	PX_METADATA,
	PX_RESERVED,
	PX_UNSPECIFIED,
	PX_NCLASSES
};

typedef struct {
	int v6;              /* 0: IPv4 in b[0..3]; 1: IPv6 in b[0..15] */
	unsigned char b[16];
} px_ip;

typedef struct {
	px_ip ip;
	int bits;            /* prefix length */
} px_cidr;

enum { PX_HOST_NAME = 1, PX_HOST_IP = 2 };
#define PX_HOST_MAX 256

/* Canonicalise the host `in` (n bytes; "[v6]" brackets allowed, no port) into `out`
 * (at least PX_HOST_MAX bytes): a lower-case name without a trailing dot, or the canonical
 * text of an IP address however it was spelt (dotted, decimal, octal, hex, mixed, IPv6,
 * IPv4-mapped IPv6 becomes dotted IPv4). Returns PX_HOST_NAME or PX_HOST_IP (and fills
 * *ip when not NULL), or -1 for anything that is neither a valid name nor an address -
 * including a name that ends in a number but is not a valid IPv4 address. */
int px_host_canon(const char *in, size_t n, char *out, px_ip *ip);

/* Split "host:port" or "[v6]:port" (CONNECT's authority, a Host header). `host` points
 * into `in`; *port is 0 when absent (then `-1` is returned if require_port). */
int px_hostport_split(const char *in, size_t n, const char **host, size_t *hostlen,
		      int *port, int require_port);

/* The class of an address; IPv6 with an IPv4 address inside (mapped, compatible, NAT64,
 * 6to4) takes the class of that IPv4 address when it is not public. */
enum px_ip_class px_ip_classify(const px_ip *ip);
const char *px_ip_class_name(enum px_ip_class c);

int px_ip_from_sockaddr(const struct sockaddr *sa, px_ip *ip);
/* Text of an address into out (at least 46 bytes). */
void px_ip_format(const px_ip *ip, char *out, size_t outsz);

/* "10.0.0.0/8", "fd00::/8" or a single address (a /32 or /128). Returns 0 or -1. */
int px_cidr_parse(const char *s, px_cidr *out);
int px_cidr_contains(const px_cidr *c, const px_ip *ip);

#endif
