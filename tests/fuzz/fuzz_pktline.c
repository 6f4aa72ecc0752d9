/*
 * libFuzzer target: proxy/pktline.c. The first byte picks the parser (push commands, ref
 * advertisement, fetch wants); the rest is the body. A parse that succeeds must give
 * valid ref names and ids, a pack offset inside the body, and an advertisement that
 * builds back into a body that parses to the same refs. Built by tests/fuzz/run_pktline.sh.
 */
#include "pktline.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int hex_id(const char *s, int hexsz)
{
	if ((int)strlen(s) != hexsz)
		return 0;
	for (int i = 0; i < hexsz; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *body = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 3) {
	case 0: {
		px_push_req r;
		if (px_push_parse(body, len, &r) == 0) {
			if (r.ncmds < 1 || r.pack_offset > len)
				abort();
			for (int i = 0; i < r.ncmds; i++)
				if (!px_ref_valid(r.cmds[i].ref, strlen(r.cmds[i].ref)) ||
				    !hex_id(r.cmds[i].old_id, r.hexsz) || !hex_id(r.cmds[i].new_id, r.hexsz))
					abort();
			px_push_req_free(&r);
		}
		break;
	}
	case 1: {
		px_advert a;
		if (px_advert_parse(body, len, &a) == 0) {
			px_pkt_buf b = {0};
			if (px_advert_build(&b, a.service, a.refs, a.nrefs, a.caps, a.shallow, a.nshallow, a.hexsz) == 0) {
				px_advert again;
				if (px_advert_parse(b.data, b.len, &again) != 0 || again.nrefs != a.nrefs)
					abort();
				for (int i = 0; i < a.nrefs; i++)
					if (strcmp(again.refs[i].name, a.refs[i].name) || strcmp(again.refs[i].id, a.refs[i].id))
						abort();
				px_advert_free(&again);
			}
			px_pkt_buf_free(&b);
			px_advert_free(&a);
		}
		break;
	}
	default: {
		px_upload_req u;
		if (px_upload_parse(body, len, &u) == 0)
			px_upload_req_free(&u);
		break;
	}
	}
	return 0;
}
