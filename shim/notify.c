/*
 * notify.c - `foundry-shim notify EVENT`: the agent's hooks call this with the hook's
 * JSON on stdin; it is posted to the daemon over the sandbox's proxy socket as
 *
 *   POST /_foundry/hook HTTP/1.1
 *   X-Foundry-Token: hex(HMAC-SHA256(token, body))
 *
 *   {"event":EVENT,"payload":<stdin JSON, or stdin as a string>,"ts":UNIX_SECONDS,
 *    "nonce":"<32 hex digits>"}
 *
 * The socket identifies the sandbox; the HMAC (keyed with the per-sandbox token file's
 * contents, trailing whitespace removed) proves the event came from inside it, and ts and
 * nonce let the daemon refuse replays. A hook must never break or stall the agent: the
 * whole command takes at most two seconds and exits 0 whatever happens, saying on
 * stderr what went wrong.
 */
#include "sha256.h"
#include "shim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD_MAX (1 << 20)
#define TOKEN_MAX 4096
#define TIMEOUT_MS 2000
#define MAX_DEPTH 128

/* ---- a growing buffer ---- */

struct buf {
	char *p;
	size_t len, cap;
	int oom;
};

static void buf_add(struct buf *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p, b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

/* ---- JSON: enough to tell whether stdin is one JSON value ---- */

struct js {
	const char *p, *end;
};

static void js_ws(struct js *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int js_lit(struct js *j, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return 0;
	j->p += n;
	return 1;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int js_string(struct js *j)
{
	if (j->p >= j->end || *j->p != '"')
		return 0;
	for (j->p++; j->p < j->end; j->p++) {
		unsigned char c = (unsigned char)*j->p;
		if (c == '"') {
			j->p++;
			return 1;
		}
		if (c < 0x20)
			return 0;
		if (c == '\\') {
			if (++j->p >= j->end)
				return 0;
			if (*j->p == 'u') {
				for (int k = 0; k < 4; k++)
					if (++j->p >= j->end || !is_hex(*j->p))
						return 0;
			} else if (!strchr("\"\\/bfnrt", *j->p)) {
				return 0;
			}
		}
	}
	return 0;
}

static int js_number(struct js *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p >= j->end || !is_digit(*j->p))
		return 0;
	if (*j->p == '0')
		j->p++;
	else
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	if (j->p < j->end && *j->p == '.') {
		if (++j->p >= j->end || !is_digit(*j->p))
			return 0;
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || !is_digit(*j->p))
			return 0;
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	}
	return 1;
}

static int js_value(struct js *j, int depth)
{
	if (depth > MAX_DEPTH)
		return 0;
	js_ws(j);
	if (j->p >= j->end)
		return 0;
	char c = *j->p;
	if (c == '"')
		return js_string(j);
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		j->p++;
		js_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			return 1;
		}
		for (;;) {
			if (c == '{') {
				js_ws(j);
				if (!js_string(j))
					return 0;
				js_ws(j);
				if (j->p >= j->end || *j->p++ != ':')
					return 0;
			}
			if (!js_value(j, depth + 1))
				return 0;
			js_ws(j);
			if (j->p >= j->end)
				return 0;
			if (*j->p == ',') {
				j->p++;
				continue;
			}
			if (*j->p++ != close)
				return 0;
			return 1;
		}
	}
	if (c == 't')
		return js_lit(j, "true");
	if (c == 'f')
		return js_lit(j, "false");
	if (c == 'n')
		return js_lit(j, "null");
	return js_number(j);
}

/* 1 when s[0, n) is exactly one JSON value (surrounding whitespace allowed). */
static int json_valid(const char *s, size_t n)
{
	struct js j = {s, s + n};
	if (!js_value(&j, 0))
		return 0;
	js_ws(&j);
	return j.p == j.end;
}

