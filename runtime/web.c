/*
 * web.c - the web console's protocols, as foundry._web:
 *
 *   parser([max_body])         an HTTP/1.1 request reader (libhttp_parser, through the
 *                              proxy's reader in proxy/http.c): p:feed(bytes) returns the
 *                              requests completed by those bytes
 *   ws_accept(key)             the Sec-WebSocket-Accept value for a client's key
 *   ws_decoder{server=, max=}  RFC 6455 frames in, whole messages out (unmasking,
 *                              fragments, control frames, UTF-8 of text, close codes)
 *   ws_frame(op, data[, opts]) one frame out (opts.mask for a client, opts.fin)
 *   fs_read(root, rel, max) / fs_write(root, rel, data, opts)
 *                              files confined beneath a directory: every component is
 *                              opened with O_NOFOLLOW relative to its parent, so neither
 *                              "..", an absolute path nor a symlink (even one swapped in
 *                              by the sandbox between two calls) leads outside
 *
 * Sockets stay in Lua (luv): this file only parses and encodes.
 */
#include "fdr.h"
#include "http.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PARSER_MT "foundry.web.Parser"
#define WSDEC_MT "foundry.web.WsDecoder"

/* ------------------------------------------------------------------ HTTP requests */

typedef struct {
	px_http h;
	px_buf body;
	size_t max_body;
	int done;        /* a message completed (the parser is paused there) */
	int keep_alive;  /* of the completed message */
	int status;      /* why the input was refused: 400, 413 or 431 */
	const char *why;
	int expect_continue;
	int dead;        /* after an error or an upgrade: feed no more */
	int open;
} parser;

static int p_on_head(px_http *h)
{
	parser *p = h->data;
	p->body.len = 0;
	if (h->has_length && h->length > p->max_body) {
		p->status = 413;
		p->why = "request body too large";
		return -1;
	}
	size_t n;
	const char *v = px_http_header(h, "expect", &n);
	if (v && px_ieq(v, n, "100-continue"))
		p->expect_continue = 1;
	return 0;
}

static int p_on_body(px_http *h, const char *data, size_t n)
{
	parser *p = h->data;
	if (p->body.len + n > p->max_body) {
		p->status = 413;
		p->why = "request body too large";
		return -1;
	}
	return px_buf_add(&p->body, data, n);
}

static int p_on_done(px_http *h)
{
	parser *p = h->data;
	p->done = 1;
	p->keep_alive = http_should_keep_alive(&h->p);
	px_http_pause(h, 1);
	return 0;
}

static const px_http_cb parser_cb = {p_on_head, p_on_body, p_on_done};

static parser *check_parser(lua_State *L)
{
	parser *p = luaL_checkudata(L, 1, PARSER_MT);
	if (!p->open)
		luaL_error(L, "web.parser: used after close");
	return p;
}

/* foundry._web.parser([max_body]) */
static int l_parser(lua_State *L)
{
	lua_Integer max = luaL_optinteger(L, 1, 1 << 20);
	if (max < 0)
		return luaL_argerror(L, 1, "expected a non-negative size");
	parser *p = lua_newuserdatauv(L, sizeof *p, 0);
	memset(p, 0, sizeof *p);
	px_http_init(&p->h, HTTP_REQUEST, &parser_cb, p);
	p->max_body = (size_t)max;
	p->open = 1;
	luaL_setmetatable(L, PARSER_MT);
	return 1;
}

static void lower(char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			s[i] = (char)(s[i] + 32);
}

/* Push the completed request as a table; returns 0, or -1 with p->why set. */
static int push_request(lua_State *L, parser *p)
{
	px_http *h = &p->h;
	lua_createtable(L, 0, 10);
	lua_pushstring(L, http_method_str((enum http_method)h->p.method));
	lua_setfield(L, -2, "method");
	const char *target = px_http_str(h, h->url);
	lua_pushlstring(L, target, h->urllen);
	lua_setfield(L, -2, "target");
	lua_pushfstring(L, "%d.%d", (int)h->p.http_major, (int)h->p.http_minor);
	lua_setfield(L, -2, "version");
	lua_pushboolean(L, p->keep_alive);
	lua_setfield(L, -2, "keep_alive");
	lua_pushlstring(L, p->body.data ? p->body.data : "", p->body.len);
	lua_setfield(L, -2, "body");
	/* headers: names in lower case; repeated ones joined as HTTP allows ("; " for
	 * cookies); a second Host is refused (which one would be checked?) */
	lua_createtable(L, 0, h->nh);
	char name[256];
	for (int i = 0; i < h->nh; i++) {
		size_t nl = h->h[i].namelen;
		if (nl == 0 || nl >= sizeof name) {
			p->why = "header name too long";
			return -1;
		}
		memcpy(name, px_http_str(h, h->h[i].name), nl);
		lower(name, nl);
		name[nl] = 0;
		const char *v = px_http_str(h, h->h[i].value);
		size_t vl = h->h[i].valuelen;
		while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			vl--;
		lua_getfield(L, -1, name);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_pushlstring(L, v, vl);
		} else {
			if (strcmp(name, "host") == 0) {
				p->why = "more than one Host header";
				return -1;
			}
			lua_pushstring(L, strcmp(name, "cookie") == 0 ? "; " : ", ");
			lua_pushlstring(L, v, vl);
			lua_concat(L, 3);
		}
		lua_setfield(L, -2, name);
	}
	lua_setfield(L, -2, "headers");
	return 0;
}

