/* runtime/web.c: HTTP request reading and WebSocket frames, driven through a bare
 * lua_State (the parts that do not wait). */
#include "ctest.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>

int luaopen_foundry_web(lua_State *L);

static lua_State *L;

/* Run a Lua chunk with the module as `web`; returns its first result as a string (or
 * "ERR: message"). */
static const char *run(const char *chunk)
{
	static char out[4096];
	lua_settop(L, 0);
	if (luaL_loadstring(L, chunk) != LUA_OK) {
		snprintf(out, sizeof out, "LOAD: %s", lua_tostring(L, -1));
		return out;
	}
	if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
		const char *m = lua_tostring(L, -1);
		if (!m && lua_istable(L, -1)) {
			lua_getfield(L, -1, "message");
			m = lua_tostring(L, -1);
		}
		snprintf(out, sizeof out, "ERR: %s", m ? m : "?");
		return out;
	}
	snprintf(out, sizeof out, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "nil");
	return out;
}

static void test_request_split_anywhere(void)
{
	/* fed one byte at a time: the same request comes out once, whole */
	CHECK_EQ_STR(run("local p = web.parser(100)\n"
			 "local req = 'POST /a/b?x=1 HTTP/1.1\\r\\nHost: h:1\\r\\nX-A: 1\\r\\nx-a: 2\\r\\n'\n"
			 "  .. 'Cookie: a=1\\r\\nCookie: b=2\\r\\nContent-Length: 5\\r\\n\\r\\nhello'\n"
			 "local got = {}\n"
			 "for i = 1, #req do for _, r in ipairs(p:feed(req:sub(i, i))) do got[#got+1] = r end end\n"
			 "local r = got[1]\n"
			 "return #got .. ' ' .. r.method .. ' ' .. r.target .. ' ' .. r.headers['x-a'] .. ' ' ..\n"
			 "  r.headers.cookie .. ' ' .. r.body .. ' ' .. tostring(r.keep_alive)"),
		     "1 POST /a/b?x=1 1, 2 a=1; b=2 hello true");
}

static void test_pipelined_and_chunked(void)
{
	CHECK_EQ_STR(run("local p = web.parser(100)\n"
			 "local rs = p:feed('GET /1 HTTP/1.1\\r\\nHost: h\\r\\n\\r\\n' ..\n"
			 "  'PUT /2 HTTP/1.1\\r\\nHost: h\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n3\\r\\nabc\\r\\n2\\r\\nde\\r\\n0\\r\\n\\r\\n' ..\n"
			 "  'GET /3 HTTP/1.0\\r\\n\\r\\n')\n"
			 "return #rs .. rs[1].target .. rs[2].body .. rs[3].target .. tostring(rs[3].keep_alive)"),
		     "3/1abcde/3false");
}

static void test_limits(void)
{
	CHECK_EQ_STR(run("local p = web.parser(4)\n"
			 "local ok, e = pcall(p.feed, p, 'POST / HTTP/1.1\\r\\nContent-Length: 5\\r\\n\\r\\nhello')\n"
			 "return e.code .. ' ' .. e.status"),
		     "web.bad_request 413");
	CHECK_EQ_STR(run("local p = web.parser(4)\n"
			 "local ok, e = pcall(p.feed, p, 'POST / HTTP/1.1\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n')\n"
			 "return e.status"),
		     "413");
	CHECK_EQ_STR(run("local p = web.parser(4)\n"
			 "local ok, e = pcall(p.feed, p, 'GET / HTTP/1.1\\r\\nX: ' .. string.rep('a', 70000) .. '\\r\\n\\r\\n')\n"
			 "return e.status"),
		     "431");
	CHECK_EQ_STR(run("local p = web.parser(4)\n"
			 "local ok, e = pcall(p.feed, p, 'GET / HTTP/1.1\\r\\nHost: a\\r\\nHost: b\\r\\n\\r\\n')\n"
			 "return e.status .. ' ' .. e.message"),
		     "400 more than one Host header");
	CHECK_EQ_STR(run("local p = web.parser(4)\n"
			 "local ok, e = pcall(p.feed, p, 'GET / HTTP/1.1\\r\\nBad Header\\r\\n\\r\\n')\n"
			 "return tostring(ok) .. ' ' .. e.status"),
		     "false 400");
}

static void test_upgrade_keeps_the_rest(void)
{
	CHECK_EQ_STR(run("local p = web.parser(100)\n"
			 "local rs, rest = p:feed('GET /ws HTTP/1.1\\r\\nHost: h\\r\\nUpgrade: websocket\\r\\n' ..\n"
			 "  'Connection: Upgrade\\r\\n\\r\\n\\129\\130')\n"
			 "return #rs .. tostring(rs[1].upgrade) .. #rest"),
		     "1true2");
}

