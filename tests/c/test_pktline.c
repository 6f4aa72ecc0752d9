/* proxy/pktline.c: pkt-line framing, push commands, ref advertisements, fetch wants and
 * report-status replies. Malformed input must be refused, never guessed at. */
#include "ctest.h"
#include "pktline.h"

#include <stdlib.h>

#define Z40 "0000000000000000000000000000000000000000"
#define A40 "1111111111111111111111111111111111111111"
#define B40 "2222222222222222222222222222222222222222"
#define C40 "3333333333333333333333333333333333333333"
#define PACK_HDR "PACK\0\0\0\2\0\0\0\0"

/* Build a body from packets: each argument is a payload, "" is a flush. */
static size_t body(char *out, size_t cap, const char *const *pkts, int n, const char *tail,
		   size_t taillen)
{
	px_pkt_buf b = {0};
	for (int i = 0; i < n; i++) {
		if (pkts[i][0] == 0)
			px_pkt_flush(&b);
		else
			px_pkt_write(&b, pkts[i], strlen(pkts[i]));
	}
	size_t len = b.len;
	if (len + taillen > cap)
		abort();
	memcpy(out, b.data, len);
	memcpy(out + len, tail, taillen);
	px_pkt_buf_free(&b);
	return len + taillen;
}

/* A first command line with capabilities after a NUL. */
static const char *first_cmd(char *buf, const char *old, const char *new_id, const char *ref,
			     const char *caps)
{
	size_t n = (size_t)sprintf(buf, "%s %s %s", old, new_id, ref);
	buf[n] = 0;
	sprintf(buf + n + 1, "%s\n", caps);
	/* the payload is "<cmd>\0<caps>\n": px_pkt_write needs its length, so encode here */
	return buf;
}

static size_t push_body(char *out, size_t cap, const char *old, const char *new_id, const char *ref,
			const char *caps, const char *const *more, int nmore, const char *tail,
			size_t taillen)
{
	char line[512];
	first_cmd(line, old, new_id, ref, caps);
	size_t l1 = strlen(line) + 1 + strlen(line + strlen(line) + 1);
	px_pkt_buf b = {0};
	px_pkt_write(&b, line, l1);
	for (int i = 0; i < nmore; i++) {
		if (more[i][0] == 0)
			px_pkt_flush(&b);
		else
			px_pkt_write(&b, more[i], strlen(more[i]));
	}
	if (b.len + taillen > cap)
		abort();
	memcpy(out, b.data, b.len);
	memcpy(out + b.len, tail, taillen);
	size_t n = b.len + taillen;
	px_pkt_buf_free(&b);
	return n;
}

static void test_framing(void)
{
	px_pkt p;
	size_t off = 0;
	const char *s = "000000010002000ahello\n0004";
	CHECK_EQ_INT(px_pkt_read(s, strlen(s), &off, &p), 1);
	CHECK_EQ_INT(p.kind, PX_PKT_FLUSH);
	CHECK_EQ_INT(px_pkt_read(s, strlen(s), &off, &p), 1);
	CHECK_EQ_INT(p.kind, PX_PKT_DELIM);
	CHECK_EQ_INT(px_pkt_read(s, strlen(s), &off, &p), 1);
	CHECK_EQ_INT(p.kind, PX_PKT_END);
	CHECK_EQ_INT(px_pkt_read(s, strlen(s), &off, &p), 1);
	CHECK_EQ_INT(p.kind, PX_PKT_DATA);
	CHECK_EQ_INT(p.len, 6);
	CHECK(!memcmp(p.data, "hello\n", 6));
	CHECK_EQ_INT(px_pkt_read(s, strlen(s), &off, &p), 1);
	CHECK_EQ_INT(p.len, 0);
	CHECK_EQ_INT(px_pkt_read(s, strlen(s), &off, &p), 0);

	const char *bad[] = {"000", "0003", "00zz", "0009abc", "fff0", "fff1xxxx", "-001"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		off = 0;
		CHECK_EQ_INT(px_pkt_read(bad[i], strlen(bad[i]), &off, &p), -1);
	}
	/* upper-case hex lengths are accepted, as git does */
	off = 0;
	CHECK_EQ_INT(px_pkt_read("000Aabcdef", 10, &off, &p), 1);
	CHECK_EQ_INT(p.len, 6);

	px_pkt_buf b = {0};
	char big[PX_PKT_DATA_MAX + 1];
	memset(big, 'x', sizeof big);
	CHECK_EQ_INT(px_pkt_write(&b, big, PX_PKT_DATA_MAX), 0);
	CHECK_EQ_INT(px_pkt_write(&b, big, PX_PKT_DATA_MAX + 1), -1);
	CHECK(!memcmp(b.data, "fff0", 4));
	CHECK_EQ_INT(b.len, PX_PKT_MAX);
	px_pkt_buf_free(&b);
}

