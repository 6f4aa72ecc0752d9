/* libFuzzer target: the host canonicaliser and address classes (proxy/addr.c) and the
 * matcher (proxy/match.c). Invariants: a canonical host canonicalises to itself and to
 * the same address; classification and CIDR parsing never crash. */
#include "addr.h"
#include "match.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[PX_HOST_MAX], again[PX_HOST_MAX];
	px_ip ip, ip2;
	int kind = px_host_canon((const char *)data, size, out, &ip);
	if (kind > 0) {
		size_t n = strlen(out);
		if (n >= PX_HOST_MAX)
			abort();
		int k2 = px_host_canon(out, n, again, &ip2);
		if (k2 != kind || strcmp(out, again) != 0)
			abort();
		if (kind == PX_HOST_IP) {
			if (memcmp(&ip, &ip2, sizeof ip) != 0)
				abort();
			if (px_ip_classify(&ip) >= PX_NCLASSES)
				abort();
		}
		px_matcher *m = px_matcher_new();
		px_matcher_add(m, out, 0, 1);
		if (px_matcher_lookup(m, out, 443) != 1)
			abort();
		px_matcher_free(m);
	}
	const char *h;
	size_t hl;
	int port;
	if (px_hostport_split((const char *)data, size, &h, &hl, &port, 0) == 0) {
		if (h < (const char *)data || h + hl > (const char *)data + size || port < 0 || port > 65535)
			abort();
	}
	char buf[128];
	size_t n = size < sizeof buf - 1 ? size : sizeof buf - 1;
	memcpy(buf, data, n);
	buf[n] = 0;
	px_cidr c;
	if (px_cidr_parse(buf, &c) == 0 && kind == PX_HOST_IP)
		(void)px_cidr_contains(&c, &ip);
	(void)px_glob_match(buf, (const char *)data, size);
	return 0;
}
