/*
 * shim_load.c - load generator and upstream for bench/shim.sh (not part of Foundry).
 *
 *   shim_load serve PATH                 upstream on a Unix socket, a thread per connection:
 *                                        first byte 'E' echoes, 'B' + 8-byte length streams
 *                                        that many bytes, 'U' counts bytes until EOF, replies 8
 *   shim_load rr ADDR N                  N 64-byte round trips on one connection: p50/p99 us
 *   shim_load bulk ADDR BYTES            download BYTES: MB/s
 *   shim_load upload ADDR BYTES          upload BYTES then half-close: MB/s
 *   shim_load conns ADDR N [PAR]         N connections (PAR at a time), 1 round trip each: /s
 *
 * ADDR is unix:/path or tcp:HOST:PORT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int full_write(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w, n -= (size_t)w;
	}
	return 0;
}

static int full_read(int fd, void *p, size_t n)
{
	char *c = p;
	while (n) {
		ssize_t r = read(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r, n -= (size_t)r;
	}
	return 0;
}

static int dial(const char *addr)
{
	int fd;
	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", addr + 5);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
			return close(fd), -1;
		return fd;
	}
	char host[64];
	const char *colon = strrchr(addr + 4, ':');
	snprintf(host, sizeof host, "%.*s", (int)(colon - addr - 4), addr + 4);
	struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	inet_pton(AF_INET, host, &in.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&in, sizeof in) < 0)
		return close(fd), -1;
	return fd;
}

static void *serve_one(void *arg)
{
	int fd = (int)(intptr_t)arg;
	static char buf[1 << 16];
	char mode;
	if (full_read(fd, &mode, 1) == 0) {
		if (mode == 'E') {
			char b[4096];
			ssize_t n;
			while ((n = read(fd, b, sizeof b)) > 0)
				if (full_write(fd, b, (size_t)n) < 0)
					break;
		} else if (mode == 'B') {
			uint64_t left;
			if (full_read(fd, &left, 8) == 0)
				while (left) {
					size_t k = left < sizeof buf ? left : sizeof buf;
					if (full_write(fd, buf, k) < 0)
						break;
					left -= k;
				}
		} else if (mode == 'U') {
			char b[1 << 16];
			uint64_t total = 0;
			ssize_t n;
			while ((n = read(fd, b, sizeof b)) > 0)
				total += (uint64_t)n;
			full_write(fd, &total, 8);
		}
	}
	close(fd);
	return NULL;
}

static int serve(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	unlink(path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(s, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(s, 4096) < 0) {
		perror("serve");
		return 1;
	}
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&a, 256 * 1024);
		if (pthread_create(&t, &a, serve_one, (void *)(intptr_t)c) != 0)
			close(c);
	}
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int rr(const char *addr, int n)
{
	int fd = dial(addr);
	if (fd < 0 || full_write(fd, "E", 1) < 0)
		return perror("rr"), 1;
	char msg[64] = {0};
	double *lat = malloc(sizeof *lat * (size_t)n);
	for (int i = 0; i < n; i++) {
		double t0 = now_us();
		if (full_write(fd, msg, sizeof msg) < 0 || full_read(fd, msg, sizeof msg) < 0)
			return perror("rr"), 1;
		lat[i] = now_us() - t0;
	}
	qsort(lat, (size_t)n, sizeof *lat, cmp);
	printf("p50_us=%.1f p99_us=%.1f\n", lat[n / 2], lat[n * 99 / 100]);
	close(fd);
	free(lat);
	return 0;
}

static int bulk(const char *addr, uint64_t bytes, int upload)
{
	static char buf[1 << 16];
	int fd = dial(addr);
	if (fd < 0)
		return perror("bulk"), 1;
	double t0 = now_us();
	if (upload) {
		full_write(fd, "U", 1);
		for (uint64_t left = bytes; left;) {
			size_t k = left < sizeof buf ? left : sizeof buf;
			if (full_write(fd, buf, k) < 0)
				return perror("upload"), 1;
			left -= k;
		}
		shutdown(fd, SHUT_WR);
		uint64_t got = 0;
		if (full_read(fd, &got, 8) < 0 || got != bytes)
			return fprintf(stderr, "upload: server counted %llu\n", (unsigned long long)got), 1;
	} else {
		full_write(fd, "B", 1);
		full_write(fd, &bytes, 8);
		uint64_t got = 0;
		ssize_t r;
		while (got < bytes && (r = read(fd, buf, sizeof buf)) > 0)
			got += (uint64_t)r;
		if (got != bytes)
			return fprintf(stderr, "bulk: short read\n"), 1;
	}
	double s = (now_us() - t0) / 1e6;
	printf("MBps=%.0f\n", bytes / s / 1e6);
	close(fd);
	return 0;
}

struct cargs {
	const char *addr;
	int n, fail;
};

static void *conn_worker(void *arg)
{
	struct cargs *a = arg;
	for (int i = 0; i < a->n; i++) {
		int fd = dial(a->addr);
		char b = 'x';
		if (fd < 0 || full_write(fd, "Ex", 2) < 0 || full_read(fd, &b, 1) < 0)
			a->fail++;
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static int conns(const char *addr, int n, int par)
{
	pthread_t t[256];
	struct cargs a[256];
	double t0 = now_us();
	for (int i = 0; i < par; i++) {
		a[i] = (struct cargs){addr, n / par, 0};
		pthread_create(&t[i], NULL, conn_worker, &a[i]);
	}
	int fail = 0;
	for (int i = 0; i < par; i++) {
		pthread_join(t[i], NULL);
		fail += a[i].fail;
	}
	double s = (now_us() - t0) / 1e6;
	printf("conns_per_s=%.0f failed=%d\n", (n / par * par) / s, fail);
	return fail != 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 3 && !strcmp(argv[1], "serve"))
		return serve(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "rr"))
		return rr(argv[2], atoi(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "bulk"))
		return bulk(argv[2], strtoull(argv[3], NULL, 10), 0);
	if (argc >= 4 && !strcmp(argv[1], "upload"))
		return bulk(argv[2], strtoull(argv[3], NULL, 10), 1);
	if (argc >= 4 && !strcmp(argv[1], "conns")) {
		int par = argc >= 5 ? atoi(argv[4]) : 1;
		if (par < 1 || par > 256)
			par = 1;
		return conns(argv[2], atoi(argv[3]), par);
	}
	fprintf(stderr, "usage: see the top of bench/shim_load.c\n");
	return 2;
}