static int parser_fail(lua_State *L, parser *p, int status, const char *why)
{
	p->dead = 1;
	fdr_push_error(L, "web.bad_request", NULL, "%s", why);
	lua_pushinteger(L, status);
	lua_setfield(L, -2, "status");
	return lua_error(L);
}

/* p:feed(bytes) -> {request, ...}, rest, continue
 * `rest` is what follows an upgrade request (the new protocol's first bytes), else nil;
 * `continue` is true when a request waits for "100 Continue". Raises web.bad_request
 * with .status (400, 413, 431) on input that is not acceptable. */
static int p_feed(lua_State *L)
{
	parser *p = check_parser(L);
	size_t n;
	const char *data = luaL_checklstring(L, 2, &n);
	if (p->dead)
		return luaL_error(L, "web.parser: fed after an error or an upgrade");
	lua_newtable(L);
	int out = lua_gettop(L), count = 0;
	size_t off = 0;
	int rest = 0;
	p->expect_continue = 0;
	while (off < n) {
		size_t used = px_http_feed(&p->h, data + off, n - off);
		off += used;
		if (p->done) {
			p->done = 0;
			if (push_request(L, p) < 0)
				return parser_fail(L, p, 400, p->why);
			lua_rawseti(L, out, ++count);
			if (p->h.p.upgrade) {
				lua_rawgeti(L, out, count);
				lua_pushboolean(L, 1);
				lua_setfield(L, -2, "upgrade");
				lua_pop(L, 1);
				p->dead = 1;
				rest = 1;
				break;
			}
			px_http_pause(&p->h, 0);
			p->expect_continue = 0;
			continue;
		}
		const char *err = px_http_error(&p->h);
		if (err) {
			if (p->status)
				return parser_fail(L, p, p->status, p->why);
			return parser_fail(L, p, p->h.too_big ? 431 : 400, err);
		}
		if (used == 0)
			break;
	}
	if (rest)
		lua_pushlstring(L, data + off, n - off);
	else
		lua_pushnil(L);
	lua_pushboolean(L, p->expect_continue);
	return 3;
}

static int p_close(lua_State *L)
{
	parser *p = luaL_checkudata(L, 1, PARSER_MT);
	if (p->open) {
		p->open = 0;
		px_http_free(&p->h);
		px_buf_free(&p->body, 1);
	}
	return 0;
}

static int p_tostring(lua_State *L)
{
	parser *p = luaL_checkudata(L, 1, PARSER_MT);
	lua_pushfstring(L, "foundry.web.Parser (%s)", p->open ? (p->dead ? "done" : "open") : "closed");
	return 1;
}

/* ------------------------------------------------------------------ WebSocket */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* foundry._web.ws_accept(key) -> accept value; raises web.bad_request for a key that is
 * not 16 bytes in base64. */
static int l_ws_accept(lua_State *L)
{
	size_t n;
	const char *key = luaL_checklstring(L, 1, &n);
	unsigned char raw[32];
	if (n != 24 || EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18 || key[22] != '=' ||
	    key[23] != '=')
		return fdr_error(L, "web.bad_request", NULL, "Sec-WebSocket-Key is not 16 bytes in base64");
	char buf[24 + sizeof WS_GUID];
	memcpy(buf, key, 24);
	memcpy(buf + 24, WS_GUID, sizeof WS_GUID - 1);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (!EVP_Digest(buf, 24 + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL))
		return fdr_error(L, "web.crypto", NULL, "SHA-1 failed");
	unsigned char b64[64];
	int bl = EVP_EncodeBlock(b64, md, (int)mdlen);
	lua_pushlstring(L, (const char *)b64, (size_t)bl);
	return 1;
}

/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF), as RFC 6455 requires of text messages. */
static int utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		unsigned min, cp;
		if ((c & 0xE0) == 0xC0) {
			len = 2, min = 0x80, cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3, min = 0x800, cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4, min = 0x10000, cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + len > n)
			return 0;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

