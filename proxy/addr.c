/*
 * addr.c - host canonicalisation and address classification for the proxy.
 *
 * IPv4 literals follow the WHATWG URL standard (what browsers, curl and most resolvers
 * accept): one to four parts, each decimal, octal (leading 0) or hex (0x), the last part
 * filling the remaining bytes. A host whose last label is numeric must parse as an address
 * or it is refused: "1.2.3.09" is not a name that happens to look like an address.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int is_hex(int c)
{
	return (c >= '0' && c <= '9') || (lower(c) >= 'a' && lower(c) <= 'f');
}

static int hexval(int c)
{
	return c <= '9' ? c - '0' : lower(c) - 'a' + 10;
}

/* One part of an IPv4 literal: 0 with *v set, or -1. */
static int ipv4_part(const char *s, size_t n, uint64_t *v)
{
	int base = 10;
	if (n >= 2 && s[0] == '0' && lower(s[1]) == 'x') {
		base = 16;
		s += 2;
		n -= 2;
	} else if (n >= 2 && s[0] == '0') {
		base = 8;
		s++;
		n--;
	}
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		int d;
		if (base == 16 && is_hex(s[i]))
			d = hexval(s[i]);
		else if (s[i] >= '0' && s[i] <= '9' && s[i] - '0' < base)
			d = s[i] - '0';
		else
			return -1;
		x = x * (uint64_t)base + (uint64_t)d;
		if (x > 0xffffffffULL)
			return -1;
	}
	*v = x;
	return 0;
}

/* Does the last label look like a number (so the host must be an IPv4 address)? */
static int ends_in_number(const char *s, size_t n)
{
	if (n && s[n - 1] == '.')
		n--;
	size_t start = n;
	while (start > 0 && s[start - 1] != '.')
		start--;
	const char *p = s + start;
	size_t len = n - start;
	if (len == 0)
		return 0;
	int digits = 1;
	for (size_t i = 0; i < len; i++)
		digits &= p[i] >= '0' && p[i] <= '9';
	if (digits)
		return 1;
	if (len >= 2 && p[0] == '0' && lower(p[1]) == 'x') {
		for (size_t i = 2; i < len; i++)
			if (!is_hex(p[i]))
				return 0;
		return 1;
	}
	return 0;
}

static int parse_ipv4(const char *s, size_t n, unsigned char out[4])
{
	if (n && s[n - 1] == '.')
		n--;
	uint64_t parts[4];
	int np = 0;
	size_t i = 0;
	while (i <= n) {
		size_t j = i;
		while (j < n && s[j] != '.')
			j++;
		if (np == 4 || j == i)
			return -1;
		if (ipv4_part(s + i, j - i, &parts[np]) < 0)
			return -1;
		np++;
		i = j + 1;
	}
	for (int k = 0; k < np - 1; k++)
		if (parts[k] > 255)
			return -1;
	uint64_t last_max = np == 1 ? 0xffffffffULL : (1ULL << (8 * (5 - np))) - 1;
	if (parts[np - 1] > last_max)
		return -1;
	uint32_t v = (uint32_t)parts[np - 1];
	for (int k = 0; k < np - 1; k++)
		v |= (uint32_t)parts[k] << (8 * (3 - k));
	out[0] = v >> 24;
	out[1] = v >> 16;
	out[2] = v >> 8;
	out[3] = v;
	return 0;
}

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void px_ip_format(const px_ip *ip, char *out, size_t outsz)
{
	if (!inet_ntop(ip->v6 ? AF_INET6 : AF_INET, ip->b, out, (socklen_t)outsz))
		snprintf(out, outsz, "?");
}

/* An IPv4-mapped IPv6 address is the IPv4 address: one canonical form for both. */
static void unmap(px_ip *ip)
{
	if (ip->v6 && memcmp(ip->b, v4mapped, 12) == 0) {
		memmove(ip->b, ip->b + 12, 4);
		memset(ip->b + 4, 0, 12);
		ip->v6 = 0;
	}
}

