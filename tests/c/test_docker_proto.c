/* The Docker transport's pure parts: endpoint URLs, header safety, stream demultiplexing. */
#include "ctest.h"
#include "docker_proto.h"

#include <stdlib.h>

static void test_endpoints(void)
{
	fdr_dk_endpoint ep;
	char err[256];
	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, "unix:///var/run/docker.sock", 0, err, sizeof err), 0);
	CHECK_EQ_INT(ep.kind, FDR_DK_UNIX);
	CHECK_EQ_STR(ep.path, "/var/run/docker.sock");
	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, "/run/user/1000/docker.sock", 0, err, sizeof err), 0);
	CHECK_EQ_STR(ep.path, "/run/user/1000/docker.sock");

	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, "tcp://10.0.0.2:2376", 1, err, sizeof err), 0);
	CHECK_EQ_INT(ep.kind, FDR_DK_TCP);
	CHECK_EQ_STR(ep.host, "10.0.0.2");
	CHECK_EQ_INT(ep.port, 2376);
	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, "tcp://docker.example", 0, err, sizeof err), 0);
	CHECK_EQ_INT(ep.port, 2375);
	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, "tcp://docker.example/", 1, err, sizeof err), 0);
	CHECK_EQ_INT(ep.port, 2376);
	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, "tcp://[::1]:99", 0, err, sizeof err), 0);
	CHECK_EQ_STR(ep.host, "::1");
	CHECK_EQ_INT(ep.port, 99);
}

static void test_bad_endpoints(void)
{
	fdr_dk_endpoint ep;
	char err[256];
	const char *bad[] = {"", "ssh://host", "unix://relative", "tcp://", "tcp://h:0", "tcp://h:65536",
			     "tcp://h:12x", "tcp://[::1", "tcp://[::1]x", "tcp://h:1/path", "npipe:////./pipe/x",
			     NULL};
	for (int i = 0; bad[i]; i++) {
		err[0] = 0;
		int rc = fdr_dk_endpoint_parse(&ep, bad[i], 0, err, sizeof err);
		if (rc == 0)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK_EQ_INT(rc, -1);
		CHECK(err[0] != 0);
	}
	fdr_dk_endpoint_parse(&ep, "ssh://host", 0, err, sizeof err);
	CHECK(strstr(err, "unsupported scheme 'ssh'") != NULL);
	char longpath[200] = "unix:///";
	memset(longpath + 8, 'a', 150);
	longpath[158] = 0;
	CHECK_EQ_INT(fdr_dk_endpoint_parse(&ep, longpath, 0, err, sizeof err), -1);
}

static void test_header_safety(void)
{
	CHECK(fdr_dk_header_safe("application/json", 16));
	CHECK(fdr_dk_header_safe("a\tb", 3));
	CHECK(!fdr_dk_header_safe("a\r\nX-Evil: 1", 13));
	CHECK(!fdr_dk_header_safe("a\nb", 3));
	CHECK(!fdr_dk_header_safe("a\0b", 3));
	CHECK(!fdr_dk_header_safe("a\x7f", 2));
}

struct sink {
	char out[4096], err[4096];
	size_t nout, nerr;
	int calls;
	int stop_after;
};

static int sink_emit(void *ctx, int stream, const char *data, size_t len)
{
	struct sink *s = ctx;
	s->calls++;
	if (stream == 2) {
		memcpy(s->err + s->nerr, data, len);
		s->nerr += len;
	} else {
		memcpy(s->out + s->nout, data, len);
		s->nout += len;
	}
	return s->stop_after && s->calls >= s->stop_after;
}

static size_t frame(char *dst, int stream, const char *data, size_t len)
{
	dst[0] = (char)stream;
	dst[1] = dst[2] = dst[3] = 0;
	dst[4] = (char)(len >> 24);
	dst[5] = (char)(len >> 16);
	dst[6] = (char)(len >> 8);
	dst[7] = (char)len;
	memcpy(dst + 8, data, len);
	return 8 + len;
}