enum { OP_CONT = 0, OP_TEXT = 1, OP_BINARY = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

static const char *op_name(int op)
{
	switch (op) {
	case OP_TEXT: return "text";
	case OP_BINARY: return "binary";
	case OP_CLOSE: return "close";
	case OP_PING: return "ping";
	case OP_PONG: return "pong";
	}
	return "?";
}

typedef struct {
	px_buf in;      /* bytes not yet forming a whole frame */
	px_buf msg;     /* the fragments of the message in progress */
	int msg_op;     /* its opcode (text or binary), 0 when none */
	int server;     /* 1: frames come from a client and must be masked */
	size_t max;     /* the largest message accepted */
	int failed;
	int open;
} wsdec;

static wsdec *check_wsdec(lua_State *L)
{
	wsdec *d = luaL_checkudata(L, 1, WSDEC_MT);
	if (!d->open)
		luaL_error(L, "web.ws_decoder: used after close");
	return d;
}

/* foundry._web.ws_decoder{server=true, max=1 MiB} */
static int l_ws_decoder(lua_State *L)
{
	int server = 1;
	lua_Integer max = 1 << 20;
	if (!lua_isnoneornil(L, 1)) {
		luaL_checktype(L, 1, LUA_TTABLE);
		lua_getfield(L, 1, "server");
		if (!lua_isnil(L, -1))
			server = lua_toboolean(L, -1);
		lua_getfield(L, 1, "max");
		if (!lua_isnil(L, -1))
			max = luaL_checkinteger(L, -1);
		lua_pop(L, 2);
	}
	if (max < 125)
		return luaL_error(L, "web.ws_decoder: max: expected at least 125");
	wsdec *d = lua_newuserdatauv(L, sizeof *d, 0);
	memset(d, 0, sizeof *d);
	d->server = server;
	d->max = (size_t)max;
	d->open = 1;
	luaL_setmetatable(L, WSDEC_MT);
	return 1;
}

/* Raise a protocol error carrying the close code to answer with. */
static int ws_fail(lua_State *L, wsdec *d, int close, const char *why)
{
	d->failed = 1;
	fdr_push_error(L, "web.ws_protocol", NULL, "%s", why);
	lua_pushinteger(L, close);
	lua_setfield(L, -2, "close");
	return lua_error(L);
}

static void push_message(lua_State *L, int out, int *count, int op, const char *data, size_t n)
{
	lua_createtable(L, 0, 4);
	lua_pushstring(L, op_name(op));
	lua_setfield(L, -2, "op");
	if (op == OP_CLOSE) {
		if (n >= 2) {
			lua_pushinteger(L, ((unsigned char)data[0] << 8) | (unsigned char)data[1]);
			lua_setfield(L, -2, "code");
			lua_pushlstring(L, data + 2, n - 2);
			lua_setfield(L, -2, "reason");
		}
	}
	lua_pushlstring(L, data, n);
	lua_setfield(L, -2, "data");
	lua_rawseti(L, out, ++*count);
}

static int close_code_ok(int c)
{
	return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
}

/* d:feed(bytes) -> {{op=, data=, code=, reason=}, ...}: the messages the bytes complete.
 * Raises web.ws_protocol with .close (1002, 1007, 1009) on a bad frame; the decoder is
 * then unusable. */
static int d_feed(lua_State *L)
{
	wsdec *d = check_wsdec(L);
	size_t n;
	const char *data = luaL_checklstring(L, 2, &n);
	if (d->failed)
		return luaL_error(L, "web.ws_decoder: fed after a protocol error");
	if (px_buf_add(&d->in, data, n) < 0)
		return luaL_error(L, "web.ws_decoder: out of memory");
	lua_newtable(L);
	int out = lua_gettop(L), count = 0;
	size_t pos = 0;
	for (;;) {
		unsigned char *b = (unsigned char *)d->in.data + pos;
		size_t avail = d->in.len - pos;
		if (avail < 2)
			break;
		int fin = b[0] & 0x80, rsv = b[0] & 0x70, op = b[0] & 0x0F;
		int masked = b[1] & 0x80;
		uint64_t len = b[1] & 0x7F;
		size_t hl = 2;
		if (rsv)
			return ws_fail(L, d, 1002, "reserved bits set (no extension was agreed)");
		if (op != OP_CONT && op != OP_TEXT && op != OP_BINARY && op != OP_CLOSE && op != OP_PING &&
		    op != OP_PONG)
			return ws_fail(L, d, 1002, "unknown opcode");
		if (masked != (d->server ? 0x80 : 0))
			return ws_fail(L, d, 1002, d->server ? "client frame not masked" : "server frame masked");
		if (op >= OP_CLOSE && (!fin || len > 125))
			return ws_fail(L, d, 1002, "control frame fragmented or longer than 125 bytes");
		if (len == 126) {
			if (avail < 4)
				break;
			len = ((uint64_t)b[2] << 8) | b[3];
			hl = 4;
			if (len < 126)
				return ws_fail(L, d, 1002, "length not minimally encoded");
		} else if (len == 127) {
			if (avail < 10)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | b[2 + i];
			hl = 10;
			if (len >> 63 || len < 65536)
				return ws_fail(L, d, 1002, "bad 64-bit length");
		}
		size_t so_far = (op == OP_CONT) ? d->msg.len : 0;
		if (len > d->max || so_far + len > d->max)
			return ws_fail(L, d, 1009, "message too big");
		if (masked)
			hl += 4;
		if (avail < hl + len)
			break;
		unsigned char *payload = b + hl;
		if (masked) {
			const unsigned char *key = b + hl - 4;
			for (uint64_t i = 0; i < len; i++)
				payload[i] ^= key[i & 3];
		}
		pos += hl + (size_t)len;
		if (op >= OP_CLOSE) {
			if (op == OP_CLOSE) {
				if (len == 1)
					return ws_fail(L, d, 1002, "close frame with a one-byte payload");
				if (len >= 2) {
					int code = (payload[0] << 8) | payload[1];
					if (!close_code_ok(code))
						return ws_fail(L, d, 1002, "invalid close code");
					if (!utf8_valid(payload + 2, (size_t)len - 2))
						return ws_fail(L, d, 1007, "close reason is not UTF-8");
				}
			}
			push_message(L, out, &count, op, (const char *)payload, (size_t)len);
			continue;
		}
		if (op == OP_CONT) {
			if (!d->msg_op)
				return ws_fail(L, d, 1002, "continuation without a message");
		} else {
			if (d->msg_op)
				return ws_fail(L, d, 1002, "new message inside a fragmented one");
			d->msg_op = op;
			d->msg.len = 0;
		}
		if (px_buf_add(&d->msg, payload, (size_t)len) < 0)
			return luaL_error(L, "web.ws_decoder: out of memory");
		if (fin) {
			if (d->msg_op == OP_TEXT &&
			    !utf8_valid((const unsigned char *)d->msg.data, d->msg.len))
				return ws_fail(L, d, 1007, "text message is not UTF-8");
			push_message(L, out, &count, d->msg_op, d->msg.data, d->msg.len);
			d->msg_op = 0;
			d->msg.len = 0;
		}
	}
	px_buf_consume(&d->in, pos);
	return 1;
}

static int d_close(lua_State *L)
{
	wsdec *d = luaL_checkudata(L, 1, WSDEC_MT);
	if (d->open) {
		d->open = 0;
		px_buf_free(&d->in, 1);
		px_buf_free(&d->msg, 1);
	}
	return 0;
}

static int d_tostring(lua_State *L)
{
	wsdec *d = luaL_checkudata(L, 1, WSDEC_MT);
	lua_pushfstring(L, "foundry.web.WsDecoder (%s)", d->open ? "open" : "closed");
	return 1;
}

static int opcode_of(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TNUMBER) {
		lua_Integer op = lua_tointeger(L, idx);
		if (op < 0 || op > 15)
			luaL_argerror(L, idx, "opcode out of range");
		return (int)op;
	}
	static const char *const names[] = {"continuation", "text", "binary", "close", "ping", "pong", NULL};
	static const int codes[] = {OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG};
	return codes[luaL_checkoption(L, idx, NULL, names)];
}

