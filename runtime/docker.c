/*
 * docker.c - module foundry._docker: HTTP/1.1 to the Docker engine on the libuv loop.
 *
 * One primitive, request(opts), wrapped by lua/foundry/docker.lua, which knows the
 * Engine API. A call runs: [open the body file] -> [resolve the host] -> connect (or reuse
 * a pooled keep-alive connection) -> [TLS handshake] -> send -> parse the response with
 * http_parser. Three modes:
 *   "buffer"  resolves with {status=, headers=, body=} when the response is complete;
 *   "stream"  resolves with the head and a Stream whose :read() yields body pieces
 *             (chunked encoding removed, optionally demultiplexed into stdout/stderr);
 *   "hijack"  asks the engine to upgrade the connection (attach, exec start) and
 *             resolves with a Stream that reads and writes raw bytes and can half-close.
 * A response with an error status is always buffered (no Stream), so the wrapper can read
 * the engine's message. Why raw libuv streams rather than libcurl: docs/architecture.md,
 * "Docker transport".
 *
 * Callbacks never resume Lua in the middle of parsing: they record what happened, and
 * call_settle() completes the waits at the end of the callback, holding a reference, so
 * whatever the resumed task does (close the stream, start other calls) is safe.
 */
#include "docker_proto.h"
#include "fdr.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define STREAM_MT "foundry.docker.Stream"
#define READ_SIZE 65536
#define FILE_CHUNK (256 * 1024)
#define HIGH_WATER (1024 * 1024)  /* queued stream bytes before we stop reading */
#define POOL_MAX 8                /* idle keep-alive connections per endpoint */
#define POOL_IDLE_MS 30000

typedef struct dk_mod dk_mod;
typedef struct dk_conn dk_conn;
typedef struct dk_call dk_call;

typedef struct {
	char *p;
	size_t len, cap;
} dk_buf;

static int buf_add(dk_buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (!q)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
	return 0;
}

static void buf_free(dk_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

typedef struct dk_seg {
	struct dk_seg *next;
	int stream;
	size_t len;
	char data[];
} dk_seg;

typedef struct dk_name {
	struct dk_name *next;
	char s[];
} dk_name;

typedef struct dk_ctx {
	struct dk_ctx *next;
	char *key;
	SSL_CTX *ctx;
} dk_ctx;

struct dk_mod {
	uv_loop_t *loop;
	dk_conn *conns;  /* every open connection, busy or pooled */
	int nconns;
	int ncalls;      /* calls not yet freed (they point back here) */
	int shut;        /* the host is shutting down: no new calls, free when idle */
	dk_name *names;  /* interned operation names, for fdr_wait_new's static `what` */
	dk_ctx *ctxs;    /* TLS contexts by configuration */
};

struct dk_conn {
	union {
		uv_handle_t handle;
		uv_stream_t stream;
		uv_pipe_t pipe;
		uv_tcp_t tcp;
	} io;
	dk_mod *mod;
	dk_conn *prev, *next;
	char *key;           /* pool key: endpoint and TLS configuration */
	SSL *ssl;
	BIO *rbio, *wbio;    /* memory BIOs: the socket is libuv's, not OpenSSL's */
	int tls_ready;
	dk_call *call;       /* the call using it; NULL while pooled */
	int pooled;
	uint64_t idle_since;
	int reading;
	int closing;
	char rbuf[READ_SIZE];
	char pbuf[READ_SIZE]; /* decrypted bytes */
};

enum { M_BUFFER, M_STREAM, M_HIJACK };

struct dk_call {
	dk_mod *mod;
	int refs;
	dk_conn *conn;
	const char *what;      /* interned */
	char *url;             /* the endpoint as configured, for messages */
	char *key;
	fdr_dk_endpoint ep;
	SSL_CTX *ctx;
	int verify;
	int mode, demux;
	size_t max_body;
	uint64_t timeout_ms;

	/* request */
	dk_buf head;           /* request line and headers, without Content-Length */
	char *body;
	size_t body_len;
	char *body_file;
	uv_file fd;
	int64_t file_size, file_off;
	char *fbuf;
	int has_body;
	int idempotent;        /* GET or HEAD: safe to send again */
	int reused, retried;
	uv_connect_t connect_req;
	uv_getaddrinfo_t gai;
	uv_fs_t fs;
	uv_shutdown_t shut;

	/* response */
	http_parser parser;
	int status;
	dk_buf hdrs;           /* name\0value\0 ... */
	int hstate;
	dk_buf body_in;        /* buffer mode, and error responses */
	int got_bytes;         /* any response byte arrived */
	int head_done, msg_done, raw, eof, body_error;
	fdr_dk_demux dmx;

	/* stream */
	dk_seg *qh, *qt;
	size_t qbytes;
	int collect;           /* read_all: gather into out/err until the end */
	dk_buf out, err;
	int ud;                /* a Stream userdata refers to this call */
	int write_closed;
	int handed;            /* the request wait got its answer */
	int req_done;          /* the request's own reference is released */

	/* waits: the request, a stream read, a stream write */
	fdr_wait *w_resp, *w_read, *w_write;

	/* failure: set once */
	int failed;
	char ecode[40];
	char emsg[512];
	char ehint[256];
};

typedef struct {
	dk_call *call;
} dk_stream;

/* ---- names, TLS contexts ---- */

static const char *intern(dk_mod *m, const char *s)
{
	for (dk_name *n = m->names; n; n = n->next)
		if (strcmp(n->s, s) == 0)
			return n->s;
	size_t len = strlen(s);
	dk_name *n = malloc(sizeof *n + len + 1);
	if (!n)
		return "docker";
	memcpy(n->s, s, len + 1);
	n->next = m->names;
	m->names = n;
	return n->s;
}

static void mod_free(dk_mod *m)
{
	for (dk_name *n = m->names, *next; n; n = next) {
		next = n->next;
		free(n);
	}
	for (dk_ctx *c = m->ctxs, *next; c; c = next) {
		next = c->next;
		SSL_CTX_free(c->ctx);
		free(c->key);
		free(c);
	}
	free(m);
}

static void ssl_reason(char *out, size_t n)
{
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, out, n);
	else
		snprintf(out, n, "unknown TLS error");
	ERR_clear_error();
}

/* A TLS context for {ca, cert, key, verify}, made once per configuration. Reading the
 * certificate files blocks briefly, once. */