static void test_ref_names(void)
{
	const char *good[] = {"refs/heads/main", "refs/heads/sandbox/x", "refs/tags/v1.0",
			      "refs/heads/a-b_c", "refs/heads/ü"};
	const char *bad[] = {"HEAD", "main", "refs/", "refs/heads/", "refs/heads/../main",
			     "refs/heads/a..b", "refs/heads/x.lock", "refs/heads/x.lock/y",
			     "refs/heads/.hidden", "refs/heads/x.", "refs/heads//x", "refs/heads/a b",
			     "refs/heads/a~1", "refs/heads/a^", "refs/heads/a:b", "refs/heads/a?",
			     "refs/heads/a*", "refs/heads/a[", "refs/heads/a\\b", "refs/heads/a@{1}",
			     "refs/heads/a\x01", "refs/heads/a\x7f"};
	for (size_t i = 0; i < sizeof good / sizeof *good; i++)
		CHECK(px_ref_valid(good[i], strlen(good[i])));
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		if (px_ref_valid(bad[i], strlen(bad[i])))
			fprintf(stderr, "accepted bad ref %s\n", bad[i]);
		CHECK(!px_ref_valid(bad[i], strlen(bad[i])));
	}
	CHECK(!px_ref_valid("refs/heads/a\0b", 13));
}

static void test_push_update(void)
{
	char buf[4096];
	const char *more[] = {A40 " " C40 " refs/heads/other\n", ""};
	size_t n = push_body(buf, sizeof buf, A40, B40, "refs/heads/sandbox/x",
			     "report-status side-band-64k agent=git/2.39.5", more, 2, PACK_HDR, 12);
	px_push_req r;
	CHECK_EQ_INT(px_push_parse(buf, n, &r), 0);
	CHECK_EQ_INT(r.ncmds, 2);
	CHECK_EQ_STR(r.cmds[0].old_id, A40);
	CHECK_EQ_STR(r.cmds[0].new_id, B40);
	CHECK_EQ_STR(r.cmds[0].ref, "refs/heads/sandbox/x");
	CHECK_EQ_STR(r.cmds[1].ref, "refs/heads/other");
	CHECK_EQ_STR(r.caps, "report-status side-band-64k agent=git/2.39.5");
	CHECK(px_caps_has(r.caps, "side-band-64k"));
	CHECK(px_caps_has(r.caps, "agent"));
	CHECK(!px_caps_has(r.caps, "side-band"));
	CHECK_EQ_INT(r.pack_offset, n - 12);
	CHECK_EQ_INT(r.hexsz, 40);
	px_push_req_free(&r);
}

