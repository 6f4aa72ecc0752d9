/* proxy/addr.c: every spelling of an address is recognised, and classified. */
#include "ctest.h"
#include "addr.h"

static int canon(const char *in, char *out)
{
	return px_host_canon(in, strlen(in), out, NULL);
}

static void expect_ip(const char *in, const char *want)
{
	char out[PX_HOST_MAX] = "";
	int rc = canon(in, out);
	if (rc != PX_HOST_IP || strcmp(out, want) != 0)
		fprintf(stderr, "  %s -> rc %d '%s', expected '%s'\n", in, rc, out, want);
	CHECK(rc == PX_HOST_IP);
	CHECK_EQ_STR(out, want);
}

static void expect_bad(const char *in)
{
	char out[PX_HOST_MAX];
	int rc = canon(in, out);
	if (rc != -1)
		fprintf(stderr, "  %s accepted as '%s'\n", in, out);
	CHECK_EQ_INT(rc, -1);
}

static void test_ipv4_encodings(void)
{
	const char *loopback[] = {"127.0.0.1", "2130706433", "017700000001", "0x7f000001",
				  "0x7F.0.0.1", "0177.0.0.1", "127.1", "127.0.1", "0x7f.1",
				  "127.000.000.001", "127.0.0.1.", "0X7f.0x0.0x0.0x1", NULL};
	for (int i = 0; loopback[i]; i++)
		expect_ip(loopback[i], "127.0.0.1");
	expect_ip("169.254.169.254", "169.254.169.254");
	expect_ip("0xa9fea9fe", "169.254.169.254");
	expect_ip("2852039166", "169.254.169.254");
	expect_ip("0251.0376.0251.0376", "169.254.169.254");
	expect_ip("169.16689662", "169.254.169.254");
	expect_ip("0", "0.0.0.0");
	expect_ip("0x", "0.0.0.0"); /* WHATWG: an empty hex part is zero */
}

static void test_ipv6_encodings(void)
{
	expect_ip("[::1]", "::1");
	expect_ip("::1", "::1");
	expect_ip("[0:0:0:0:0:0:0:1]", "::1");
	expect_ip("[::ffff:127.0.0.1]", "127.0.0.1");
	expect_ip("[::ffff:7f00:1]", "127.0.0.1");
	expect_ip("[::FFFF:169.254.169.254]", "169.254.169.254");
	expect_ip("[2001:DB8::1]", "2001:db8::1");
	expect_bad("[fe80::1%eth0]");
	expect_bad("[::1");
	expect_bad("[not-an-address]");
}

static void test_names(void)
{
	char out[PX_HOST_MAX];
	CHECK_EQ_INT(canon("API.Anthropic.COM.", out), PX_HOST_NAME);
	CHECK_EQ_STR(out, "api.anthropic.com");
	CHECK_EQ_INT(canon("my_host-1.example", out), PX_HOST_NAME);
	CHECK_EQ_INT(canon("1password.com", out), PX_HOST_NAME);
	CHECK_EQ_INT(canon("example.0x7g", out), PX_HOST_NAME);
	expect_bad("1.2.3.09");       /* numeric last label, not a valid address */
	expect_bad("1.2.3.4.5");
	expect_bad("256.1.1.1");
	expect_bad("1.2.65536");
	expect_bad("4294967296");
	expect_bad("example.123");
	expect_bad("a..b");
	expect_bad(".");
	expect_bad("");
	expect_bad("exa mple.com");
	expect_bad("exa%2ample.com");
	expect_bad("ex\xc3\xa4mple.com");
	expect_bad("a.b:80");
	char longlabel[80];
	memset(longlabel, 'a', 64);
	strcpy(longlabel + 64, ".com");
	expect_bad(longlabel);
}

static int klass(const char *s)
{
	px_ip ip;
	char out[PX_HOST_MAX];
	if (px_host_canon(s, strlen(s), out, &ip) != PX_HOST_IP)
		return -1;
	return px_ip_classify(&ip);
}