/* foundry._web.ws_frame(op, data[, {mask=false, fin=true}]) -> the frame's bytes.
 * op: "text", "binary", "close", "ping", "pong", "continuation" or a number. */
static int l_ws_frame(lua_State *L)
{
	int op = opcode_of(L, 1);
	size_t n;
	const char *data = luaL_optlstring(L, 2, "", &n);
	int mask = 0, fin = 1;
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_getfield(L, 3, "mask");
		mask = lua_toboolean(L, -1);
		lua_getfield(L, 3, "fin");
		if (!lua_isnil(L, -1))
			fin = lua_toboolean(L, -1);
		lua_pop(L, 2);
	}
	if (op >= OP_CLOSE && n > 125)
		return luaL_error(L, "web.ws_frame: control frames carry at most 125 bytes");
	luaL_Buffer B;
	unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &B, n + 14);
	size_t hl = 0;
	out[hl++] = (unsigned char)((fin ? 0x80 : 0) | op);
	unsigned char mbit = mask ? 0x80 : 0;
	if (n < 126) {
		out[hl++] = (unsigned char)(mbit | n);
	} else if (n < 65536) {
		out[hl++] = mbit | 126;
		out[hl++] = (unsigned char)(n >> 8);
		out[hl++] = (unsigned char)n;
	} else {
		out[hl++] = mbit | 127;
		for (int i = 7; i >= 0; i--)
			out[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
	}
	if (mask) {
		unsigned char *key = out + hl;
		if (RAND_bytes(key, 4) != 1)
			return fdr_error(L, "web.crypto", NULL, "no random bytes for the mask");
		hl += 4;
		for (size_t i = 0; i < n; i++)
			out[hl + i] = (unsigned char)data[i] ^ key[i & 3];
	} else if (n) {
		memcpy(out + hl, data, n);
	}
	luaL_pushresultsize(&B, hl + n);
	return 1;
}