static void test_demux_whole_and_split(void)
{
	char buf[1024];
	size_t n = 0;
	n += frame(buf + n, 1, "hello ", 6);
	n += frame(buf + n, 2, "oops\n", 5);
	n += frame(buf + n, 1, "", 0);
	n += frame(buf + n, 1, "world\n", 6);
	n += frame(buf + n, 0, "in", 2); /* stdin echoes are passed as stdout */

	/* at once */
	struct sink s = {0};
	fdr_dk_demux d = {0};
	CHECK_EQ_INT(fdr_dk_demux_feed(&d, buf, n, sink_emit, &s), 0);
	CHECK(fdr_dk_demux_idle(&d));
	CHECK_EQ_INT((int)s.nout, 14);
	CHECK(memcmp(s.out, "hello world\nin", 14) == 0);
	CHECK_EQ_INT((int)s.nerr, 5);
	CHECK(memcmp(s.err, "oops\n", 5) == 0);

	/* one byte at a time: the same result, headers split anywhere */
	struct sink t = {0};
	fdr_dk_demux e = {0};
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ_INT(fdr_dk_demux_feed(&e, buf + i, 1, sink_emit, &t), 0);
		if (i == 3)
			CHECK(!fdr_dk_demux_idle(&e));
	}
	CHECK(fdr_dk_demux_idle(&e));
	CHECK_EQ_INT((int)t.nout, 14);
	CHECK(memcmp(t.out, "hello world\nin", 14) == 0);
	CHECK_EQ_INT((int)t.nerr, 5);
}

struct check {
	const char *want;
	size_t got;
	int mismatch;
	int bad_stream;
};

static int check_emit(void *ctx, int stream, const char *data, size_t len)
{
	struct check *c = ctx;
	if (stream != 1)
		c->bad_stream = 1;
	if (memcmp(c->want + c->got, data, len) != 0)
		c->mismatch = 1;
	c->got += len;
	return 0;
}

static void test_demux_binary_and_large(void)
{
	/* a frame bigger than any one read, with every byte value, fed in 64 KiB reads */
	size_t len = 300000;
	char *payload = malloc(len), *buf = malloc(len + 8);
	for (size_t i = 0; i < len; i++)
		payload[i] = (char)(i * 7);
	size_t n = frame(buf, 1, payload, len);
	fdr_dk_demux d = {0};
	struct check c = {payload, 0, 0, 0};
	for (size_t off = 0; off < n; off += 65536) {
		size_t take = n - off < 65536 ? n - off : 65536;
		CHECK_EQ_INT(fdr_dk_demux_feed(&d, buf + off, take, check_emit, &c), 0);
	}
	CHECK_EQ_INT((int)c.got, (int)len);
	CHECK(!c.mismatch);
	CHECK(!c.bad_stream);
	CHECK(fdr_dk_demux_idle(&d));
	free(payload);
	free(buf);
}

static void test_demux_rejects_garbage(void)
{
	/* a TTY stream mistaken for a multiplexed one: not a frame header */
	struct sink s = {0};
	fdr_dk_demux d = {0};
	CHECK_EQ_INT(fdr_dk_demux_feed(&d, "hello world\n", 12, sink_emit, &s), -1);
	CHECK_EQ_INT(s.calls, 0);
	char hdr[8] = {1, 0, 0, 1, 0, 0, 0, 1}; /* reserved bytes set */
	fdr_dk_demux e = {0};
	CHECK_EQ_INT(fdr_dk_demux_feed(&e, hdr, 8, sink_emit, &s), -1);
}

static void test_demux_stops_when_asked(void)
{
	char buf[64];
	size_t n = frame(buf, 1, "ab", 2);
	n += frame(buf + n, 2, "cd", 2);
	struct sink s = {0};
	s.stop_after = 1;
	fdr_dk_demux d = {0};
	CHECK_EQ_INT(fdr_dk_demux_feed(&d, buf, n, sink_emit, &s), 1);
	CHECK_EQ_INT(s.calls, 1);
	CHECK_EQ_INT((int)s.nout, 2);
	CHECK_EQ_INT((int)s.nerr, 0);
}

int main(void)
{
	RUN(test_endpoints);
	RUN(test_bad_endpoints);
	RUN(test_header_safety);
	RUN(test_demux_whole_and_split);
	RUN(test_demux_binary_and_large);
	RUN(test_demux_rejects_garbage);
	RUN(test_demux_stops_when_asked);
	return ctest_done();
}