static void test_classes(void)
{
	CHECK_EQ_INT(klass("8.8.8.8"), PX_PUBLIC);
	CHECK_EQ_INT(klass("2606:4700::1111"), PX_PUBLIC);
	CHECK_EQ_INT(klass("127.0.0.1"), PX_LOOPBACK);
	CHECK_EQ_INT(klass("127.255.1.2"), PX_LOOPBACK);
	CHECK_EQ_INT(klass("::1"), PX_LOOPBACK);
	CHECK_EQ_INT(klass("::ffff:127.0.0.1"), PX_LOOPBACK);
	CHECK_EQ_INT(klass("10.1.2.3"), PX_PRIVATE);
	CHECK_EQ_INT(klass("172.31.255.255"), PX_PRIVATE);
	CHECK_EQ_INT(klass("172.32.0.1"), PX_PUBLIC);
	CHECK_EQ_INT(klass("192.168.1.1"), PX_PRIVATE);
	CHECK_EQ_INT(klass("fd12::1"), PX_PRIVATE);
	CHECK_EQ_INT(klass("169.254.1.1"), PX_LINK_LOCAL);
	CHECK_EQ_INT(klass("fe80::1"), PX_LINK_LOCAL);
	CHECK_EQ_INT(klass("100.64.0.1"), PX_CGNAT);
	CHECK_EQ_INT(klass("224.0.0.1"), PX_MULTICAST);
	CHECK_EQ_INT(klass("ff02::1"), PX_MULTICAST);
	CHECK_EQ_INT(klass("169.254.169.254"), PX_METADATA);
	CHECK_EQ_INT(klass("0xa9fea9fe"), PX_METADATA);
	CHECK_EQ_INT(klass("100.100.100.200"), PX_METADATA);
	CHECK_EQ_INT(klass("fd00:ec2::254"), PX_METADATA);
	CHECK_EQ_INT(klass("0.0.0.0"), PX_UNSPECIFIED);
	CHECK_EQ_INT(klass("::"), PX_UNSPECIFIED);
	CHECK_EQ_INT(klass("255.255.255.255"), PX_RESERVED);
	CHECK_EQ_INT(klass("64:ff9b::7f00:1"), PX_LOOPBACK);    /* NAT64 of 127.0.0.1 */
	CHECK_EQ_INT(klass("2002:a9fe:a9fe::1"), PX_METADATA); /* 6to4 of the metadata IP */
	CHECK_EQ_INT(klass("::127.0.0.1"), PX_LOOPBACK);       /* IPv4-compatible */
}

static void test_hostport(void)
{
	const char *h;
	size_t hl;
	int port;
	CHECK_EQ_INT(px_hostport_split("example.com:443", 15, &h, &hl, &port, 1), 0);
	CHECK_EQ_INT(hl, 11);
	CHECK_EQ_INT(port, 443);
	CHECK_EQ_INT(px_hostport_split("[::1]:8080", 10, &h, &hl, &port, 1), 0);
	CHECK_EQ_INT(hl, 5);
	CHECK_EQ_INT(port, 8080);
	CHECK_EQ_INT(px_hostport_split("example.com", 11, &h, &hl, &port, 1), -1);
	CHECK_EQ_INT(px_hostport_split("example.com", 11, &h, &hl, &port, 0), 0);
	CHECK_EQ_INT(px_hostport_split("example.com:0", 13, &h, &hl, &port, 1), -1);
	CHECK_EQ_INT(px_hostport_split("example.com:65536", 17, &h, &hl, &port, 1), -1);
	CHECK_EQ_INT(px_hostport_split("::1:80", 6, &h, &hl, &port, 1), -1);
	CHECK_EQ_INT(px_hostport_split(":80", 3, &h, &hl, &port, 1), -1);
}

static void test_cidr(void)
{
	px_cidr c;
	px_ip ip;
	char out[PX_HOST_MAX];
	CHECK_EQ_INT(px_cidr_parse("10.0.0.0/8", &c), 0);
	px_host_canon("10.200.1.1", 10, out, &ip);
	CHECK(px_cidr_contains(&c, &ip));
	px_host_canon("11.0.0.1", 8, out, &ip);
	CHECK(!px_cidr_contains(&c, &ip));
	CHECK_EQ_INT(px_cidr_parse("127.0.0.1", &c), 0);
	CHECK_EQ_INT(c.bits, 32);
	CHECK_EQ_INT(px_cidr_parse("10.0.0.0/33", &c), -1);
	CHECK_EQ_INT(px_cidr_parse("fd00::/8", &c), 0);
	CHECK_EQ_INT(px_cidr_parse("nonsense/8", &c), -1);
}

int main(void)
{
	RUN(test_ipv4_encodings);
	RUN(test_ipv6_encodings);
	RUN(test_names);
	RUN(test_classes);
	RUN(test_hostport);
	RUN(test_cidr);
	return ctest_done();
}