static void test_push_delete_and_pack(void)
{
	char buf[4096];
	const char *flush[] = {""};
	px_push_req r;
	/* a deletion needs no pack, and nothing may follow */
	size_t n = push_body(buf, sizeof buf, A40, Z40, "refs/heads/main", "report-status", flush, 1, "", 0);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), 0);
	CHECK_EQ_INT(r.pack_offset, n);
	px_push_req_free(&r);
	n = push_body(buf, sizeof buf, A40, Z40, "refs/heads/main", "report-status", flush, 1, "junk", 4);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	CHECK(strstr(r.err, "only deletes") != NULL);
	/* an update must carry a pack */
	n = push_body(buf, sizeof buf, A40, B40, "refs/heads/x", "report-status", flush, 1, "", 0);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	CHECK(strstr(r.err, "packfile") != NULL);
	n = push_body(buf, sizeof buf, A40, B40, "refs/heads/x", "report-status", flush, 1, "PACK\0\0\0\7\0\0\0\0", 12);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	/* a creation from the zero id is an update */
	n = push_body(buf, sizeof buf, Z40, B40, "refs/heads/x", "", flush, 1, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), 0);
	CHECK_EQ_STR(r.caps, "");
	px_push_req_free(&r);
}

static void test_push_malformed(void)
{
	char buf[4096];
	px_push_req r;
	const char *flush[] = {""};
	size_t n;
	/* no flush after the commands */
	n = push_body(buf, sizeof buf, A40, B40, "refs/heads/x", "report-status", NULL, 0, "", 0);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	/* the same ref twice */
	const char *dup[] = {A40 " " B40 " refs/heads/x\n", ""};
	n = push_body(buf, sizeof buf, A40, B40, "refs/heads/x", "", dup, 2, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	CHECK(strstr(r.err, "twice") != NULL);
	/* capabilities on a later line */
	char line2[200];
	int l2 = sprintf(line2, "%s %s refs/heads/y", A40, B40);
	line2[l2] = 0;
	memcpy(line2 + l2 + 1, "x\n", 3);
	px_pkt_buf b = {0};
	char l1[300];
	first_cmd(l1, A40, B40, "refs/heads/x", "report-status");
	px_pkt_write(&b, l1, strlen(l1) + 1 + strlen(l1 + strlen(l1) + 1));
	px_pkt_write(&b, line2, (size_t)l2 + 3);
	px_pkt_flush(&b);
	memcpy(buf, b.data, b.len);
	memcpy(buf + b.len, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, b.len + 12, &r), -1);
	CHECK(strstr(r.err, "capabilities after") != NULL);
	px_pkt_buf_free(&b);
	/* bad ids and refs */
	const char *bad_first[][3] = {
		{"111", B40, "refs/heads/x"},
		{"111111111111111111111111111111111111111G", B40, "refs/heads/x"},
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", B40, "refs/heads/x"},
		{A40, B40, "refs/heads/../main"},
		{A40, B40, "HEAD"},
		{A40, B40, "refs/heads/x.lock"},
	};
	for (size_t i = 0; i < sizeof bad_first / sizeof *bad_first; i++) {
		n = push_body(buf, sizeof buf, bad_first[i][0], bad_first[i][1], bad_first[i][2], "",
			      flush, 1, PACK_HDR, 12);
		CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	}
	/* signed pushes are refused */
	const char *cert[] = {"push-cert\0report-status\n", ""};
	n = body(buf, sizeof buf, cert, 2, "", 0);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	CHECK(strstr(r.err, "push-cert") != NULL);
	/* an empty command list */
	n = body(buf, sizeof buf, flush, 1, "", 0);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	/* a special packet inside the command list */
	memcpy(buf, "0001", 4);
	CHECK_EQ_INT(px_push_parse(buf, 4, &r), -1);
	/* a truncated packet */
	n = push_body(buf, sizeof buf, A40, B40, "refs/heads/x", "", flush, 1, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, 30, &r), -1);
}