static void json_quote(struct buf *b, const char *s, size_t n)
{
	buf_add(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\', esc[1] = (char)c;
			buf_add(b, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			buf_add(b, esc, 6);
		} else {
			buf_add(b, &s[i], 1);
		}
	}
	buf_add(b, "\"", 1);
}

/* ---- I/O with a deadline ---- */

static uint64_t deadline;

static int remaining(void)
{
	uint64_t now = shim_now_ms();
	return now >= deadline ? 0 : (int)(deadline - now);
}

/* Wait until fd is ready for `events`; 0, or -1 with errno (ETIMEDOUT). */
static int wait_fd(int fd, short events)
{
	for (;;) {
		int ms = remaining();
		if (ms == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, ms);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* Read stdin into b, at most `cap` bytes; returns 1 when there was more. Stops at the
 * deadline (what was read so far is kept). */
static int read_stdin(struct buf *b, size_t cap)
{
	if (isatty(STDIN_FILENO))
		return 0;
	int fl = fcntl(STDIN_FILENO, F_GETFL);
	if (fl >= 0)
		fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK);
	char chunk[16384];
	int over = 0;
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
		if (n > 0) {
			size_t room = cap - b->len;
			if ((size_t)n > room) {
				buf_add(b, chunk, room);
				over = 1;
				break;
			}
			buf_add(b, chunk, (size_t)n);
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(STDIN_FILENO, POLLIN) == 0)
			continue;
		if (errno == ETIMEDOUT)
			shim_log("notify: stdin still open after %d ms; sending what was read",
				 TIMEOUT_MS / 2);
		break;
	}
	if (fl >= 0)
		fcntl(STDIN_FILENO, F_SETFL, fl);
	return over;
}

static int read_token(const char *path, char *out, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, out + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap)
			break;
	}
	close(fd);
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' ||
		     out[n - 1] == '\t'))
		n--;
	*len = n;
	if (n == 0) {
		errno = ENODATA;
		return -1;
	}
	return 0;
}

static int valid_event(const char *e)
{
	size_t n = strlen(e);
	if (n == 0 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = e[i];
		if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !is_digit(c) &&
		    c != '-' && c != '_' && c != '.' && c != ':')
			return 0;
	}
	return 1;
}