static int parse_ipv6(const char *s, size_t n, px_ip *ip)
{
	char tmp[64];
	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	if (strchr(tmp, '%')) /* zone ids name an interface: never for a proxy */
		return -1;
	memset(ip, 0, sizeof *ip);
	if (inet_pton(AF_INET6, tmp, ip->b) != 1)
		return -1;
	ip->v6 = 1;
	unmap(ip);
	return 0;
}

int px_host_canon(const char *in, size_t n, char *out, px_ip *ip)
{
	px_ip tmp;
	if (!ip)
		ip = &tmp;
	if (n == 0 || n >= PX_HOST_MAX)
		return -1;
	if (in[0] == '[') {
		if (n < 3 || in[n - 1] != ']' || parse_ipv6(in + 1, n - 2, ip) < 0)
			return -1;
		px_ip_format(ip, out, PX_HOST_MAX);
		return PX_HOST_IP;
	}
	if (memchr(in, ':', n)) {
		if (parse_ipv6(in, n, ip) < 0)
			return -1;
		px_ip_format(ip, out, PX_HOST_MAX);
		return PX_HOST_IP;
	}
	if (ends_in_number(in, n)) {
		memset(ip, 0, sizeof *ip);
		if (parse_ipv4(in, n, ip->b) < 0)
			return -1;
		px_ip_format(ip, out, PX_HOST_MAX);
		return PX_HOST_IP;
	}
	/* A name: labels of letters, digits, '-' and '_', 1-63 bytes, at most 253 in all. */
	if (in[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return -1;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		int c = lower((unsigned char)in[i]);
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			   c == '_') {
			if (++label > 63)
				return -1;
		} else {
			return -1;
		}
		out[i] = (char)c;
	}
	if (label == 0)
		return -1;
	out[n] = 0;
	return PX_HOST_NAME;
}

int px_hostport_split(const char *in, size_t n, const char **host, size_t *hostlen,
		      int *port, int require_port)
{
	const char *colon = NULL;
	*port = 0;
	if (n && in[0] == '[') {
		const char *close = memchr(in, ']', n);
		if (!close)
			return -1;
		*host = in;
		*hostlen = (size_t)(close - in) + 1;
		if (close + 1 < in + n) {
			if (close[1] != ':')
				return -1;
			colon = close + 1;
		}
	} else {
		colon = memrchr(in, ':', n);
		if (colon && memchr(in, ':', (size_t)(colon - in)))
			return -1; /* bare IPv6 needs brackets here */
		*host = in;
		*hostlen = colon ? (size_t)(colon - in) : n;
	}
	if (colon) {
		const char *p = colon + 1, *end = in + n;
		if (p == end || end - p > 5)
			return -1;
		int v = 0;
		for (; p < end; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			v = v * 10 + (*p - '0');
		}
		if (v < 1 || v > 65535)
			return -1;
		*port = v;
	} else if (require_port) {
		return -1;
	}
	return *hostlen ? 0 : -1;
}

int px_ip_from_sockaddr(const struct sockaddr *sa, px_ip *ip)
{
	memset(ip, 0, sizeof *ip);
	if (sa->sa_family == AF_INET) {
		memcpy(ip->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(ip->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		ip->v6 = 1;
		unmap(ip);
		return 0;
	}
	return -1;
}

int px_cidr_parse(const char *s, px_cidr *out)
{
	char host[PX_HOST_MAX];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	memset(out, 0, sizeof *out);
	if (px_host_canon(s, n, host, &out->ip) != PX_HOST_IP)
		return -1;
	int max = out->ip.v6 ? 128 : 32;
	out->bits = max;
	if (slash) {
		const char *p = slash + 1;
		if (!*p || strlen(p) > 3)
			return -1;
		int v = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9')
				return -1;
			v = v * 10 + (*p - '0');
		}
		if (v > max)
			return -1;
		out->bits = v;
	}
	return 0;
}

static int prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
	int bytes = bits / 8, rest = bits % 8;
	if (memcmp(a, b, (size_t)bytes) != 0)
		return 0;
	if (rest) {
		unsigned char mask = (unsigned char)(0xff << (8 - rest));
		return (a[bytes] & mask) == (b[bytes] & mask);
	}
	return 1;
}

int px_cidr_contains(const px_cidr *c, const px_ip *ip)
{
	return c->ip.v6 == ip->v6 && prefix_eq(c->ip.b, ip->b, c->bits);
}