/* ------------------------------------------------------------------ confined files */

/* Work done on the thread pool: inputs copied in, results copied out. */
typedef struct {
	char *root, *rel;
	char *data;      /* write: the new content; read: what was read */
	size_t len;
	size_t max;      /* read: the largest file returned */
	int write;
	int mkdirs;
	int has_if;
	int exclusive;   /* write: refuse to replace an existing file */
	unsigned char rnd[6]; /* write: the temporary file's name, drawn on the loop thread (OpenSSL's
			       * per-thread random state would outlive the pool's threads) */
	unsigned char if_sha[32];
	/* results */
	int err;         /* errno of the failure, 0 when none */
	const char *code, *why;
	int is_dir, too_large;
	struct stat st;
	unsigned char sha[32];
	struct entry { char *name; char type; long long size; } *entries;
	size_t nentries;
} fsop;

static void fsop_free(fsop *op)
{
	free(op->root);
	free(op->rel);
	if (op->data) {
		fdr_wipe(op->data, op->len);
		free(op->data);
	}
	for (size_t i = 0; i < op->nentries; i++)
		free(op->entries[i].name);
	free(op->entries);
	free(op);
}

static int fs_fail(fsop *op, int err, const char *code, const char *why)
{
	op->err = err ? err : EINVAL;
	op->code = code;
	op->why = why;
	return -1;
}

static int fs_errno(fsop *op, const char *what)
{
	int e = errno;
	if (e == ENOENT)
		return fs_fail(op, e, "web.not_found", "no such file or directory");
	if (e == ELOOP || e == ENOTDIR)
		return fs_fail(op, e, "web.denied", "a component of the path is a symbolic link or not a directory");
	if (e == EACCES || e == EPERM)
		return fs_fail(op, e, "web.denied", "permission denied");
	op->err = e;
	op->code = "web.io";
	op->why = what;
	return -1;
}

/* Check a relative path: no "", ".", ".." component, not absolute, no NUL (the Lua
 * side already refused it; this is the last word). */
static int rel_ok(const char *rel)
{
	if (!*rel || rel[0] == '/')
		return 0;
	const char *p = rel;
	while (*p) {
		const char *s = p;
		while (*p && *p != '/')
			p++;
		size_t n = (size_t)(p - s);
		if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return 0;
		if (*p == '/')
			p++;
		if (*p == 0 && p[-1] == '/')
			return 0;
	}
	return 1;
}

/* Open the directory that holds the last component of op->rel, walking component by
 * component with O_NOFOLLOW; *last points at that component. With op->mkdirs, missing
 * directories are made (owned like their parent). Returns an fd or -1. */