static void test_push_shallow_options_sha256(void)
{
	char buf[8192];
	px_push_req r;
	/* shallow lines come first; push options follow the commands when asked for */
	px_pkt_buf b = {0};
	px_pkt_writef(&b, "shallow %s\n", C40);
	char l1[300];
	first_cmd(l1, A40, B40, "refs/heads/x", "report-status push-options");
	px_pkt_write(&b, l1, strlen(l1) + 1 + strlen(l1 + strlen(l1) + 1));
	px_pkt_flush(&b);
	px_pkt_writef(&b, "ci.skip\n");
	px_pkt_flush(&b);
	size_t hdr = b.len;
	memcpy(buf, b.data, b.len);
	memcpy(buf + b.len, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, hdr + 12, &r), 0);
	CHECK_EQ_INT(r.nshallow, 1);
	CHECK_EQ_INT(r.noptions, 1);
	CHECK_EQ_STR(r.options[0], "ci.skip");
	CHECK_EQ_INT(r.pack_offset, hdr);
	px_push_req_free(&r);
	px_pkt_buf_free(&b);

	/* SHA-256 ids with object-format=sha256, and only with it */
	char a64[65], b64[65];
	memset(a64, 'a', 64);
	memset(b64, 'b', 64);
	a64[64] = b64[64] = 0;
	const char *flush[] = {""};
	size_t n = push_body(buf, sizeof buf, a64, b64, "refs/heads/x", "report-status object-format=sha256",
			     flush, 1, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), 0);
	CHECK_EQ_INT(r.hexsz, 64);
	CHECK_EQ_STR(r.cmds[0].new_id, b64);
	px_push_req_free(&r);
	n = push_body(buf, sizeof buf, a64, b64, "refs/heads/x", "report-status", flush, 1, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
	n = push_body(buf, sizeof buf, A40, B40, "refs/heads/x", "object-format=sha256", flush, 1, PACK_HDR, 12);
	CHECK_EQ_INT(px_push_parse(buf, n, &r), -1);
}

static size_t advert(char *buf, size_t cap, int with_service)
{
	px_pkt_buf b = {0};
	if (with_service) {
		px_pkt_writef(&b, "# service=git-upload-pack\n");
		px_pkt_flush(&b);
	}
	char l[300];
	int n = sprintf(l, "%s HEAD", A40);
	l[n] = 0;
	int m = sprintf(l + n + 1, "multi_ack side-band-64k symref=HEAD:refs/heads/main\n");
	px_pkt_write(&b, l, (size_t)n + 1 + (size_t)m);
	px_pkt_writef(&b, "%s refs/heads/main\n", A40);
	px_pkt_writef(&b, "%s refs/heads/sandbox/x\n", B40);
	px_pkt_writef(&b, "%s refs/tags/v1\n", C40);
	px_pkt_writef(&b, "%s refs/tags/v1^{}\n", A40);
	px_pkt_flush(&b);
	if (b.len > cap)
		abort();
	memcpy(buf, b.data, b.len);
	size_t len = b.len;
	px_pkt_buf_free(&b);
	return len;
}

static void test_advert_parse_build(void)
{
	char buf[4096];
	size_t n = advert(buf, sizeof buf, 1);
	px_advert a;
	CHECK_EQ_INT(px_advert_parse(buf, n, &a), 0);
	CHECK_EQ_STR(a.service, "git-upload-pack");
	CHECK_EQ_INT(a.nrefs, 5);
	CHECK_EQ_STR(a.refs[0].name, "HEAD");
	CHECK_EQ_STR(a.refs[4].name, "refs/tags/v1^{}");
	CHECK_EQ_STR(a.caps, "multi_ack side-band-64k symref=HEAD:refs/heads/main");
	/* keep the sandbox's branch only: a valid stream with the capabilities on its line */
	px_pkt_buf b = {0};
	CHECK_EQ_INT(px_advert_build(&b, a.service, &a.refs[2], 1, a.caps, NULL, 0, 40), 0);
	px_advert f;
	CHECK_EQ_INT(px_advert_parse(b.data, b.len, &f), 0);
	CHECK_EQ_INT(f.nrefs, 1);
	CHECK_EQ_STR(f.refs[0].name, "refs/heads/sandbox/x");
	CHECK_EQ_STR(f.refs[0].id, B40);
	CHECK_EQ_STR(f.caps, a.caps);
	px_advert_free(&f);
	px_pkt_buf_free(&b);
	/* nothing kept: the capabilities^{} line of an empty repository */
	CHECK_EQ_INT(px_advert_build(&b, a.service, NULL, 0, a.caps, NULL, 0, 40), 0);
	CHECK(strstr(b.data + 4, Z40 " capabilities^{}") != NULL);
	CHECK_EQ_INT(px_advert_parse(b.data, b.len, &f), 0);
	CHECK_EQ_INT(f.nrefs, 0);
	CHECK_EQ_STR(f.caps, a.caps);
	px_advert_free(&f);
	px_pkt_buf_free(&b);
	/* an invalid name is not written */
	px_ref bad = {A40, "refs/heads/a..b"};
	CHECK_EQ_INT(px_advert_build(&b, NULL, &bad, 1, "", NULL, 0, 40), -1);
	px_pkt_buf_free(&b);
	px_advert_free(&a);

	/* without the service header (as upload-pack itself sends it) */
	n = advert(buf, sizeof buf, 0);
	CHECK_EQ_INT(px_advert_parse(buf, n, &a), 0);
	CHECK(a.service == NULL);
	CHECK_EQ_INT(a.nrefs, 5);
	px_advert_free(&a);
}