struct range {
	const char *cidr;
	enum px_ip_class cls;
};

/* Most specific first: the first range that contains the address decides. */
static const struct range ranges[] = {
	{"169.254.169.254/32", PX_METADATA},  /* AWS, GCP, Azure, OpenStack, ... */
	{"169.254.170.2/32", PX_METADATA},    /* AWS ECS task metadata */
	{"100.100.100.200/32", PX_METADATA},  /* Alibaba Cloud */
	{"192.0.0.192/32", PX_METADATA},      /* Oracle Cloud */
	{"fd00:ec2::254/128", PX_METADATA},   /* AWS IMDS over IPv6 */
	{"0.0.0.0/32", PX_UNSPECIFIED},
	{"0.0.0.0/8", PX_RESERVED},
	{"10.0.0.0/8", PX_PRIVATE},
	{"100.64.0.0/10", PX_CGNAT},
	{"127.0.0.0/8", PX_LOOPBACK},
	{"169.254.0.0/16", PX_LINK_LOCAL},
	{"172.16.0.0/12", PX_PRIVATE},
	{"192.0.0.0/24", PX_RESERVED},
	{"192.0.2.0/24", PX_RESERVED},
	{"192.88.99.0/24", PX_RESERVED},
	{"192.168.0.0/16", PX_PRIVATE},
	{"198.18.0.0/15", PX_RESERVED},
	{"198.51.100.0/24", PX_RESERVED},
	{"203.0.113.0/24", PX_RESERVED},
	{"224.0.0.0/4", PX_MULTICAST},
	{"240.0.0.0/4", PX_RESERVED},         /* includes 255.255.255.255 */
	{"::/128", PX_UNSPECIFIED},
	{"::1/128", PX_LOOPBACK},
	{"100::/64", PX_RESERVED},
	{"2001:db8::/32", PX_RESERVED},
	{"2001::/23", PX_RESERVED},           /* IETF protocol assignments, Teredo */
	{"fc00::/7", PX_PRIVATE},
	{"fe80::/10", PX_LINK_LOCAL},
	{"fec0::/10", PX_PRIVATE},            /* deprecated site-local */
	{"ff00::/8", PX_MULTICAST},
	{"::/96", PX_RESERVED},               /* IPv4-compatible (deprecated) */
	{NULL, PX_PUBLIC},
};

static px_cidr compiled[sizeof ranges / sizeof ranges[0]];
static int compiled_ok;

static enum px_ip_class classify_plain(const px_ip *ip)
{
	if (!compiled_ok) {
		for (int i = 0; ranges[i].cidr; i++)
			px_cidr_parse(ranges[i].cidr, &compiled[i]);
		compiled_ok = 1;
	}
	for (int i = 0; ranges[i].cidr; i++)
		if (px_cidr_contains(&compiled[i], ip))
			return ranges[i].cls;
	return PX_PUBLIC;
}

enum px_ip_class px_ip_classify(const px_ip *ip)
{
	px_ip inner;
	memset(&inner, 0, sizeof inner);
	if (ip->v6) {
		const unsigned char *b = ip->b;
		static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
		int embedded = 0;
		if (memcmp(b, v4mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
		    (memcmp(b, v4mapped, 10) == 0 && b[10] == 0 && b[11] == 0 &&
		     (b[12] | b[13]))) {
			memcpy(inner.b, b + 12, 4);
			embedded = 1;
		} else if (b[0] == 0x20 && b[1] == 0x02) { /* 6to4: 2002:AABB:CCDD::/48 */
			memcpy(inner.b, b + 2, 4);
			embedded = 1;
		}
		if (embedded) {
			enum px_ip_class c = classify_plain(&inner);
			if (c != PX_PUBLIC)
				return c;
		}
	}
	return classify_plain(ip);
}

const char *px_ip_class_name(enum px_ip_class c)
{
	static const char *names[] = {"public",	   "loopback", "private",  "link-local",
				      "cgnat",	   "multicast", "metadata", "reserved",
				      "unspecified"};
	return c < PX_NCLASSES ? names[c] : "?";
}