static void test_accept_key(void)
{
	/* RFC 6455 section 1.3 */
	CHECK_EQ_STR(run("return web.ws_accept('dGhlIHNhbXBsZSBub25jZQ==')"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	CHECK_EQ_STR(run("local ok, e = pcall(web.ws_accept, 'short'); return e.code"), "web.bad_request");
}

static void test_frames_round_trip(void)
{
	/* a client frame (masked) of each size class, decoded by a server decoder */
	CHECK_EQ_STR(run("local d = web.ws_decoder{ server = true, max = 200000 }\n"
			 "local out = {}\n"
			 "for _, n in ipairs({0, 5, 125, 126, 65535, 65536, 100000}) do\n"
			 "  local s = string.rep('x', n)\n"
			 "  local f = web.ws_frame('binary', s, { mask = true })\n"
			 "  local got = {}\n"
			 "  for i = 1, #f, 777 do for _, m in ipairs(d:feed(f:sub(i, i + 776))) do got[#got+1] = m end end\n"
			 "  out[#out+1] = #got == 1 and got[1].op == 'binary' and got[1].data == s and 'ok' or 'bad' .. n\n"
			 "end\n"
			 "return table.concat(out, ',')"),
		     "ok,ok,ok,ok,ok,ok,ok");
}

static void test_fragments_and_control(void)
{
	CHECK_EQ_STR(run("local d = web.ws_decoder{ server = true }\n"
			 "local f = web.ws_frame('text', 'hel', { mask = true, fin = false }) ..\n"
			 "  web.ws_frame('ping', 'p', { mask = true }) ..\n"
			 "  web.ws_frame('continuation', 'lo', { mask = true }) ..\n"
			 "  web.ws_frame('close', string.pack('>I2', 1000) .. 'bye', { mask = true })\n"
			 "local ms = d:feed(f)\n"
			 "return ms[1].op .. ms[1].data .. ' ' .. ms[2].op .. ms[2].data .. ' ' .. ms[3].op .. ms[3].code .. ms[3].reason"),
		     "pingp texthello close1000bye");
}

static void test_protocol_errors(void)
{
	static const struct {
		const char *frame, *want;
	} cases[] = {
		{"web.ws_frame('text', 'x')", "1002 client frame not masked"},
		{"string.char(0x81 | 0x40, 0x80, 0, 0, 0, 0)", "1002 reserved bits set (no extension was agreed)"},
		{"string.char(0x83, 0x80, 0, 0, 0, 0)", "1002 unknown opcode"},
		{"web.ws_frame('ping', 'x', { mask = true, fin = false })",
		 "1002 control frame fragmented or longer than 125 bytes"},
		{"web.ws_frame('continuation', 'x', { mask = true })", "1002 continuation without a message"},
		{"web.ws_frame('text', '\\255\\254', { mask = true })", "1007 text message is not UTF-8"},
		{"web.ws_frame('text', '\\237\\160\\128', { mask = true })", "1007 text message is not UTF-8"},
		{"web.ws_frame('binary', string.rep('a', 300), { mask = true })", "1009 message too big"},
		{"web.ws_frame('close', string.pack('>I2', 999), { mask = true })", "1002 invalid close code"},
		{"string.char(0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4)", "1002 length not minimally encoded"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char chunk[1024];
		snprintf(chunk, sizeof chunk,
			 "local d = web.ws_decoder{ server = true, max = 200 }\n"
			 "local ok, e = pcall(d.feed, d, %s)\n"
			 "if ok then return 'accepted' end\n"
			 "return e.close .. ' ' .. e.message",
			 cases[i].frame);
		const char *got = run(chunk);
		if (strcmp(got, cases[i].want) != 0)
			fprintf(stderr, "case %zu: got \"%s\", want \"%s\"\n", i, got, cases[i].want);
		CHECK_EQ_STR(got, cases[i].want);
	}
	/* a server frame (unmasked) is what a client decoder wants */
	CHECK_EQ_STR(run("local d = web.ws_decoder{ server = false }\n"
			 "return d:feed(web.ws_frame('text', 'hi'))[1].data"),
		     "hi");
}

int main(void)
{
	L = luaL_newstate();
	luaL_openlibs(L);
	luaL_requiref(L, "web", luaopen_foundry_web, 1);
	lua_pop(L, 1);
	RUN(test_request_split_anywhere);
	RUN(test_pipelined_and_chunked);
	RUN(test_limits);
	RUN(test_upgrade_keeps_the_rest);
	RUN(test_accept_key);
	RUN(test_frames_round_trip);
	RUN(test_fragments_and_control);
	RUN(test_protocol_errors);
	lua_close(L);
	return ctest_done();
}