static int open_parent(fsop *op, const char **last)
{
	int dfd = open(op->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return fs_errno(op, "cannot open the workspace");
	char *p = op->rel;
	for (;;) {
		char *slash = strchr(p, '/');
		if (!slash)
			break;
		*slash = 0;
		int fd = openat(dfd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT && op->mkdirs) {
			struct stat pst;
			if (mkdirat(dfd, p, 0755) == 0 || errno == EEXIST) {
				if (fstat(dfd, &pst) == 0 && geteuid() == 0) {
					int nfd = openat(dfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
					if (nfd >= 0) {
						if (fchown(nfd, pst.st_uid, pst.st_gid) < 0) {
							/* the directory stays ours: harmless */
						}
						close(nfd);
					}
				}
				fd = openat(dfd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			}
		}
		*slash = '/';
		if (fd < 0) {
			int e = errno;
			close(dfd);
			errno = e;
			return fs_errno(op, "cannot open a directory of the path");
		}
		close(dfd);
		dfd = fd;
		p = slash + 1;
	}
	*last = p;
	return dfd;
}

static int hash(const void *data, size_t n, unsigned char out[32])
{
	unsigned int len = 0;
	return EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) ? 0 : -1;
}

/* Read a whole regular file from fd (at most max+1 bytes, to tell "too large"). */
static int read_fd(fsop *op, int fd)
{
	size_t cap = (size_t)op->st.st_size + 1, len = 0;
	if (cap > op->max + 1)
		cap = op->max + 1;
	char *buf = malloc(cap ? cap : 1);
	if (!buf)
		return fs_fail(op, ENOMEM, "web.io", "out of memory");
	for (;;) {
		if (len == cap) {
			if (cap > op->max)
				break;
			size_t ncap = cap * 2 > op->max + 1 ? op->max + 1 : cap * 2;
			char *nb = realloc(buf, ncap);
			if (!nb) {
				free(buf);
				return fs_fail(op, ENOMEM, "web.io", "out of memory");
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return fs_errno(op, "cannot read the file");
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > op->max) {
		op->too_large = 1;
		free(buf);
		return 0;
	}
	op->data = buf;
	op->len = len;
	hash(buf, len, op->sha);
	return 0;
}

static int list_dir(fsop *op, int fd)
{
	int dfd = dup(fd);
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dir) {
		if (dfd >= 0)
			close(dfd);
		return fs_errno(op, "cannot list the directory");
	}
	size_t cap = 0;
	struct dirent *e;
	while ((e = readdir(dir))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (op->nentries == 20000)
			break;
		struct stat st;
		char type = '?';
		long long size = 0;
		if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			type = S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : 'o';
			size = (long long)st.st_size;
		}
		if (op->nentries == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct entry *ne = realloc(op->entries, ncap * sizeof *ne);
			if (!ne)
				break;
			op->entries = ne;
			cap = ncap;
		}
		char *name = strdup(e->d_name);
		if (!name)
			break;
		op->entries[op->nentries++] = (struct entry){name, type, size};
	}
	closedir(dir);
	return 0;
}

static void fs_read_work(fsop *op)
{
	int fd;
	if (strcmp(op->rel, ".") == 0) {
		fd = open(op->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			fs_errno(op, "cannot open the workspace");
			return;
		}
	} else {
		const char *last;
		int dfd = open_parent(op, &last);
		if (dfd < 0)
			return;
		/* O_NONBLOCK: a FIFO the sandbox made must not hang us */
		fd = openat(dfd, last, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		int e = errno;
		close(dfd);
		if (fd < 0) {
			errno = e;
			fs_errno(op, "cannot open the file");
			return;
		}
	}
	if (fstat(fd, &op->st) < 0) {
		fs_errno(op, "cannot stat the file");
	} else if (S_ISDIR(op->st.st_mode)) {
		op->is_dir = 1;
		list_dir(op, fd);
	} else if (S_ISREG(op->st.st_mode)) {
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0)
			fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
		read_fd(op, fd);
	} else {
		fs_fail(op, EINVAL, "web.denied", "not a regular file or a directory");
	}
	close(fd);
}

static int write_all(int fd, const char *data, size_t n)
{
	while (n) {
		ssize_t w = write(fd, data, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		data += w;
		n -= (size_t)w;
	}
	return 0;
}

static void fs_write_work(fsop *op)
{
	const char *last;
	int dfd = open_parent(op, &last);
	if (dfd < 0)
		return;
	/* O_PATH fds cannot be written through: reopen the directory for renameat/fsync */
	int wd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(dfd);
	if (wd < 0) {
		fs_errno(op, "cannot open the directory");
		return;
	}
	struct stat cur, dst;
	int exists = fstatat(wd, last, &cur, AT_SYMLINK_NOFOLLOW) == 0;
	if (exists && !S_ISREG(cur.st_mode)) {
		fs_fail(op, EINVAL, "web.denied", S_ISLNK(cur.st_mode) ? "the file is a symbolic link" : "not a regular file");
		close(wd);
		return;
	}
	if (exists && op->exclusive) {
		fs_fail(op, EEXIST, "web.conflict", "the file already exists");
		close(wd);
		return;
	}
	if (!exists && fstat(wd, &dst) < 0) {
		fs_errno(op, "cannot stat the directory");
		close(wd);
		return;
	}
	if (op->has_if) {
		unsigned char sha[32];
		int ok = 0;
		if (exists) {
			int rfd = openat(wd, last, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (rfd >= 0) {
				fsop probe = {.max = (size_t)64 << 20};
				if (fstat(rfd, &probe.st) == 0 && S_ISREG(probe.st.st_mode) && read_fd(&probe, rfd) == 0 &&
				    !probe.too_large) {
					memcpy(sha, probe.sha, 32);
					ok = 1;
				}
				free(probe.data);
				close(rfd);
			}
		}
		if (!ok || memcmp(sha, op->if_sha, 32) != 0) {
			fs_fail(op, EAGAIN, "web.conflict", exists ? "the file changed since it was read" : "the file is gone");
			close(wd);
			return;
		}
	}
	char tmp[64];
	int fd = -1;
	const unsigned char *rnd = op->rnd;
	for (int tries = 0; tries < 16 && fd < 0; tries++) {
		snprintf(tmp, sizeof tmp, ".foundry-edit-%02x%02x%02x%02x%02x%02x-%d", rnd[0], rnd[1], rnd[2], rnd[3],
			 rnd[4], rnd[5], tries);
		fd = openat(wd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0) {
		fs_errno(op, "cannot create a temporary file");
		close(wd);
		return;
	}
	mode_t mode = exists ? (cur.st_mode & 07777) : 0644;
	uid_t uid = exists ? cur.st_uid : dst.st_uid;
	gid_t gid = exists ? cur.st_gid : dst.st_gid;
	int failed = write_all(fd, op->data, op->len) < 0 || fchmod(fd, mode) < 0;
	if (!failed && geteuid() == 0 && fchown(fd, uid, gid) < 0)
		failed = 1;
	if (!failed && fsync(fd) < 0)
		failed = 1;
	int e = errno;
	close(fd);
	if (!failed && renameat(wd, tmp, wd, last) < 0) {
		failed = 1;
		e = errno;
	}
	if (failed) {
		unlinkat(wd, tmp, 0);
		close(wd);
		errno = e;
		fs_errno(op, "cannot write the file");
		return;
	}
	fsync(wd);
	close(wd);
	hash(op->data, op->len, op->sha);
	op->st.st_size = (off_t)op->len;
	op->st.st_mode = S_IFREG | mode;
}

static void fs_work(void *data)
{
	fsop *op = data;
	if (!rel_ok(op->rel) && !(strcmp(op->rel, ".") == 0 && !op->write)) {
		fs_fail(op, EINVAL, "web.denied", "the path must be relative, without '.' or '..' components");
		return;
	}
	if (op->write)
		fs_write_work(op);
	else
		fs_read_work(op);
}

static void push_hex(lua_State *L, const unsigned char *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char out[65];
	for (size_t i = 0; i < n && i < 32; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	lua_pushlstring(L, out, 2 * n);
}

static void fs_after(fdr_wait *w, void *data)
{
	fsop *op = data;
	if (!fdr_wait_live(w)) {
		fdr_wait_drop(w);
		fsop_free(op);
		return;
	}
	lua_State *S = fdr_wait_state(w);
	if (op->err) {
		fdr_push_error(S, op->code, NULL, "%s: %s", op->rel, op->why);
		fdr_wait_reject(w);
		fsop_free(op);
		return;
	}
	lua_createtable(S, 0, 8);
	if (op->is_dir) {
		lua_pushstring(S, "directory");
		lua_setfield(S, -2, "type");
		lua_createtable(S, (int)op->nentries, 0);
		for (size_t i = 0; i < op->nentries; i++) {
			lua_createtable(S, 0, 3);
			lua_pushstring(S, op->entries[i].name);
			lua_setfield(S, -2, "name");
			const char *t = op->entries[i].type == 'f' ? "file" : op->entries[i].type == 'd' ? "directory"
				      : op->entries[i].type == 'l' ? "symlink" : "other";
			lua_pushstring(S, t);
			lua_setfield(S, -2, "type");
			lua_pushinteger(S, op->entries[i].size);
			lua_setfield(S, -2, "size");
			lua_rawseti(S, -2, (lua_Integer)i + 1);
		}
		lua_setfield(S, -2, "entries");
	} else {
		lua_pushstring(S, "file");
		lua_setfield(S, -2, "type");
		lua_pushinteger(S, (lua_Integer)op->st.st_size);
		lua_setfield(S, -2, "size");
		lua_pushinteger(S, op->st.st_mode & 07777);
		lua_setfield(S, -2, "mode");
		if (op->too_large) {
			lua_pushboolean(S, 1);
			lua_setfield(S, -2, "too_large");
		} else {
			if (!op->write) {
				lua_pushlstring(S, op->data ? op->data : "", op->len);
				lua_setfield(S, -2, "data");
			}
			push_hex(S, op->sha, 32);
			lua_setfield(S, -2, "sha256");
		}
	}
	fdr_wait_resolve(w, 1);
	fsop_free(op);
}

static void fs_cancel(fdr_wait *w)
{
	(void)w; /* the work finishes on its own (local files: quickly); fs_after drops it */
}

static int fs_start(lua_State *L, fsop *op, const char *what)
{
	if (!op->root || !op->rel || (op->write && !op->data && op->len)) {
		fsop_free(op);
		return luaL_error(L, "%s: out of memory", what);
	}
	fdr_wait *w = fdr_wait_new(L, what, fs_cancel, op);
	int rc = fdr_queue_work(L, w, fs_work, fs_after);
	if (rc < 0) {
		fdr_wait_drop(w);
		fsop_free(op);
		return fdr_error(L, "web.io", NULL, "cannot queue work: %s", uv_strerror(rc));
	}
	return fdr_await(L, w);
}

static char *dup_checked(lua_State *L, int idx, const char *what, const char *arg)
{
	size_t n;
	const char *s = lua_tolstring(L, idx, &n);
	if (!s)
		luaL_error(L, "%s: %s: expected string, got %s", what, arg, luaL_typename(L, idx));
	if (strlen(s) != n)
		luaL_error(L, "%s: %s: contains a NUL byte", what, arg);
	return strdup(s);
}

/* foundry._web.fs_read(root, rel, max_bytes) -> {type="file", data=, size=, mode=, sha256=}
 * | {type="file", size=, too_large=true} | {type="directory", entries={{name=, type=, size=}}}.
 * rel "." lists root itself. Waits in the calling task. */
static int l_fs_read(lua_State *L)
{
	fsop *op = calloc(1, sizeof *op);
	if (!op)
		return luaL_error(L, "web.fs_read: out of memory");
	lua_Integer max = luaL_optinteger(L, 3, 1 << 20);
	op->max = max < 0 ? 0 : (size_t)max;
	op->root = dup_checked(L, 1, "web.fs_read", "root");
	op->rel = dup_checked(L, 2, "web.fs_read", "path");
	return fs_start(L, op, "web.fs_read");
}

/* foundry._web.fs_write(root, rel, data[, {mkdirs=, exclusive=, if_sha256=}]) ->
 * {type="file", size=, mode=, sha256=}. Atomic (a temporary file renamed over the old one,
 * which keeps its mode and owner); refuses symlinks and, as web.conflict, a file that
 * changed (if_sha256) or, with exclusive, one that exists. */
static int l_fs_write(lua_State *L)
{
	size_t n;
	const char *data = luaL_checklstring(L, 3, &n);
	fsop *op = calloc(1, sizeof *op);
	if (!op)
		return luaL_error(L, "web.fs_write: out of memory");
	op->write = 1;
	if (RAND_bytes(op->rnd, sizeof op->rnd) != 1) {
		free(op);
		return fdr_error(L, "web.crypto", NULL, "no random bytes for a temporary name");
	}
	if (!lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		lua_getfield(L, 4, "mkdirs");
		op->mkdirs = lua_toboolean(L, -1);
		lua_getfield(L, 4, "exclusive");
		op->exclusive = lua_toboolean(L, -1);
		lua_pop(L, 1);
		lua_getfield(L, 4, "if_sha256");
		if (lua_isstring(L, -1)) {
			size_t hl;
			const char *hx = lua_tolstring(L, -1, &hl);
			if (hl != 64) {
				free(op);
				return luaL_error(L, "web.fs_write: if_sha256: expected 64 hex digits");
			}
			for (int i = 0; i < 32; i++) {
				unsigned v;
				if (sscanf(hx + 2 * i, "%2x", &v) != 1) {
					free(op);
					return luaL_error(L, "web.fs_write: if_sha256: expected 64 hex digits");
				}
				op->if_sha[i] = (unsigned char)v;
			}
			op->has_if = 1;
		}
		lua_pop(L, 2);
	}
	op->root = dup_checked(L, 1, "web.fs_write", "root");
	op->rel = dup_checked(L, 2, "web.fs_write", "path");
	op->data = malloc(n ? n : 1);
	if (op->data)
		memcpy(op->data, data, n);
	op->len = n;
	return fs_start(L, op, "web.fs_write");
}

/* ------------------------------------------------------------------ module */

int luaopen_foundry_web(lua_State *L)
{
	static const luaL_Reg parser_m[] = {{"feed", p_feed}, {"close", p_close}, {NULL, NULL}};
	fdr_new_class(L, PARSER_MT, parser_m, p_close, p_tostring);

	static const luaL_Reg dec_m[] = {{"feed", d_feed}, {"close", d_close}, {NULL, NULL}};
	fdr_new_class(L, WSDEC_MT, dec_m, d_close, d_tostring);

	static const luaL_Reg fns[] = {{"parser", l_parser},	   {"ws_accept", l_ws_accept},
				       {"ws_decoder", l_ws_decoder}, {"ws_frame", l_ws_frame},
				       {"fs_read", l_fs_read},	   {"fs_write", l_fs_write},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