static void nonce_hex(char out[33])
{
	unsigned char r[16];
	size_t got = 0;
	while (got < sizeof r) {
		ssize_t n = getrandom(r + got, sizeof r - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got < sizeof r) {
		/* No getrandom (very old kernel): the nonce only has to be unique. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec;
		for (size_t i = got; i < sizeof r; i++, x = x * 6364136223846793005u + 1442695040888963407u)
			r[i] = (unsigned char)(x >> 56);
	}
	shim_hex(r, sizeof r, out);
}

/* POST the request; returns the HTTP status, or -1 with errno and *what set. */
static int post(const char *path, const struct buf *req, const char **what)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t plen = strlen(path);
	if (plen >= sizeof sun.sun_path) {
		*what = "socket path too long";
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, plen + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*what = "socket";
		return -1;
	}
	*what = "connect";
	while (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		if (errno != EAGAIN && errno != EINTR)
			goto fail;
		/* The daemon's backlog is full: try again shortly, within the deadline. */
		if (remaining() == 0) {
			errno = ETIMEDOUT;
			goto fail;
		}
		poll(NULL, 0, 10);
	}
	*what = "send";
	for (size_t off = 0; off < req->len;) {
		ssize_t n = send(fd, req->p + off, req->len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(fd, POLLOUT) < 0)
				goto fail;
		} else {
			goto fail;
		}
	}
	/* The status line is all we need. */
	*what = "read the response";
	char resp[256];
	size_t got = 0;
	while (got < sizeof resp - 1 && !memchr(resp, '\n', got)) {
		ssize_t n = recv(fd, resp + got, sizeof resp - 1 - got, 0);
		if (n > 0) {
			got += (size_t)n;
		} else if (n == 0) {
			break;
		} else if (errno == EINTR) {
			continue;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (wait_fd(fd, POLLIN) < 0)
				goto fail;
		} else {
			goto fail;
		}
	}
	close(fd);
	resp[got] = 0;
	int status;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1) {
		*what = "read the response";
		errno = EPROTO;
		return -1;
	}
	return status;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

int shim_notify(int argc, char **argv)
{
	if (argc < 2 || !valid_event(argv[1])) {
		shim_log("usage: foundry-shim notify EVENT < event.json  (EVENT: letters, digits, "
			 "'-', '_', '.', ':'; at most 64)");
		return 2;
	}
	const char *event = argv[1];
	deadline = shim_now_ms() + TIMEOUT_MS;
	const char *sock = getenv("FOUNDRY_PROXY_SOCKET");
	const char *tokfile = getenv("FOUNDRY_HOOK_TOKEN_FILE");
	if (!sock || !*sock)
		sock = SHIM_DEFAULT_SOCKET;
	if (!tokfile || !*tokfile)
		tokfile = SHIM_DEFAULT_TOKEN;

	/* Half the time for stdin, so a stuck writer still leaves time to deliver. */
	struct buf in = {0};
	uint64_t full = deadline;
	deadline = shim_now_ms() + TIMEOUT_MS / 2;
	int truncated = read_stdin(&in, PAYLOAD_MAX);
	deadline = full;

	char token[TOKEN_MAX];
	size_t toklen;
	if (read_token(tokfile, token, sizeof token, &toklen) < 0) {
		shim_log("notify %s: cannot read the hook token %s: %s; event dropped", event,
			 tokfile, strerror(errno));
		free(in.p);
		return 0;
	}

	struct buf body = {0};
	char num[64], nonce[33];
	buf_str(&body, "{\"event\":");
	json_quote(&body, event, strlen(event));
	buf_str(&body, ",\"payload\":");
	size_t s = 0, e = in.len;
	while (s < e && strchr(" \t\r\n", in.p[s]))
		s++;
	while (e > s && strchr(" \t\r\n", in.p[e - 1]))
		e--;
	if (truncated)
		buf_str(&body, "null,\"truncated\":true");
	else if (s == e)
		buf_str(&body, "null");
	else if (json_valid(in.p + s, e - s))
		buf_add(&body, in.p + s, e - s);
	else
		json_quote(&body, in.p + s, e - s);
	free(in.p);
	snprintf(num, sizeof num, ",\"ts\":%lld,\"nonce\":\"", (long long)time(NULL));
	buf_str(&body, num);
	nonce_hex(nonce);
	buf_str(&body, nonce);
	buf_str(&body, "\"}");

	unsigned char mac[SHIM_SHA256_LEN];
	char machex[2 * SHIM_SHA256_LEN + 1];
	shim_hmac_sha256(token, toklen, body.p ? body.p : "", body.len, mac);
	volatile char *vt = token;
	for (size_t i = 0; i < toklen; i++)
		vt[i] = 0;
	shim_hex(mac, sizeof mac, machex);

	struct buf req = {0};
	char head[256];
	snprintf(head, sizeof head,
		 "POST /_foundry/hook HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n"
		 "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		 "X-Foundry-Token: %s\r\nConnection: close\r\n\r\n",
		 body.len, machex);
	buf_str(&req, head);
	buf_add(&req, body.p ? body.p : "", body.len);
	free(body.p);
	if (req.oom || body.oom) {
		shim_log("notify %s: out of memory; event dropped", event);
		free(req.p);
		return 0;
	}
	const char *what = "";
	int status = post(sock, &req, &what);
	free(req.p);
	if (status < 0)
		shim_log("notify %s: %s %s: %s; event dropped", event, what, sock, strerror(errno));
	else if (status < 200 || status > 299)
		shim_log("notify %s: the daemon answered HTTP %d; event dropped", event, status);
	return 0;
}