static void test_advert_malformed(void)
{
	char buf[4096];
	px_advert a;
	size_t n = advert(buf, sizeof buf, 1);
	/* data after the flush, a truncated stream */
	memcpy(buf + n, "0000", 4);
	CHECK_EQ_INT(px_advert_parse(buf, n + 4, &a), -1);
	CHECK_EQ_INT(px_advert_parse(buf, n - 4, &a), -1);
	CHECK_EQ_INT(px_advert_parse(buf, n - 10, &a), -1);
	CHECK_EQ_INT(px_advert_parse("", 0, &a), -1);
	/* protocol v2 is refused: the proxy asks for v0 */
	const char *v2[] = {"# service=git-upload-pack\n", "", "version 2\n", "ls-refs\n", ""};
	n = body(buf, sizeof buf, v2, 5, "", 0);
	CHECK_EQ_INT(px_advert_parse(buf, n, &a), -1);
	CHECK(strstr(a.err, "version 2") != NULL);
	/* version 1 is v0 with a version line */
	px_pkt_buf b = {0};
	px_pkt_writef(&b, "version 1\n");
	char l[200];
	int k = sprintf(l, "%s refs/heads/main", A40);
	l[k] = 0;
	memcpy(l + k + 1, "agent=x\n", 9);
	px_pkt_write(&b, l, (size_t)k + 9);
	px_pkt_flush(&b);
	CHECK_EQ_INT(px_advert_parse(b.data, b.len, &a), 0);
	CHECK_EQ_INT(a.version, 1);
	CHECK_EQ_INT(a.nrefs, 1);
	px_advert_free(&a);
	px_pkt_buf_free(&b);
	/* an ERR from the server */
	const char *err[] = {"# service=git-upload-pack\n", "", "ERR access denied\n"};
	n = body(buf, sizeof buf, err, 3, "", 0);
	CHECK_EQ_INT(px_advert_parse(buf, n, &a), -1);
	CHECK(strstr(a.err, "access denied") != NULL);
	/* a first ref without capabilities, a bad name */
	const char *nocaps[] = {A40 " refs/heads/main\n", ""};
	n = body(buf, sizeof buf, nocaps, 2, "", 0);
	CHECK_EQ_INT(px_advert_parse(buf, n, &a), -1);
	const char *badname[] = {A40 " refs/heads/a..b\n", ""};
	n = body(buf, sizeof buf, badname, 2, "", 0);
	CHECK_EQ_INT(px_advert_parse(buf, n, &a), -1);
}