static SSL_CTX *tls_context(dk_mod *m, const char *ca, const char *cert, const char *key,
			    int verify, char *err, size_t errlen)
{
	char k[4096];
	snprintf(k, sizeof k, "%s|%s|%s|%d", ca ? ca : "", cert ? cert : "", key ? key : "",
		 verify);
	for (dk_ctx *c = m->ctxs; c; c = c->next)
		if (strcmp(c->key, k) == 0)
			return c->ctx;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		ssl_reason(err, errlen);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	char why[256];
	if (ca && *ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		ssl_reason(why, sizeof why);
		snprintf(err, errlen, "cannot load CA %s: %s", ca, why);
		goto fail;
	}
	if (cert && *cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		ssl_reason(why, sizeof why);
		snprintf(err, errlen, "cannot load certificate %s: %s", cert, why);
		goto fail;
	}
	if (key && *key && SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		ssl_reason(why, sizeof why);
		snprintf(err, errlen, "cannot load key %s: %s", key, why);
		goto fail;
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	dk_ctx *c = calloc(1, sizeof *c);
	if (!c || !(c->key = strdup(k))) {
		free(c);
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	c->ctx = ctx;
	c->next = m->ctxs;
	m->ctxs = c;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- calls: lifetime and failure ---- */

static void call_ref(dk_call *c)
{
	c->refs++;
}

static void mod_maybe_free(dk_mod *m)
{
	if (m->shut && m->nconns == 0 && m->ncalls == 0)
		mod_free(m);
}

static void call_unref(dk_call *c)
{
	if (--c->refs > 0)
		return;
	if (c->fd >= 0)
		close(c->fd);
	uv_fs_req_cleanup(&c->fs);
	for (dk_seg *s = c->qh, *next; s; s = next) {
		next = s->next;
		free(s);
	}
	buf_free(&c->head);
	buf_free(&c->hdrs);
	buf_free(&c->body_in);
	buf_free(&c->out);
	buf_free(&c->err);
	free(c->body);
	free(c->body_file);
	free(c->fbuf);
	free(c->url);
	free(c->key);
	if (c->ctx)
		SSL_CTX_free(c->ctx);
	dk_mod *m = c->mod;
	free(c);
	m->ncalls--;
	mod_maybe_free(m);
}

/* Record the first failure; the waits learn it in call_settle. */
static void call_fail(dk_call *c, const char *code, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void call_fail(dk_call *c, const char *code, const char *hint, const char *fmt, ...)
{
	if (c->failed)
		return;
	c->failed = 1;
	snprintf(c->ecode, sizeof c->ecode, "%s", code);
	snprintf(c->ehint, sizeof c->ehint, "%s", hint ? hint : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->emsg, sizeof c->emsg, fmt, ap);
	va_end(ap);
}

static void fail_connect(dk_call *c, int uverr)
{
	const char *hint_run = "start the engine (systemctl start docker, or dockerd &), or "
			       "point DOCKER_HOST at one that runs";
	switch (uverr) {
	case UV_ENOENT:
		call_fail(c, "docker.unreachable", hint_run,
			  "cannot reach Docker at %s: no such file — is dockerd running?", c->url);
		break;
	case UV_ECONNREFUSED:
		call_fail(c, "docker.unreachable", hint_run,
			  "cannot reach Docker at %s: connection refused — is dockerd running?",
			  c->url);
		break;
	case UV_EACCES:
	case UV_EPERM:
		call_fail(c, "docker.permission_denied",
			  "add your user to the docker group (sudo usermod -aG docker $USER) and "
			  "log in again, or run as root",
			  "cannot reach Docker at %s: permission denied", c->url);
		break;
	default:
		call_fail(c, "docker.unreachable", hint_run, "cannot reach Docker at %s: %s",
			  c->url, uv_strerror(uverr));
	}
}

static void fail_disconnected(dk_call *c, const char *how)
{
	call_fail(c, "docker.disconnected",
		  "the engine may have been restarted; check it with 'docker info' and retry",
		  "%s: the connection to Docker at %s %s", c->what, c->url, how);
}

static void conn_close(dk_conn *k);
static void conn_read_start(dk_conn *k);
static void call_settle(dk_call *c);

/* Stop the call: fail it (unless already finished) and close its connection. Waits are
 * completed later, from libuv callbacks, never from here. */
static void call_abort(dk_call *c)
{
	if (c->conn)
		conn_close(c->conn);
}

/* ---- the stream queue ---- */

static int emit(void *ctx, int stream, const char *data, size_t len)
{
	dk_call *c = ctx;
	if (len == 0)
		return 0;
	if (c->collect) {
		dk_buf *b = stream == 2 ? &c->err : &c->out;
		if (buf_add(b, data, len) < 0)
			call_fail(c, "docker.memory", NULL, "%s: out of memory", c->what);
		return 0;
	}
	if (c->qt && c->qt->stream == stream && c->qt->len + len <= READ_SIZE) {
		/* small pieces of one stream: grow the tail instead of a segment each */
		dk_seg *s = realloc(c->qt, sizeof *s + c->qt->len + len);
		if (s) {
			if (c->qh == c->qt)
				c->qh = s;
			else
				for (dk_seg *p = c->qh; p; p = p->next)
					if (p->next == c->qt) {
						p->next = s;
						break;
					}
			c->qt = s;
			memcpy(s->data + s->len, data, len);
			s->len += len;
			c->qbytes += len;
			return 0;
		}
	}
	dk_seg *s = malloc(sizeof *s + len);
	if (!s) {
		call_fail(c, "docker.memory", NULL, "%s: out of memory", c->what);
		return 1;
	}
	s->next = NULL;
	s->stream = stream;
	s->len = len;
	memcpy(s->data, data, len);
	if (c->qt)
		c->qt->next = s;
	else
		c->qh = s;
	c->qt = s;
	c->qbytes += len;
	return 0;
}

/* Body bytes of a streamed response or a hijacked connection. */
static void deliver(dk_call *c, const char *data, size_t len)
{
	if (c->demux) {
		int rc = fdr_dk_demux_feed(&c->dmx, data, len, emit, c);
		if (rc < 0) {
			call_fail(c, "docker.protocol", NULL,
				  "%s: malformed multiplexed stream from Docker", c->what);
			call_abort(c);
		}
	} else {
		emit(c, 1, data, len);
	}
	if (c->conn && !c->collect && c->qbytes >= HIGH_WATER && c->conn->reading) {
		uv_read_stop(&c->conn->io.stream);
		c->conn->reading = 0;
	}
}

/* ---- pushing results ---- */

static void push_head(lua_State *S, dk_call *c)
{
	lua_createtable(S, 0, 3);
	lua_pushinteger(S, c->status);
	lua_setfield(S, -2, "status");
	lua_newtable(S);
	const char *p = c->hdrs.p, *end = p ? p + c->hdrs.len : NULL;
	while (p && p < end) {
		const char *name = p;
		size_t nlen = strlen(name);
		const char *value = name + nlen + 1;
		if (value >= end)
			break;
		char lower[128];
		size_t i = 0;
		for (; i < nlen && i + 1 < sizeof lower; i++)
			lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
		lower[i] = 0;
		lua_pushstring(S, value);
		lua_setfield(S, -2, lower);
		p = value + strlen(value) + 1;
	}
	lua_setfield(S, -2, "headers");
}

static void push_error(lua_State *S, dk_call *c)
{
	fdr_push_error(S, c->ecode, c->ehint[0] ? c->ehint : NULL, "%s", c->emsg);
}

static void stream_new(lua_State *S, dk_call *c);

/* Pop queued pieces of one stream (up to `max` bytes, 0: all of that stream's run) onto
 * S: data[, "stdout"|"stderr"]. Returns the number of values pushed. */
static int push_queued(lua_State *S, dk_call *c, size_t max)
{
	int stream = c->qh->stream;
	size_t total = 0;
	for (dk_seg *s = c->qh; s && s->stream == stream; s = s->next)
		total += s->len;
	if (max && total > max)
		total = max;
	luaL_Buffer b;
	char *dst = luaL_buffinitsize(S, &b, total);
	size_t got = 0;
	while (got < total) {
		dk_seg *s = c->qh;
		size_t n = s->len < total - got ? s->len : total - got;
		memcpy(dst + got, s->data, n);
		got += n;
		if (n == s->len) {
			c->qh = s->next;
			if (!c->qh)
				c->qt = NULL;
			free(s);
		} else {
			memmove(s->data, s->data + n, s->len - n);
			s->len -= n;
		}
	}
	c->qbytes -= total;
	luaL_pushresultsize(&b, total);
	if (c->demux) {
		lua_pushstring(S, stream == 2 ? "stderr" : "stdout");
		return 2;
	}
	return 1;
}

static void maybe_resume_reading(dk_call *c)
{
	if (c->conn && !c->conn->reading && !c->conn->closing && !c->eof &&
	    c->qbytes < HIGH_WATER / 2)
		conn_read_start(c->conn);
}

/* Complete whatever waits can be completed now. Runs Lua (resumed tasks): call it last in
 * a callback, with a reference held. */
static void call_settle(dk_call *c)
{
	call_ref(c);
	fdr_wait *w;
	/* the request */
	if ((w = c->w_resp) != NULL) {
		int answer = 0;
		if (c->failed) {
			c->w_resp = NULL;
			push_error(fdr_wait_state(w), c);
			fdr_wait_reject(w);
			answer = 1;
		} else if (c->msg_done && (c->mode == M_BUFFER || c->body_error)) {
			c->w_resp = NULL;
			lua_State *S = fdr_wait_state(w);
			push_head(S, c);
			lua_pushlstring(S, c->body_in.p ? c->body_in.p : "", c->body_in.len);
			lua_setfield(S, -2, "body");
			fdr_wait_resolve(w, 1);
			answer = 1;
		} else if (c->head_done && c->mode != M_BUFFER && !c->body_error) {
			c->w_resp = NULL;
			lua_State *S = fdr_wait_state(w);
			push_head(S, c);
			stream_new(S, c);
			c->handed = 1;
			fdr_wait_resolve(w, 2);
			answer = 1;
		}
		(void)answer;
	}
	/* a read */
	if ((w = c->w_read) != NULL) {
		lua_State *S;
		if (c->collect) {
			if (c->eof && !c->failed) {
				c->w_read = NULL;
				S = fdr_wait_state(w);
				lua_pushlstring(S, c->out.p ? c->out.p : "", c->out.len);
				if (c->demux)
					lua_pushlstring(S, c->err.p ? c->err.p : "", c->err.len);
				buf_free(&c->out);
				buf_free(&c->err);
				c->collect = 0;
				fdr_wait_resolve(w, c->demux ? 2 : 1);
			} else if (c->failed) {
				c->w_read = NULL;
				c->collect = 0;
				push_error(fdr_wait_state(w), c);
				fdr_wait_reject(w);
			}
		} else if (c->qh) {
			c->w_read = NULL;
			S = fdr_wait_state(w);
			int n = push_queued(S, c, 0);
			maybe_resume_reading(c);
			fdr_wait_resolve(w, n);
		} else if (c->failed) {
			c->w_read = NULL;
			push_error(fdr_wait_state(w), c);
			fdr_wait_reject(w);
		} else if (c->eof) {
			c->w_read = NULL;
			lua_pushnil(fdr_wait_state(w));
			fdr_wait_resolve(w, 1);
		}
	}
	/* a write whose connection is gone */
	if ((w = c->w_write) != NULL && (c->failed || !c->conn)) {
		c->w_write = NULL;
		if (c->failed)
			push_error(fdr_wait_state(w), c);
		else
			fdr_push_error(fdr_wait_state(w), "docker.closed", NULL,
				       "%s: stream closed", c->what);
		fdr_wait_reject(w);
	}
	/* the request's own reference: released once it has its answer or cannot get one */
	if (!c->req_done && !c->w_resp && (c->handed || c->failed || c->msg_done || !c->conn)) {
		c->req_done = 1;
		if (!c->handed)
			call_unref(c);
		/* when handed, the Stream userdata took over this reference */
	}
	call_unref(c);
}

/* ---- connections ---- */

static void conn_close_cb(uv_handle_t *h)
{
	dk_conn *k = h->data;
	dk_mod *m = k->mod;
	dk_call *c = k->call;
	if (k->ssl)
		SSL_free(k->ssl); /* frees the BIOs */
	free(k->key);
	free(k);
	m->nconns--;
	if (c) {
		c->conn = NULL;
		if (!c->eof && !c->failed) {
			if (c->raw || c->msg_done)
				c->eof = 1; /* a closed stream: the end */
			else
				call_fail(c, "docker.closed", NULL, "%s: connection closed", c->what);
		}
		call_settle(c);
		call_unref(c); /* the connection's reference */
	}
	mod_maybe_free(m);
}

static void conn_close(dk_conn *k)
{
	if (k->closing)
		return;
	k->closing = 1;
	if (k->prev)
		k->prev->next = k->next;
	else
		k->mod->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	k->prev = k->next = NULL;
	uv_close(&k->io.handle, conn_close_cb);
}

static dk_conn *conn_new(dk_call *c)
{
	dk_mod *m = c->mod;
	dk_conn *k = calloc(1, sizeof *k);
	if (!k)
		return NULL;
	k->key = strdup(c->key);
	if (!k->key) {
		free(k);
		return NULL;
	}
	k->mod = m;
	int rc = c->ep.kind == FDR_DK_UNIX ? uv_pipe_init(m->loop, &k->io.pipe, 0)
					   : uv_tcp_init(m->loop, &k->io.tcp);
	if (rc < 0) {
		free(k->key);
		free(k);
		return NULL;
	}
	k->io.handle.data = k;
	k->next = m->conns;
	if (m->conns)
		m->conns->prev = k;
	m->conns = k;
	m->nconns++;
	k->call = c;
	call_ref(c);
	c->conn = k;
	return k;
}

typedef struct {
	uv_write_t req;
	dk_call *call;
	char *mem;      /* freed after the write, unless borrowed */
	int borrowed;
	void (*done)(dk_call *c, int status);
} dk_write;

static void write_cb(uv_write_t *req, int status)
{
	dk_write *wr = req->data;
	dk_call *c = wr->call;
	if (!wr->borrowed)
		free(wr->mem);
	if (wr->done)
		wr->done(c, status);
	else if (status < 0 && status != UV_ECANCELED && !c->failed) {
		fail_disconnected(c, "failed while sending");
		call_abort(c);
	}
	call_settle(c);
	call_unref(c);
	free(wr);
}

/* Send n bytes on the call's connection, through TLS when on. `borrowed`: p stays valid
 * until done() (it is the call's own memory); otherwise it is copied. */
static int conn_send(dk_call *c, const char *p, size_t n, int borrowed,
		     void (*done)(dk_call *c, int status))
{
	dk_conn *k = c->conn;
	if (!k || k->closing)
		return UV_ECANCELED;
	dk_write *wr = calloc(1, sizeof *wr);
	if (!wr)
		return UV_ENOMEM;
	if (k->ssl) {
		while (n > 0) {
			int wn = SSL_write(k->ssl, p, n > (1 << 30) ? (1 << 30) : (int)n);
			if (wn <= 0) {
				free(wr);
				return UV_EPROTO;
			}
			p += wn;
			n -= (size_t)wn;
		}
		size_t pending = BIO_ctrl_pending(k->wbio);
		wr->mem = malloc(pending ? pending : 1);
		if (!wr->mem) {
			free(wr);
			return UV_ENOMEM;
		}
		n = (size_t)BIO_read(k->wbio, wr->mem, (int)pending);
	} else if (borrowed) {
		wr->mem = (char *)p;
		wr->borrowed = 1;
	} else {
		wr->mem = malloc(n ? n : 1);
		if (!wr->mem) {
			free(wr);
			return UV_ENOMEM;
		}
		memcpy(wr->mem, p, n);
	}
	wr->call = c;
	wr->done = done;
	wr->req.data = wr;
	uv_buf_t buf = uv_buf_init(wr->mem, (unsigned)n);
	int rc = uv_write(&wr->req, &k->io.stream, &buf, 1, write_cb);
	if (rc < 0) {
		if (!wr->borrowed)
			free(wr->mem);
		free(wr);
		return rc;
	}
	call_ref(c);
	return 0;
}

/* Flush what TLS wants to send (handshake records, alerts). */
static int tls_flush(dk_call *c)
{
	dk_conn *k = c->conn;
	if (!k || !k->ssl || BIO_ctrl_pending(k->wbio) == 0)
		return 0;
	return conn_send(c, NULL, 0, 0, NULL);
}

/* ---- http_parser callbacks: record only ---- */

static int on_status(http_parser *p, const char *at, size_t len)
{
	(void)p; (void)at; (void)len;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	dk_call *c = p->data;
	if (c->hstate == 2 && buf_add(&c->hdrs, "", 1) < 0)
		return 1;
	c->hstate = 1;
	return buf_add(&c->hdrs, at, len) < 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	dk_call *c = p->data;
	if (c->hstate == 1 && buf_add(&c->hdrs, "", 1) < 0)
		return 1;
	c->hstate = 2;
	return buf_add(&c->hdrs, at, len) < 0;
}

static int on_headers_complete(http_parser *p)
{
	dk_call *c = p->data;
	if (c->hstate == 2 && buf_add(&c->hdrs, "", 1) < 0)
		return -1;
	c->hstate = 0;
	c->status = p->status_code;
	if (c->status == 100) { /* informational: the real head follows */
		c->hdrs.len = 0;
		return 0;
	}
	c->head_done = 1;
	int ok = c->status >= 200 && c->status < 300;
	if (c->mode == M_HIJACK && (c->status == 101 || c->status == 200)) {
		c->raw = 1;
		return 2; /* no body, no more responses: the rest is the raw stream */
	}
	if (c->mode != M_BUFFER && !ok)
		c->body_error = 1;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	dk_call *c = p->data;
	if (c->mode == M_BUFFER || c->body_error) {
		if (c->max_body && c->body_in.len + len > c->max_body) {
			call_fail(c, "docker.too_large", NULL,
				  "%s: response larger than %zu bytes", c->what, c->max_body);
			return 1;
		}
		if (buf_add(&c->body_in, at, len) < 0) {
			call_fail(c, "docker.memory", NULL, "%s: out of memory", c->what);
			return 1;
		}
		return 0;
	}
	deliver(c, at, len);
	return c->failed;
}

static int on_message_complete(http_parser *p)
{
	dk_call *c = p->data;
	if (c->status == 100 || c->raw)
		return 0;
	c->msg_done = 1;
	if (c->mode != M_BUFFER && !c->body_error)
		c->eof = 1;
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_status = on_status,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* ---- receiving ---- */

static void start_send(dk_call *c);
static void start_connect(dk_call *c);

/* Back to the pool (keep-alive), or closed. */
static void conn_release(dk_conn *k)
{
	dk_call *c = k->call;
	int idle = 0;
	for (dk_conn *o = k->mod->conns; o; o = o->next)
		idle += o->pooled && strcmp(o->key, k->key) == 0;
	int keep = c && !k->mod->shut && !c->failed && c->mode == M_BUFFER &&
		   http_should_keep_alive(&c->parser) && idle < POOL_MAX;
	if (!keep) {
		conn_close(k);
		return;
	}
	k->call = NULL;
	c->conn = NULL;
	k->pooled = 1;
	k->idle_since = fdr_now_ms();
	uv_unref(&k->io.handle); /* an idle connection keeps nothing alive */
	call_unref(c);
}

/* Plain response bytes for the call on k. */
static void conn_feed(dk_conn *k, const char *data, size_t len)
{
	dk_call *c = k->call;
	if (!c) { /* a pooled connection should stay silent */
		conn_close(k);
		return;
	}
	if (len)
		c->got_bytes = 1;
	if (c->raw) {
		deliver(c, data, len);
		return;
	}
	size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
	if (c->failed) {
		call_abort(c);
		return;
	}
	if (c->raw) {
		if (n < len)
			deliver(c, data + n, len - n);
		return;
	}
	if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
		call_fail(c, "docker.protocol", NULL, "%s: bad HTTP from Docker at %s: %s",
			  c->what, c->url, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
		call_abort(c);
		return;
	}
	if (c->msg_done && n == len)
		conn_release(k);
}

/* A GET on a pooled connection the engine had meanwhile closed, before any answer:
 * detach from it and send once more on a fresh one (as Go's transport does; other
 * methods may have been executed, so they fail instead). Returns 1 when retried. */
static int retry_fresh(dk_call *c)
{
	dk_conn *k = c->conn;
	if (!k || !c->reused || c->got_bytes || c->retried || !c->idempotent || c->failed)
		return 0;
	c->retried = 1;
	c->reused = 0;
	k->call = NULL;
	c->conn = NULL;
	conn_close(k);
	call_unref(c); /* the old connection's reference */
	start_connect(c);
	return 1;
}

/* The peer closed (or reset) the connection. */
static void conn_eof(dk_conn *k, int status)
{
	dk_call *c = k->call;
	if (!c) {
		conn_close(k);
		return;
	}
	if (retry_fresh(c))
		return;
	if (c->raw) {
		c->eof = 1;
		conn_close(k);
		return;
	}
	if (!c->msg_done && status == UV_EOF) {
		http_parser_execute(&c->parser, &parser_settings, NULL, 0); /* ends EOF bodies */
	}
	if (!c->msg_done && !c->failed) {
		if (c->head_done && c->mode != M_BUFFER && !c->body_error)
			fail_disconnected(c, "closed mid-stream");
		else
			fail_disconnected(c, c->got_bytes ? "closed mid-response" : "closed before answering");
	}
	conn_close(k);
}

static void tls_handshake(dk_call *c);

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)suggested;
	dk_conn *k = h->data;
	*buf = uv_buf_init(k->rbuf, sizeof k->rbuf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	dk_conn *k = s->data;
	dk_call *c = k->call;
	if (nread == 0 || k->closing)
		return;
	if (c)
		call_ref(c);
	if (nread < 0) {
		conn_eof(k, (int)nread);
	} else if (!k->ssl) {
		conn_feed(k, buf->base, (size_t)nread);
	} else {
		BIO_write(k->rbio, buf->base, (int)nread);
		if (!k->tls_ready) {
			if (c)
				tls_handshake(c);
			else
				conn_close(k);
		}
		while (k->tls_ready && !k->closing) {
			int n = SSL_read(k->ssl, k->pbuf, sizeof k->pbuf);
			if (n > 0) {
				conn_feed(k, k->pbuf, (size_t)n);
				continue;
			}
			int e = SSL_get_error(k->ssl, n);
			if (e == SSL_ERROR_ZERO_RETURN)
				conn_eof(k, UV_EOF);
			else if (e != SSL_ERROR_WANT_READ && c) {
				char why[256];
				ssl_reason(why, sizeof why);
				call_fail(c, "docker.tls", NULL, "%s: TLS error from Docker at %s: %s",
					  c->what, c->url, why);
				call_abort(c);
			}
			break;
		}
		if (c && c->conn == k)
			tls_flush(c);
	}
	if (c) {
		call_settle(c);
		call_unref(c);
	}
}

static void conn_read_start(dk_conn *k)
{
	if (k->reading || k->closing)
		return;
	if (uv_read_start(&k->io.stream, alloc_cb, read_cb) == 0)
		k->reading = 1;
}

/* ---- sending the request ---- */

static void file_read_cb(uv_fs_t *req);

static void file_next(dk_call *c)
{
	if (c->failed || !c->conn)
		return;
	if (c->file_off >= c->file_size) {
		uv_fs_req_cleanup(&c->fs);
		uv_fs_close(c->mod->loop, &c->fs, c->fd, NULL); /* a regular file: no wait */
		uv_fs_req_cleanup(&c->fs);
		c->fd = -1;
		return;
	}
	uv_buf_t b = uv_buf_init(c->fbuf, FILE_CHUNK);
	uv_fs_req_cleanup(&c->fs);
	if (uv_fs_read(c->mod->loop, &c->fs, c->fd, &b, 1, c->file_off, file_read_cb) == 0)
		call_ref(c);
	else
		call_fail(c, "docker.io", NULL, "%s: cannot read %s", c->what, c->body_file);
}

static void file_sent(dk_call *c, int status)
{
	if (status == UV_ECANCELED)
		return; /* the connection was closed; whoever closed it reported why */
	if (status < 0) {
		if (!c->failed && status != UV_ECANCELED)
			fail_disconnected(c, "failed while sending");
		call_abort(c);
		return;
	}
	file_next(c);
}

static void file_read_cb(uv_fs_t *req)
{
	dk_call *c = req->data;
	ssize_t n = req->result;
	if (c->failed || !c->conn || c->mod->shut) {
		/* gone meanwhile: nothing to send to */
	} else if (n <= 0) {
		call_fail(c, "docker.io", NULL, "%s: %s: %s", c->what, c->body_file,
			  n < 0 ? uv_strerror((int)n) : "file shrank while being sent");
		call_abort(c);
	} else {
		c->file_off += n;
		int rc = conn_send(c, c->fbuf, (size_t)n, 1, file_sent);
		if (rc < 0) {
			fail_disconnected(c, "failed while sending");
			call_abort(c);
		}
	}
	call_settle(c);
	call_unref(c);
}

static void head_sent(dk_call *c, int status)
{
	if (status == UV_ECANCELED)
		return; /* the connection was closed; whoever closed it reported why */
	if (status < 0) {
		if (retry_fresh(c))
			return;
		fail_disconnected(c, "failed while sending");
		call_abort(c);
		return;
	}
	if (c->body_file)
		file_next(c);
}

static void start_send(dk_call *c)
{
	dk_conn *k = c->conn;
	http_parser_init(&c->parser, HTTP_RESPONSE);
	c->parser.data = c;
	c->hdrs.len = 0;
	c->hstate = 0;
	conn_read_start(k);
	/* head + Content-Length + body in one write when the body is in memory */
	dk_buf msg = {0};
	char cl[64];
	int n = 0;
	if (c->has_body)
		n = snprintf(cl, sizeof cl, "Content-Length: %lld\r\n\r\n",
			     (long long)(c->body_file ? c->file_size : (int64_t)c->body_len));
	else
		n = snprintf(cl, sizeof cl, "\r\n");
	int rc = -1;
	if (buf_add(&msg, c->head.p, c->head.len) == 0 && buf_add(&msg, cl, (size_t)n) == 0 &&
	    (c->body_file || !c->body_len || buf_add(&msg, c->body, c->body_len) == 0))
		rc = conn_send(c, msg.p, msg.len, 0, head_sent);
	buf_free(&msg);
	if (rc < 0) {
		fail_disconnected(c, "failed while sending");
		call_abort(c);
	}
}

static void tls_handshake(dk_call *c)
{
	dk_conn *k = c->conn;
	ERR_clear_error();
	int rc = SSL_do_handshake(k->ssl);
	if (rc == 1) {
		k->tls_ready = 1;
		start_send(c);
		return;
	}
	int e = SSL_get_error(k->ssl, rc);
	if (e == SSL_ERROR_WANT_READ) {
		tls_flush(c);
		return;
	}
	char why[256];
	long vr = SSL_get_verify_result(k->ssl);
	if (vr != X509_V_OK)
		snprintf(why, sizeof why, "%s", X509_verify_cert_error_string(vr));
	else
		ssl_reason(why, sizeof why);
	call_fail(c, "docker.tls",
		  "check DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem) and DOCKER_TLS_VERIFY",
		  "TLS handshake with Docker at %s failed: %s", c->url, why);
	call_abort(c);
}

static void connect_cb(uv_connect_t *req, int status)
{
	dk_call *c = req->data;
	if (status < 0) {
		if (status != UV_ECANCELED || !c->failed)
			fail_connect(c, status);
		call_abort(c);
	} else if (!c->failed && c->conn) {
		dk_conn *k = c->conn;
		if (c->ctx) {
			k->ssl = SSL_new(c->ctx);
			k->rbio = BIO_new(BIO_s_mem());
			k->wbio = BIO_new(BIO_s_mem());
			if (!k->ssl || !k->rbio || !k->wbio) {
				BIO_free(k->rbio);
				BIO_free(k->wbio);
				call_fail(c, "docker.tls", NULL, "%s: cannot start TLS", c->what);
				call_abort(c);
			} else {
				SSL_set_bio(k->ssl, k->rbio, k->wbio);
				SSL_set_connect_state(k->ssl);
				struct in6_addr a6;
				struct in_addr a4;
				int is_ip = inet_pton(AF_INET, c->ep.host, &a4) == 1 ||
					    inet_pton(AF_INET6, c->ep.host, &a6) == 1;
				if (!is_ip)
					SSL_set_tlsext_host_name(k->ssl, c->ep.host);
				if (c->verify) {
					X509_VERIFY_PARAM *vp = SSL_get0_param(k->ssl);
					if (is_ip)
						X509_VERIFY_PARAM_set1_ip_asc(vp, c->ep.host);
					else
						X509_VERIFY_PARAM_set1_host(vp, c->ep.host, 0);
				}
				conn_read_start(k);
				tls_handshake(c);
			}
		} else {
			start_send(c);
		}
	}
	call_settle(c);
	call_unref(c);
}

static void connect_addr(dk_call *c, const struct sockaddr *addr)
{
	dk_conn *k = conn_new(c);
	if (!k) {
		call_fail(c, "docker.memory", NULL, "%s: out of memory", c->what);
		return;
	}
	c->connect_req.data = c;
	int rc;
	if (c->ep.kind == FDR_DK_UNIX) {
		uv_pipe_connect(&c->connect_req, &k->io.pipe, c->ep.path, connect_cb);
		rc = 0;
	} else {
		uv_tcp_nodelay(&k->io.tcp, 1);
		rc = uv_tcp_connect(&c->connect_req, &k->io.tcp, addr, connect_cb);
	}
	if (rc < 0) {
		fail_connect(c, rc);
		call_abort(c);
		return;
	}
	call_ref(c);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	dk_call *c = req->data;
	if (c->failed || c->req_done || c->mod->shut) {
		/* cancelled meanwhile */
	} else if (status < 0 || !res) {
		call_fail(c, "docker.unreachable", "check DOCKER_HOST",
			  "cannot reach Docker at %s: cannot resolve %s: %s", c->url, c->ep.host,
			  uv_strerror(status));
	} else {
		connect_addr(c, res->ai_addr);
	}
	uv_freeaddrinfo(res);
	call_settle(c);
	call_unref(c);
}

/* A pooled connection for this endpoint, or NULL. */
static dk_conn *pool_take(dk_call *c)
{
	uint64_t now = fdr_now_ms();
	for (dk_conn *k = c->mod->conns, *next; k; k = next) {
		next = k->next;
		if (!k->pooled || strcmp(k->key, c->key) != 0)
			continue;
		if (now - k->idle_since > POOL_IDLE_MS) {
			conn_close(k);
			continue;
		}
		k->pooled = 0;
		k->call = c;
		call_ref(c);
		c->conn = k;
		uv_ref(&k->io.handle);
		return k;
	}
	return NULL;
}

static void start_connect(dk_call *c)
{
	if (c->mode == M_BUFFER && !c->retried && pool_take(c)) {
		c->reused = 1;
		start_send(c);
		return;
	}
	if (c->ep.kind == FDR_DK_UNIX) {
		connect_addr(c, NULL);
		return;
	}
	char port[16];
	snprintf(port, sizeof port, "%d", c->ep.port);
	struct addrinfo hints = {0};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	c->gai.data = c;
	int rc = uv_getaddrinfo(c->mod->loop, &c->gai, gai_cb, c->ep.host, port, &hints);
	if (rc < 0) {
		call_fail(c, "docker.unreachable", NULL, "cannot reach Docker at %s: %s", c->url,
			  uv_strerror(rc));
		return;
	}
	call_ref(c);
}

static void file_open_cb(uv_fs_t *req);

static void file_stat_cb(uv_fs_t *req)
{
	dk_call *c = req->data;
	if (req->result < 0) {
		call_fail(c, "io.error", NULL, "%s: %s: %s", c->what, c->body_file,
			  uv_strerror((int)req->result));
	} else if (!c->failed && !c->req_done && !c->mod->shut) {
		c->file_size = (int64_t)req->statbuf.st_size;
		start_connect(c);
	}
	call_settle(c);
	call_unref(c);
}

static void file_open_cb(uv_fs_t *req)
{
	dk_call *c = req->data;
	if (req->result >= 0)
		c->fd = (uv_file)req->result; /* closed when the call is freed */
	if (req->result < 0) {
		call_fail(c, req->result == UV_ENOENT ? "io.enoent" : "io.error", NULL,
			  "%s: cannot open %s: %s", c->what, c->body_file,
			  uv_strerror((int)req->result));
	} else if (!c->failed && !c->mod->shut) {
		uv_fs_req_cleanup(req);
		if (uv_fs_fstat(c->mod->loop, &c->fs, c->fd, file_stat_cb) == 0)
			call_ref(c);
		else
			call_fail(c, "io.error", NULL, "%s: cannot stat %s", c->what, c->body_file);
	}
	call_settle(c);
	call_unref(c);
}

/* ---- cancellation ---- */

static void resp_cancel(fdr_wait *w)
{
	dk_call *c = w->data;
	c->w_resp = NULL;
	fdr_wait_drop(w);
	call_fail(c, "cancelled", NULL, "%s: cancelled", c->what);
	if (c->conn) {
		call_abort(c);
	} else if (!c->req_done) {
		/* between steps (resolving, opening the file): their callbacks see `failed` */
		uv_cancel((uv_req_t *)&c->gai);
	}
}

static void read_cancel(fdr_wait *w)
{
	dk_call *c = w->data;
	c->w_read = NULL;
	c->collect = 0; /* what was collected stays queued for a later read */
	if (c->out.len)
		emit(c, 1, c->out.p, c->out.len);
	if (c->err.len)
		emit(c, 2, c->err.p, c->err.len);
	buf_free(&c->out);
	buf_free(&c->err);
	fdr_wait_drop(w);
}

static void write_cancel(fdr_wait *w)
{
	dk_call *c = w->data;
	c->w_write = NULL;
	fdr_wait_drop(w);
}

/* ---- Lua: request(opts) ---- */

/* opts[k] as a string (def when nil). Only real strings: the pointer stays valid after
 * the pop because the table holds the string. */
static const char *opt_string(lua_State *L, int t, const char *k, const char *def)
{
	int type = lua_getfield(L, t, k);
	if (type != LUA_TNIL && type != LUA_TSTRING)
		luaL_error(L, "docker.request: %s: expected string, got %s", k, luaL_typename(L, -1));
	const char *s = type == LUA_TNIL ? def : lua_tostring(L, -1);
	lua_pop(L, 1);
	return s;
}

static dk_mod *get_mod(lua_State *L)
{
	dk_mod *m = lua_touserdata(L, lua_upvalueindex(1));
	return m;
}

static int l_request(lua_State *L)
{
	dk_mod *m = get_mod(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	if (m->shut)
		return luaL_error(L, "docker.request: the host is shutting down");
	const char *url = opt_string(L, 1, "host", "unix:///var/run/docker.sock");
	const char *method = opt_string(L, 1, "method", "GET");
	const char *path = opt_string(L, 1, "path", NULL);
	const char *mode = opt_string(L, 1, "mode", "buffer");
	const char *what = opt_string(L, 1, "what", "docker.request");
	const char *body_file = opt_string(L, 1, "body_file", NULL);
	size_t body_len = 0;
	lua_getfield(L, 1, "body");
	const char *body = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &body_len);
	lua_pop(L, 1);
	lua_getfield(L, 1, "timeout");
	lua_Number timeout = luaL_optnumber(L, -1, 0);
	lua_pop(L, 1);
	lua_getfield(L, 1, "max_body");
	lua_Number max_body = luaL_optnumber(L, -1, 0);
	lua_pop(L, 1);
	lua_getfield(L, 1, "demux");
	int demux = lua_toboolean(L, -1);
	lua_pop(L, 1);

	if (!path || path[0] != '/' || strchr(path, ' ') || !fdr_dk_header_safe(path, strlen(path)))
		return luaL_error(L, "docker.request: path: expected an absolute, escaped path");
	for (const char *p = method; *p; p++)
		if (*p < 'A' || *p > 'Z')
			return luaL_error(L, "docker.request: method: expected an HTTP method");
	int imode = strcmp(mode, "buffer") == 0   ? M_BUFFER
		    : strcmp(mode, "stream") == 0 ? M_STREAM
		    : strcmp(mode, "hijack") == 0 ? M_HIJACK
						  : -1;
	if (imode < 0)
		return luaL_error(L, "docker.request: mode: expected buffer, stream or hijack");
	if (body && body_file)
		return luaL_error(L, "docker.request: body and body_file are exclusive");

	/* TLS: opts.tls = {ca=, cert=, key=, verify=} */
	const char *ca = NULL, *cert = NULL, *key = NULL;
	int tls = 0, verify = 0;
	lua_getfield(L, 1, "tls");
	if (lua_istable(L, -1)) {
		tls = 1;
		int t = lua_gettop(L);
		ca = opt_string(L, t, "ca", NULL);
		cert = opt_string(L, t, "cert", NULL);
		key = opt_string(L, t, "key", NULL);
		lua_getfield(L, t, "verify");
		verify = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1); /* the strings live in opts.tls, which opts keeps */

	fdr_dk_endpoint ep;
	char err[512];
	if (fdr_dk_endpoint_parse(&ep, url, tls, err, sizeof err) < 0)
		return fdr_error(L, "docker.config", "check DOCKER_HOST", "%s", err);
	if (tls && ep.kind != FDR_DK_TCP)
		return fdr_error(L, "docker.config", NULL, "%s: TLS needs a tcp:// host", url);
	SSL_CTX *ctx = NULL;
	if (tls) {
		ctx = tls_context(m, ca, cert, key, verify, err, sizeof err);
		if (!ctx)
			return fdr_error(L, "docker.tls",
					 "check DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)",
					 "TLS setup for Docker at %s: %s", url, err);
	}

	dk_call *c = calloc(1, sizeof *c);
	if (!c)
		return luaL_error(L, "out of memory");
	c->refs = 1; /* the request's own */
	c->mod = m;
	m->ncalls++;
	c->fd = -1;
	c->ep = ep;
	c->mode = imode;
	c->demux = demux;
	c->max_body = max_body > 0 ? (size_t)max_body : 0;
	c->what = intern(m, what);
	c->url = strdup(url);
	c->verify = verify;
	if (ctx) {
		SSL_CTX_up_ref(ctx);
		c->ctx = ctx;
	}
	snprintf(err, sizeof err, "%s|%s|%s|%s|%d", url, ca ? ca : "", cert ? cert : "",
		 key ? key : "", tls * 2 + verify);
	c->key = strdup(err);
	if (body) {
		c->body = malloc(body_len ? body_len : 1);
		if (c->body)
			memcpy(c->body, body, body_len);
		c->body_len = body_len;
	}
	if (body_file) {
		c->body_file = strdup(body_file);
		c->fbuf = malloc(FILE_CHUNK);
	}
	c->has_body = body || body_file || strcmp(method, "POST") == 0 ||
		      strcmp(method, "PUT") == 0;
	c->idempotent = !body && !body_file &&
			(strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0);

	/* the head */
	const char *host_hdr = ep.kind == FDR_DK_UNIX ? "docker" : ep.host;
	char line[512];
	int ok = c->url && c->key && (!body || c->body) && (!body_file || (c->body_file && c->fbuf));
	snprintf(line, sizeof line, " HTTP/1.1\r\nHost: %s%s%s\r\nUser-Agent: foundry\r\n",
		 ep.kind == FDR_DK_TCP && strchr(host_hdr, ':') ? "[" : "", host_hdr,
		 ep.kind == FDR_DK_TCP && strchr(host_hdr, ':') ? "]" : "");
	ok = ok && buf_add(&c->head, method, strlen(method)) == 0 && buf_add(&c->head, " ", 1) == 0 &&
	     buf_add(&c->head, path, strlen(path)) == 0 && buf_add(&c->head, line, strlen(line)) == 0;
	if (imode == M_HIJACK)
		ok = ok && buf_add(&c->head, "Connection: Upgrade\r\nUpgrade: tcp\r\n", 35) == 0;
	lua_getfield(L, 1, "headers");
	if (lua_istable(L, -1)) {
		lua_pushnil(L);
		while (ok && lua_next(L, -2)) {
			size_t kl, vl;
			const char *hk = lua_tolstring(L, -2, &kl);
			const char *hv = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
						 ? lua_tolstring(L, -1, &vl)
						 : NULL;
			int good = lua_type(L, -2) == LUA_TSTRING && hv && kl > 0 &&
				   fdr_dk_header_safe(hk, kl) && fdr_dk_header_safe(hv, vl) &&
				   !memchr(hk, ':', kl) && !memchr(hk, ' ', kl) &&
				   strcasecmp(hk, "content-length") != 0 && strcasecmp(hk, "host") != 0;
			if (!good) {
				call_unref(c);
				return luaL_error(L, "docker.request: headers: bad header %s",
						  lua_type(L, -2) == LUA_TSTRING ? hk : "(not a string)");
			}
			ok = buf_add(&c->head, hk, kl) == 0 && buf_add(&c->head, ": ", 2) == 0 &&
			     buf_add(&c->head, hv, vl) == 0 && buf_add(&c->head, "\r\n", 2) == 0;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	if (!ok) {
		call_unref(c);
		return luaL_error(L, "out of memory");
	}

	fdr_wait *w = fdr_wait_new(L, c->what, resp_cancel, c);
	c->w_resp = w;
	if (timeout > 0)
		fdr_wait_timeout(w, (uint64_t)timeout);
	if (c->body_file) {
		c->fs.data = c;
		if (uv_fs_open(m->loop, &c->fs, c->body_file, O_RDONLY | O_CLOEXEC, 0,
			       file_open_cb) == 0)
			call_ref(c);
		else
			call_fail(c, "io.error", NULL, "%s: cannot open %s", c->what, c->body_file);
	} else {
		start_connect(c);
	}
	if (c->failed && c->w_resp && !c->conn) {
		/* failed before anything was started: answer now */
		c->w_resp = NULL;
		push_error(fdr_wait_state(w), c);
		fdr_wait_reject(w);
		c->req_done = 1;
		call_unref(c);
	}
	return fdr_await(L, w);
}

/* ---- the Stream userdata ---- */

static void stream_new(lua_State *S, dk_call *c)
{
	dk_stream *s = lua_newuserdatauv(S, sizeof *s, 0);
	s->call = c; /* takes over the request's reference */
	c->ud = 1;
	luaL_setmetatable(S, STREAM_MT);
	/* body bytes may have arrived with the head */
	maybe_resume_reading(c);
}

static dk_call *check_open(lua_State *L, const char *op)
{
	dk_stream *s = luaL_checkudata(L, 1, STREAM_MT);
	if (!s->call)
		luaL_error(L, "docker stream:%s: the stream is closed", op);
	return s->call;
}

/* s:read([timeout_ms]) -> data[, "stdout"|"stderr"], or nil at the end */
static int s_read(lua_State *L)
{
	dk_call *c = check_open(L, "read");
	lua_Number timeout = luaL_optnumber(L, 2, 0);
	if (c->w_read)
		return luaL_error(L, "docker stream:read: another read is pending");
	if (c->qh) {
		int n = push_queued(L, c, 0);
		maybe_resume_reading(c);
		return n;
	}
	if (c->failed) {
		push_error(L, c);
		return lua_error(L);
	}
	if (c->eof || (!c->conn && c->handed)) {
		lua_pushnil(L);
		return 1;
	}
	fdr_wait *w = fdr_wait_new(L, c->what, read_cancel, c);
	c->w_read = w;
	if (timeout > 0)
		fdr_wait_timeout(w, (uint64_t)timeout);
	maybe_resume_reading(c);
	return fdr_await(L, w);
}

/* s:read_all([timeout_ms]) -> everything to the end: stdout, stderr (demux) or data */
static int s_read_all(lua_State *L)
{
	dk_call *c = check_open(L, "read_all");
	lua_Number timeout = luaL_optnumber(L, 2, 0);
	if (c->w_read)
		return luaL_error(L, "docker stream:read_all: another read is pending");
	if (c->failed && !c->qh) {
		push_error(L, c);
		return lua_error(L);
	}
	buf_free(&c->out);
	buf_free(&c->err);
	for (dk_seg *s = c->qh, *next; s; s = next) {
		next = s->next;
		if (buf_add(s->stream == 2 ? &c->err : &c->out, s->data, s->len) < 0)
			return luaL_error(L, "out of memory");
		free(s);
	}
	c->qh = c->qt = NULL;
	c->qbytes = 0;
	if (c->eof || (!c->conn && c->handed)) {
		if (c->failed) {
			push_error(L, c);
			return lua_error(L);
		}
		lua_pushlstring(L, c->out.p ? c->out.p : "", c->out.len);
		if (c->demux)
			lua_pushlstring(L, c->err.p ? c->err.p : "", c->err.len);
		buf_free(&c->out);
		buf_free(&c->err);
		return c->demux ? 2 : 1;
	}
	c->collect = 1;
	fdr_wait *w = fdr_wait_new(L, c->what, read_cancel, c);
	c->w_read = w;
	if (timeout > 0)
		fdr_wait_timeout(w, (uint64_t)timeout);
	maybe_resume_reading(c);
	return fdr_await(L, w);
}

static void stream_write_done(dk_call *c, int status)
{
	fdr_wait *w = c->w_write;
	if (status < 0 && status != UV_ECANCELED && !c->failed) {
		fail_disconnected(c, "failed while writing");
		call_abort(c);
	}
	if (!w)
		return;
	c->w_write = NULL;
	if (status < 0) {
		lua_State *S = fdr_wait_state(w);
		if (c->failed)
			push_error(S, c);
		else
			fdr_push_error(S, "docker.closed", NULL, "%s: stream closed", c->what);
		fdr_wait_reject(w);
	} else {
		fdr_wait_resolve(w, 0);
	}
}

/* s:write(data): yields until the bytes are handed to the kernel (hijacked streams) */
static int s_write(lua_State *L)
{
	dk_call *c = check_open(L, "write");
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	if (c->mode != M_HIJACK)
		return luaL_error(L, "docker stream:write: only attach and exec streams take input");
	if (c->write_closed)
		return luaL_error(L, "docker stream:write: input already closed (close_write)");
	if (c->w_write)
		return luaL_error(L, "docker stream:write: another write is pending");
	if (c->failed) {
		push_error(L, c);
		return lua_error(L);
	}
	if (!c->conn)
		return fdr_error(L, "docker.closed", NULL, "%s: stream closed", c->what);
	if (len == 0)
		return 0;
	int rc = conn_send(c, data, len, 0, stream_write_done);
	if (rc < 0)
		return fdr_error(L, "docker.disconnected", NULL, "%s: write failed: %s", c->what,
				 uv_strerror(rc));
	fdr_wait *w = fdr_wait_new(L, c->what, write_cancel, c);
	c->w_write = w;
	return fdr_await(L, w);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
	(void)status; /* a failed half-close shows up as an error on the read side */
	dk_call *c = req->data;
	call_settle(c);
	call_unref(c);
}

/* s:close_write(): end of input (the process sees EOF on stdin); output still flows */
static int s_close_write(lua_State *L)
{
	dk_call *c = check_open(L, "close_write");
	if (c->mode != M_HIJACK)
		return luaL_error(L, "docker stream:close_write: only attach and exec streams take input");
	if (c->write_closed || !c->conn || c->conn->closing)
		return 0;
	c->write_closed = 1;
	dk_conn *k = c->conn;
	if (k->ssl) {
		SSL_shutdown(k->ssl); /* close_notify: TLS's end of input */
		tls_flush(c);
	}
	c->shut.data = c;
	if (uv_shutdown(&c->shut, &k->io.stream, shutdown_cb) == 0)
		call_ref(c);
	return 0;
}

static void stream_release(dk_stream *s)
{
	dk_call *c = s->call;
	if (!c)
		return;
	s->call = NULL;
	c->ud = 0;
	if (c->conn) {
		if (!c->eof && !c->failed)
			call_fail(c, "docker.closed", NULL, "%s: stream closed", c->what);
		call_abort(c);
	}
	call_unref(c);
}

static int s_close(lua_State *L)
{
	stream_release(luaL_checkudata(L, 1, STREAM_MT));
	return 0;
}

static int s_tostring(lua_State *L)
{
	dk_stream *s = luaL_checkudata(L, 1, STREAM_MT);
	if (!s->call)
		lua_pushstring(L, "docker stream (closed)");
	else
		lua_pushfstring(L, "docker stream (%s, %s)", s->call->what,
				s->call->eof ? "ended" : s->call->failed ? "failed" : "open");
	return 1;
}

/* s.status, s.ended */
static int s_info(lua_State *L)
{
	dk_stream *s = luaL_checkudata(L, 1, STREAM_MT);
	dk_call *c = s->call;
	lua_createtable(L, 0, 4);
	lua_pushboolean(L, c == NULL);
	lua_setfield(L, -2, "closed");
	if (c) {
		lua_pushboolean(L, c->eof && !c->qh);
		lua_setfield(L, -2, "ended");
		lua_pushinteger(L, (lua_Integer)c->qbytes);
		lua_setfield(L, -2, "buffered");
		lua_pushboolean(L, c->failed);
		lua_setfield(L, -2, "failed");
	}
	return 1;
}

/* ---- module ---- */

static void at_close(void *data)
{
	dk_mod *m = data;
	m->shut = 1;
	for (dk_conn *k = m->conns, *next; k; k = next) {
		next = k->next;
		if (k->call && !k->call->failed)
			call_fail(k->call, "docker.closed", NULL, "%s: shutting down", k->call->what);
		conn_close(k);
	}
	mod_maybe_free(m);
}

/* stats() -> {open=, pooled=}: connections, for tests and `foundry doctor` */
static int l_stats(lua_State *L)
{
	dk_mod *m = get_mod(L);
	int pooled = 0;
	for (dk_conn *k = m->conns; k; k = k->next)
		pooled += k->pooled;
	lua_createtable(L, 0, 2);
	lua_pushinteger(L, m->nconns);
	lua_setfield(L, -2, "open");
	lua_pushinteger(L, pooled);
	lua_setfield(L, -2, "pooled");
	return 1;
}

/* close_idle(): close pooled keep-alive connections */
static int l_close_idle(lua_State *L)
{
	dk_mod *m = get_mod(L);
	for (dk_conn *k = m->conns, *next; k; k = next) {
		next = k->next;
		if (k->pooled)
			conn_close(k);
	}
	return 0;
}

int luaopen_foundry_docker(lua_State *L)
{
	fdr_host *h = fdr_host_of(L);
	dk_mod *m = calloc(1, sizeof *m);
	if (!m)
		return luaL_error(L, "out of memory");
	m->loop = fdr_host_loop(h);
	fdr_host_at_close(h, at_close, m);

	static const luaL_Reg smethods[] = {
		{"read", s_read},		{"read_all", s_read_all}, {"write", s_write},
		{"close_write", s_close_write}, {"close", s_close},	  {"info", s_info},
		{NULL, NULL}};
	fdr_new_class(L, STREAM_MT, smethods, s_close, s_tostring);

	static const luaL_Reg fns[] = {
		{"request", l_request}, {"stats", l_stats}, {"close_idle", l_close_idle}, {NULL, NULL}};
	luaL_newlibtable(L, fns);
	lua_pushlightuserdata(L, m);
	luaL_setfuncs(L, fns, 1);
	return 1;
}