static void test_upload(void)
{
	char buf[4096];
	px_upload_req r;
	const char *ok[] = {"want " A40 " multi_ack_detailed side-band-64k ofs-delta\n",
			    "want " B40 "\n",
			    "deepen 1\n",
			    "",
			    "have " C40 "\n",
			    "",
			    "have " A40 "\n",
			    "done\n"};
	size_t n = body(buf, sizeof buf, ok, 8, "", 0);
	CHECK_EQ_INT(px_upload_parse(buf, n, &r), 0);
	CHECK_EQ_INT(r.nwants, 2);
	CHECK_EQ_STR(r.wants[0], A40);
	CHECK_EQ_STR(r.wants[1], B40);
	CHECK_EQ_INT(r.nhaves, 2);
	CHECK_EQ_INT(r.done, 1);
	CHECK(px_caps_has(r.caps, "ofs-delta"));
	px_upload_req_free(&r);

	const char *after_done[] = {"want " A40 "\n", "", "done\n", "have " A40 "\n"};
	n = body(buf, sizeof buf, after_done, 4, "", 0);
	CHECK_EQ_INT(px_upload_parse(buf, n, &r), -1);
	const char *bad_id[] = {"want 1234\n", ""};
	n = body(buf, sizeof buf, bad_id, 2, "", 0);
	CHECK_EQ_INT(px_upload_parse(buf, n, &r), -1);
	const char *unknown[] = {"want " A40 "\n", "command=fetch\n", ""};
	n = body(buf, sizeof buf, unknown, 3, "", 0);
	CHECK_EQ_INT(px_upload_parse(buf, n, &r), -1);
	const char *no_flush[] = {"want " A40 "\n"};
	n = body(buf, sizeof buf, no_flush, 1, "", 0);
	CHECK_EQ_INT(px_upload_parse(buf, n, &r), -1);
}

/* Unwrap side-band packets: append band 1 to b1, band 2 to b2. */
static int unwrap(const char *s, size_t n, px_pkt_buf *b1, px_pkt_buf *b2, size_t max)
{
	size_t off = 0;
	px_pkt p;
	int flushes = 0;
	while (px_pkt_read(s, n, &off, &p) == 1) {
		if (p.kind == PX_PKT_FLUSH) {
			flushes++;
			continue;
		}
		if (p.kind != PX_PKT_DATA || p.len < 1 || p.len > max)
			return -1;
		px_pkt_buf *t = p.data[0] == 1 ? b1 : p.data[0] == 2 ? b2 : NULL;
		if (!t)
			return -1;
		size_t old = t->len;
		t->data = realloc(t->data, old + p.len);
		memcpy(t->data + old, p.data + 1, p.len - 1);
		t->len = old + p.len - 1;
	}
	return off == n && flushes == 1 ? 0 : -1;
}

static void test_report_status(void)
{
	px_ref_status st[] = {{"refs/heads/main", "foundry: main is protected"},
			      {"refs/heads/sandbox/x", "foundry: refused with the rest of this push"}};
	const char *msgs[] = {"foundry: push refused", "line with\nnewline"};
	px_pkt_buf b = {0};
	CHECK_EQ_INT(px_report_status(&b, "ok", st, 2, msgs, 2, 65520), 0);
	px_pkt_buf b1 = {0}, b2 = {0};
	CHECK_EQ_INT(unwrap(b.data, b.len, &b1, &b2, 65516), 0);
	CHECK(b2.len > 0 && !memcmp(b2.data, "foundry: push refused\nline with newline\n", b2.len));
	/* band 1 is itself a pkt-line report ending in a flush */
	size_t off = 0;
	px_pkt p;
	CHECK_EQ_INT(px_pkt_read(b1.data, b1.len, &off, &p), 1);
	CHECK(p.len == 10 && !memcmp(p.data, "unpack ok\n", 10));
	CHECK_EQ_INT(px_pkt_read(b1.data, b1.len, &off, &p), 1);
	CHECK(p.len > 3 && !memcmp(p.data, "ng refs/heads/main foundry: main is protected\n", p.len));
	CHECK_EQ_INT(px_pkt_read(b1.data, b1.len, &off, &p), 1);
	CHECK_EQ_INT(px_pkt_read(b1.data, b1.len, &off, &p), 1);
	CHECK_EQ_INT(p.kind, PX_PKT_FLUSH);
	CHECK_EQ_INT(off, b1.len);
	px_pkt_buf_free(&b1);
	px_pkt_buf_free(&b2);
	px_pkt_buf_free(&b);

	/* without side-band: the bare report */
	px_ref_status ok = {"refs/heads/x", NULL};
	CHECK_EQ_INT(px_report_status(&b, "ok", &ok, 1, msgs, 2, 0), 0);
	CHECK(b.len == 14 + 20 + 4 && !memcmp(b.data, "000eunpack ok\n0014ok refs/heads/x\n0000", b.len));
	px_pkt_buf_free(&b);
	/* a bad ref name is not written */
	px_ref_status bad = {"refs/heads/a b", NULL};
	CHECK_EQ_INT(px_report_status(&b, "ok", &bad, 1, NULL, 0, 0), -1);
	px_pkt_buf_free(&b);
	/* ERR packets */
	CHECK_EQ_INT(px_pkt_error(&b, "no\nway"), 0);
	CHECK(b.len == 15 && !memcmp(b.data, "000fERR no way\n", 15));
	px_pkt_buf_free(&b);
}

static void test_sideband_split(void)
{
	size_t n = 150000;
	char *data = malloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)(i * 7);
	size_t maxes[] = {1000, 65520};
	for (int k = 0; k < 2; k++) {
		px_pkt_buf b = {0}, b1 = {0}, b2 = {0};
		CHECK_EQ_INT(px_pkt_sideband(&b, 1, data, n, maxes[k]), 0);
		px_pkt_flush(&b);
		CHECK_EQ_INT(unwrap(b.data, b.len, &b1, &b2, maxes[k] - 4), 0);
		CHECK(b1.len == n && !memcmp(b1.data, data, n));
		px_pkt_buf_free(&b);
		px_pkt_buf_free(&b1);
		px_pkt_buf_free(&b2);
	}
	free(data);
}

/* Random and mutated inputs: never crash, never read out of bounds (ASan), and a parse
 * that succeeds gives ids and refs that are valid. */
static void test_random_inputs(void)
{
	char seed[4096];
	const char *flush[] = {""};
	size_t sn = push_body(seed, sizeof seed, A40, B40, "refs/heads/sandbox/x", "report-status", flush, 1,
			      PACK_HDR, 12);
	char adv[4096];
	size_t an = advert(adv, sizeof adv, 1);
	unsigned x = 12345;
	for (int i = 0; i < 200000; i++) {
		char m[4096];
		const char *src = i & 1 ? seed : adv;
		size_t n = i & 1 ? sn : an;
		memcpy(m, src, n);
		int flips = 1 + (int)(x % 4);
		for (int f = 0; f < flips; f++) {
			x = x * 1103515245u + 12345u;
			m[(x >> 8) % n] = (char)(x >> 16);
		}
		x = x * 1103515245u + 12345u;
		size_t len = (x >> 4) % 4 == 0 ? (x >> 8) % (n + 1) : n;
		char *heap = malloc(len ? len : 1);
		memcpy(heap, m, len);
		px_push_req r;
		if (px_push_parse(heap, len, &r) == 0) {
			for (int c = 0; c < r.ncmds; c++)
				CHECK(px_ref_valid(r.cmds[c].ref, strlen(r.cmds[c].ref)));
			CHECK(r.pack_offset <= len);
			px_push_req_free(&r);
		}
		px_advert a;
		if (px_advert_parse(heap, len, &a) == 0)
			px_advert_free(&a);
		px_upload_req u;
		if (px_upload_parse(heap, len, &u) == 0)
			px_upload_req_free(&u);
		free(heap);
	}
}

int main(void)
{
	RUN(test_framing);
	RUN(test_ref_names);
	RUN(test_push_update);
	RUN(test_push_delete_and_pack);
	RUN(test_push_malformed);
	RUN(test_push_shallow_options_sha256);
	RUN(test_advert_parse_build);
	RUN(test_advert_malformed);
	RUN(test_upload);
	RUN(test_report_status);
	RUN(test_sideband_split);
	RUN(test_random_inputs);
	return ctest_done();
}
