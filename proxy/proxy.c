/*
 * proxy.c - the proxy engine (module foundry._proxy), wrapped by lua/foundry/proxy.lua.
 *
 * Every sandbox has its own listening socket; a connection's sandbox is the socket it
 * arrived on. On each connection: HTTP/1.1 requests in absolute form (plain HTTP),
 * CONNECT (an opaque tunnel, or TLS terminated with a leaf minted by Foundry's CA when the
 * policy inspects the host), and origin-form requests to the proxy itself: gateways
 * (/_gw/<provider>/...) and hook events (/_foundry/hook).
 *
 * Everything on the data path is C on the loop; decisions come from the policy compiled
 * by compile_policy() from the normalised table lua/foundry/policy.lua makes. Lua runs
 * only for a rule that asks for the policy's on_request, for hook events, and for the
 * audit callback.
 *
 * Lifetimes: an engine owns its sandboxes; a sandbox owns its listeners and (by
 * reference count) outlives its connections; a connection holds a reference to the
 * policy it decided with, so a reload never changes an exchange in flight. A connection
 * is freed when its last handle is closed and no request of it is pending.
 */
#include "fdr.h"
#include "addr.h"
#include "http.h"
#include "match.h"
#include "tls.h"
#include "splice.h"

#include <errno.h>
#include <stdarg.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reasons and rule names are bounded buffers: truncating a long host name in a message
 * is intended. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define ENGINE_MT "foundry.proxy.Engine"
#define WRITE_HIGH (1u << 20)  /* stop reading the other side above this many queued bytes */
#define HOOK_BODY_MAX (1u << 20)
#define MAX_SECRET 8192

enum mode { MODE_NONE, MODE_ALLOWLIST, MODE_HOST_ONLY, MODE_OPEN };
enum action { ACT_DENY, ACT_TUNNEL, ACT_INSPECT };
enum rule_action { R_ALLOW, R_DENY, R_HOOK };
enum cred_kind { C_HEADER, C_BASIC, C_QUERY };
enum kind { K_HTTP, K_CONNECT, K_TUNNEL, K_INSPECT, K_GATEWAY, K_HOOK };
static const char *kind_names[] = {"http", "connect", "tunnel", "inspect", "gateway", "hook"};

/* ------------------------------------------------------------------ policy */

typedef struct {
	char *pattern;
	int port;
	char *src;
} hostpat;

typedef struct {
	hostpat host;
	char **methods;
	int nmethods;
	char **paths;
	int npaths;
	enum rule_action action;
	char *reason;
	size_t body;      /* bytes of body to hand to on_request */
} l7rule;

typedef struct {
	hostpat host;
	char **methods;
	int nmethods;
	char **paths;
	int npaths;
	enum cred_kind kind;
	char *header;     /* C_HEADER: header name; C_BASIC: "authorization" */
	char *user;       /* C_BASIC: the user name to inject with */
	char *param;      /* C_QUERY: parameter name */
	char *format;     /* "Bearer {secret}" */
	char *secret_name;
	char *placeholder;
	size_t phlen;
	char *secret;     /* the real value, wiped on free; NULL when the secret is not set */
	size_t secretlen;
	int inject;       /* add it even when the request carries no placeholder */
	int json;         /* swap a placeholder in a JSON body too */
	char **strip;     /* headers removed before injecting (gateways) */
	int nstrip;
} cred;

typedef struct {
	char *name;
	char *host;
	int port;
	int cred;         /* index into creds, or -1 */
} gateway;

typedef struct {
	char *host;
	int port;         /* 0: any */
	char *addr;       /* canonical address text */
	int addr_port;    /* 0: the request's port */
	int tls;          /* -1: as the request; 0/1 forced */
} override;

typedef struct {
	int connections;
	double rate, burst;
	uint64_t request_body;
	uint64_t connect_timeout, idle_timeout;
	int breaker_failures;
	uint64_t breaker_cooldown;
} limits;

typedef struct policy {
	int refs;
	enum mode mode;
	px_matcher *allow, *deny, *inspect;
	hostpat *allows, *denies, *inspects;
	int nallow, ndeny, ninspect;
	px_cidr *addrs;
	int naddrs;
	l7rule *rules;
	int nrules;
	cred *creds;
	int ncreds;
	gateway *gws;
	int ngws;
	override *ovr;
	int novr;
	limits lim;
	int has_hook;
	size_t bytes;
} policy;

static void strv_free(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void policy_unref(policy *p)
{
	if (!p || --p->refs > 0)
		return;
	px_matcher_free(p->allow);
	px_matcher_free(p->deny);
	px_matcher_free(p->inspect);
	hostpat *lists[] = {p->allows, p->denies, p->inspects};
	int ns[] = {p->nallow, p->ndeny, p->ninspect};
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < ns[k]; i++) {
			free(lists[k][i].pattern);
			free(lists[k][i].src);
		}
		free(lists[k]);
	}
	free(p->addrs);
	for (int i = 0; i < p->nrules; i++) {
		l7rule *r = &p->rules[i];
		free(r->host.pattern);
		free(r->host.src);
		strv_free(r->methods, r->nmethods);
		strv_free(r->paths, r->npaths);
		free(r->reason);
	}
	free(p->rules);
	for (int i = 0; i < p->ncreds; i++) {
		cred *c = &p->creds[i];
		free(c->host.pattern);
		free(c->host.src);
		strv_free(c->methods, c->nmethods);
		strv_free(c->paths, c->npaths);
		free(c->header);
		free(c->user);
		free(c->param);
		free(c->format);
		free(c->secret_name);
		if (c->placeholder)
			fdr_wipe(c->placeholder, c->phlen);
		free(c->placeholder);
		if (c->secret)
			fdr_wipe(c->secret, c->secretlen);
		free(c->secret);
		strv_free(c->strip, c->nstrip);
	}
	free(p->creds);
	for (int i = 0; i < p->ngws; i++) {
		free(p->gws[i].name);
		free(p->gws[i].host);
	}
	free(p->gws);
	for (int i = 0; i < p->novr; i++) {
		free(p->ovr[i].host);
		free(p->ovr[i].addr);
	}
	free(p->ovr);
	free(p);
}

/* Reading the normalised policy table: misuse raises, naming the field. */

static char *opt_str(lua_State *L, int t, const char *k)
{
	char *s = NULL;
	if (lua_getfield(L, t, k) == LUA_TSTRING)
		s = strdup(lua_tostring(L, -1));
	else if (!lua_isnil(L, -1))
		luaL_error(L, "policy: %s: expected string", k);
	lua_pop(L, 1);
	return s;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer def)
{
	lua_Integer v = def;
	if (lua_getfield(L, t, k) != LUA_TNIL) {
		if (!lua_isnumber(L, -1))
			luaL_error(L, "policy: %s: expected number", k);
		v = (lua_Integer)lua_tonumber(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static double opt_num(lua_State *L, int t, const char *k, double def)
{
	double v = def;
	if (lua_getfield(L, t, k) != LUA_TNIL)
		v = lua_tonumber(L, -1);
	lua_pop(L, 1);
	return v;
}

static int opt_bool(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	int v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

/* A list of strings at t[k] (nil: none). */
static char **opt_strv(lua_State *L, int t, const char *k, int *n, int upper)
{
	*n = 0;
	if (lua_getfield(L, t, k) != LUA_TTABLE) {
		lua_pop(L, 1);
		return NULL;
	}
	int len = (int)luaL_len(L, -1);
	char **v = calloc((size_t)len + 1, sizeof *v);
	for (int i = 1; v && i <= len; i++) {
		lua_rawgeti(L, -1, i);
		const char *s = lua_tostring(L, -1);
		v[i - 1] = strdup(s ? s : "");
		if (upper)
			for (char *c = v[i - 1]; c && *c; c++)
				if (*c >= 'a' && *c <= 'z')
					*c -= 32;
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	*n = len;
	return v;
}

static void read_hostpat(lua_State *L, int t, hostpat *h)
{
	h->pattern = opt_str(L, t, "host");
	if (!h->pattern)
		h->pattern = opt_str(L, t, "pattern");
	if (!h->pattern)
		h->pattern = strdup("*");
	h->port = (int)opt_int(L, t, "port", 0);
	h->src = opt_str(L, t, "src");
	if (!h->src)
		h->src = strdup("policy");
}

/* A list of host patterns at t[k] into a matcher. */
static px_matcher *read_hostlist(lua_State *L, int t, const char *k, hostpat **out, int *n)
{
	px_matcher *m = px_matcher_new();
	*out = NULL;
	*n = 0;
	if (lua_getfield(L, t, k) == LUA_TTABLE) {
		int len = (int)luaL_len(L, -1);
		*out = calloc((size_t)len + 1, sizeof **out);
		for (int i = 1; i <= len; i++) {
			lua_rawgeti(L, -1, i);
			read_hostpat(L, lua_gettop(L), &(*out)[i - 1]);
			(*n)++;
			if (px_matcher_add(m, (*out)[i - 1].pattern, (*out)[i - 1].port, i - 1) < 0) {
				lua_pop(L, 2);
				px_matcher_free(m);
				luaL_error(L, "policy: %s[%d]: bad host pattern '%s'", k, i,
					   (*out)[i - 1].pattern);
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	return m;
}

/* Compile the normalised policy at index `t`; `secrets` and `placeholders` are tables of
 * NAME -> value (or nil). The values of secrets are copied into C memory (wiped on free). */
static policy *compile_policy(lua_State *L, int t, int secrets, int placeholders)
{
	t = lua_absindex(L, t);
	policy *p = calloc(1, sizeof *p);
	if (!p)
		luaL_error(L, "out of memory");
	p->refs = 1;
	const char *mode = NULL;
	lua_getfield(L, t, "mode");
	mode = lua_tostring(L, -1);
	p->mode = !mode || !strcmp(mode, "allowlist") ? MODE_ALLOWLIST
		  : !strcmp(mode, "none")	       ? MODE_NONE
		  : !strcmp(mode, "host-only")	       ? MODE_HOST_ONLY
		  : !strcmp(mode, "open")	       ? MODE_OPEN
						       : -1;
	lua_pop(L, 1);
	if ((int)p->mode < 0) {
		free(p);
		luaL_error(L, "policy: mode: unknown mode");
	}
	p->allow = read_hostlist(L, t, "allow", &p->allows, &p->nallow);
	p->deny = read_hostlist(L, t, "deny", &p->denies, &p->ndeny);
	p->inspect = read_hostlist(L, t, "inspect", &p->inspects, &p->ninspect);

	if (lua_getfield(L, t, "addresses") == LUA_TTABLE) {
		int len = (int)luaL_len(L, -1);
		p->addrs = calloc((size_t)len + 1, sizeof *p->addrs);
		for (int i = 1; i <= len; i++) {
			lua_rawgeti(L, -1, i);
			const char *s = lua_tostring(L, -1);
			if (!s || px_cidr_parse(s, &p->addrs[p->naddrs]) < 0) {
				policy_unref(p);
				luaL_error(L, "policy: addresses[%d]: not an address or CIDR", i);
			}
			p->naddrs++;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);

	if (lua_getfield(L, t, "rules") == LUA_TTABLE) {
		int len = (int)luaL_len(L, -1);
		p->rules = calloc((size_t)len + 1, sizeof *p->rules);
		for (int i = 1; i <= len; i++) {
			lua_rawgeti(L, -1, i);
			int r = lua_gettop(L);
			l7rule *ru = &p->rules[p->nrules++];
			read_hostpat(L, r, &ru->host);
			ru->methods = opt_strv(L, r, "methods", &ru->nmethods, 1);
			ru->paths = opt_strv(L, r, "paths", &ru->npaths, 0);
			char *a = opt_str(L, r, "action");
			ru->action = a && !strcmp(a, "deny") ? R_DENY : a && !strcmp(a, "hook") ? R_HOOK : R_ALLOW;
			free(a);
			ru->reason = opt_str(L, r, "reason");
			ru->body = (size_t)opt_int(L, r, "body", 0);
			if (ru->action == R_HOOK)
				p->has_hook = 1;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);

	if (lua_getfield(L, t, "credentials") == LUA_TTABLE) {
		int len = (int)luaL_len(L, -1);
		p->creds = calloc((size_t)len + 1, sizeof *p->creds);
		for (int i = 1; i <= len; i++) {
			lua_rawgeti(L, -1, i);
			int r = lua_gettop(L);
			cred *c = &p->creds[p->ncreds++];
			read_hostpat(L, r, &c->host);
			c->methods = opt_strv(L, r, "methods", &c->nmethods, 1);
			c->paths = opt_strv(L, r, "paths", &c->npaths, 0);
			c->header = opt_str(L, r, "header");
			c->user = opt_str(L, r, "basic");
			c->param = opt_str(L, r, "query");
			c->kind = c->user ? C_BASIC : c->param ? C_QUERY : C_HEADER;
			if (c->kind == C_BASIC) {
				free(c->header);
				c->header = strdup("authorization");
			}
			if (c->header)
				for (char *s = c->header; *s; s++)
					if (*s >= 'A' && *s <= 'Z')
						*s += 32;
			c->format = opt_str(L, r, "format");
			c->secret_name = opt_str(L, r, "secret");
			c->inject = opt_bool(L, r, "inject");
			c->json = opt_bool(L, r, "json");
			c->strip = opt_strv(L, r, "strip", &c->nstrip, 0);
			if (c->secret_name && secrets) {
				lua_getfield(L, secrets, c->secret_name);
				size_t n;
				const char *s = lua_tolstring(L, -1, &n);
				if (s && n > 0 && n <= MAX_SECRET) {
					c->secret = malloc(n + 1);
					memcpy(c->secret, s, n + 1);
					c->secretlen = n;
				}
				lua_pop(L, 1);
			}
			if (c->secret_name && placeholders) {
				lua_getfield(L, placeholders, c->secret_name);
				size_t n;
				const char *s = lua_tolstring(L, -1, &n);
				if (s && n >= 8) {
					c->placeholder = strdup(s);
					c->phlen = n;
				}
				lua_pop(L, 1);
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);

	if (lua_getfield(L, t, "gateways") == LUA_TTABLE) {
		int len = (int)luaL_len(L, -1);
		p->gws = calloc((size_t)len + 1, sizeof *p->gws);
		for (int i = 1; i <= len; i++) {
			lua_rawgeti(L, -1, i);
			int r = lua_gettop(L);
			gateway *g = &p->gws[p->ngws++];
			g->name = opt_str(L, r, "name");
			g->host = opt_str(L, r, "host");
			g->port = (int)opt_int(L, r, "port", 443);
			g->cred = (int)opt_int(L, r, "credential", 0) - 1;
			if (!g->name || !g->host || g->cred >= p->ncreds) {
				lua_pop(L, 2);
				policy_unref(p);
				luaL_error(L, "policy: gateways[%d]: needs name, host and a credential", i);
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);

	if (lua_getfield(L, t, "overrides") == LUA_TTABLE) {
		int len = (int)luaL_len(L, -1);
		p->ovr = calloc((size_t)len + 1, sizeof *p->ovr);
		for (int i = 1; i <= len; i++) {
			lua_rawgeti(L, -1, i);
			int r = lua_gettop(L);
			override *o = &p->ovr[p->novr++];
			o->host = opt_str(L, r, "host");
			o->port = (int)opt_int(L, r, "port", 0);
			char *a = opt_str(L, r, "address");
			char canon[PX_HOST_MAX];
			if (!o->host || !a || px_host_canon(a, strlen(a), canon, NULL) != PX_HOST_IP) {
				free(a);
				lua_pop(L, 2);
				policy_unref(p);
				luaL_error(L, "policy: overrides[%d]: needs host and an IP address", i);
			}
			free(a);
			o->addr = strdup(canon);
			o->addr_port = (int)opt_int(L, r, "address_port", 0);
			lua_getfield(L, r, "tls");
			o->tls = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
			lua_pop(L, 2);
		}
	}
	lua_pop(L, 1);

	p->lim.connections = 256;
	p->lim.rate = 100;
	p->lim.burst = 200;
	p->lim.request_body = 256ull << 20;
	p->lim.connect_timeout = 10000;
	p->lim.idle_timeout = 600000;
	p->lim.breaker_failures = 5;
	p->lim.breaker_cooldown = 30000;
	if (lua_getfield(L, t, "limits") == LUA_TTABLE) {
		int r = lua_gettop(L);
		p->lim.connections = (int)opt_int(L, r, "connections", p->lim.connections);
		p->lim.rate = opt_num(L, r, "rate", p->lim.rate);
		p->lim.burst = opt_num(L, r, "burst", p->lim.burst);
		p->lim.request_body = (uint64_t)opt_int(L, r, "request_body", (lua_Integer)p->lim.request_body);
		p->lim.connect_timeout = (uint64_t)opt_int(L, r, "connect_timeout", (lua_Integer)p->lim.connect_timeout);
		p->lim.idle_timeout = (uint64_t)opt_int(L, r, "idle_timeout", (lua_Integer)p->lim.idle_timeout);
		p->lim.breaker_failures = (int)opt_int(L, r, "breaker_failures", p->lim.breaker_failures);
		p->lim.breaker_cooldown = (uint64_t)opt_int(L, r, "breaker_cooldown", (lua_Integer)p->lim.breaker_cooldown);
	}
	lua_pop(L, 1);
	p->bytes = sizeof *p + px_matcher_bytes(p->allow) + px_matcher_bytes(p->deny) +
		   px_matcher_bytes(p->inspect);
	return p;
}

/* ------------------------------------------------------------------ decisions */

static int host_match(const hostpat *h, const char *host, int port)
{
	if (h->port && h->port != port)
		return 0;
	const char *pat = h->pattern;
	if (!strcmp(pat, "*"))
		return 1;
	if (pat[0] == '*' && pat[1] == '.') {
		size_t hl = strlen(host), sl = strlen(pat + 1); /* ".example.com" */
		return hl > sl && !strcmp(host + hl - sl, pat + 1);
	}
	return !strcmp(pat, host);
}

static int methods_match(char **m, int n, const char *method)
{
	if (n == 0)
		return 1;
	for (int i = 0; i < n; i++)
		if (!strcmp(m[i], method) || !strcmp(m[i], "*"))
			return 1;
	return 0;
}

static int paths_match(char **p, int n, const char *path, size_t len)
{
	if (n == 0)
		return 1;
	for (int i = 0; i < n; i++)
		if (px_glob_match(p[i], path, len))
			return 1;
	return 0;
}

typedef struct {
	enum action action;
	char rule[160];
	char reason[320];
	char how[320];
	int status;
} verdict;

static void deny(verdict *v, int status, const char *rule, const char *how, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void deny(verdict *v, int status, const char *rule, const char *how, const char *fmt, ...)
{
	va_list ap;
	v->action = ACT_DENY;
	v->status = status;
	snprintf(v->rule, sizeof v->rule, "%s", rule);
	snprintf(v->how, sizeof v->how, "%s", how ? how : "");
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof v->reason, fmt, ap);
	va_end(ap);
}

/* Is the address `ip` (which a name resolved to, or a literal) allowed to be connected? */
static int address_allowed(const policy *p, const px_ip *ip, int named, verdict *v)
{
	enum px_ip_class cls = px_ip_classify(ip);
	for (int i = 0; i < p->naddrs; i++)
		if (px_cidr_contains(&p->addrs[i], ip))
			return 1;
	char text[64];
	px_ip_format(ip, text, sizeof text);
	if (cls != PX_PUBLIC && !named) {
		deny(v, 403, "addresses", "name the address in the policy's addresses list",
		     "%s is a %s address", text, px_ip_class_name(cls));
		return 0;
	}
	if (cls == PX_PUBLIC && p->mode == MODE_HOST_ONLY && !named) {
		deny(v, 403, "mode", "use mode = \"allowlist\" to reach public hosts",
		     "%s is a public address and the mode is host-only", text);
		return 0;
	}
	return 1;
}

/* Host-level decision: deny, tunnel or inspect. `is_ip`: host is an address literal. */
static void decide_host(const policy *p, const char *host, int port, int is_ip, verdict *v)
{
	memset(v, 0, sizeof *v);
	v->status = 200;
	char how[400];
	if (p->mode == MODE_NONE) {
		deny(v, 403, "mode", "set the policy's mode to \"allowlist\" and allow the host",
		     "the sandbox has no network (mode none)");
		return;
	}
	int d = px_matcher_lookup(p->deny, host, port);
	if (d >= 0) {
		snprintf(how, sizeof how, "remove '%s' from the policy's deny list", p->denies[d].pattern);
		deny(v, 403, p->denies[d].src, how, "%s is denied by the policy", host);
		return;
	}
	int a = px_matcher_lookup(p->allow, host, port);
	if (a >= 0) {
		snprintf(v->rule, sizeof v->rule, "%s", p->allows[a].src);
		snprintf(v->reason, sizeof v->reason, "%s matches '%s'", host, p->allows[a].pattern);
	} else if (p->mode == MODE_OPEN) {
		snprintf(v->rule, sizeof v->rule, "mode");
		snprintf(v->reason, sizeof v->reason, "mode open allows every public host");
	} else {
		snprintf(how, sizeof how,
			 "add \"%s\" to the policy's allow list (foundry policy explain shows the "
			 "decision)", host);
		deny(v, 403, "allow", how, "%s is not in the allowlist", host);
		return;
	}
	if (is_ip) {
		px_ip ip;
		char canon[PX_HOST_MAX];
		px_host_canon(host, strlen(host), canon, &ip);
		if (!address_allowed(p, &ip, a >= 0, v))
			return;
	}
	int in = px_matcher_lookup(p->inspect, host, port);
	v->action = in >= 0 ? ACT_INSPECT : ACT_TUNNEL;
	if (in >= 0)
		snprintf(v->reason + strlen(v->reason), sizeof v->reason - strlen(v->reason),
			 "; inspected (%s)", p->inspects[in].src);
}

/* Request-level decision by the L7 rules. Returns the index of a hook rule when the
 * policy's on_request must decide, -1 otherwise (v says allow or deny). */
static int decide_request(const policy *p, const char *host, int port, const char *method,
			  const char *path, size_t pathlen, verdict *v)
{
	for (int i = 0; i < p->nrules; i++) {
		const l7rule *r = &p->rules[i];
		if (!host_match(&r->host, host, port) || !methods_match(r->methods, r->nmethods, method) ||
		    !paths_match(r->paths, r->npaths, path, pathlen))
			continue;
		if (r->action == R_HOOK)
			return i;
		if (r->action == R_DENY) {
			char how[400];
			snprintf(how, sizeof how, "change or remove the rule %s in the policy", r->host.src);
			deny(v, 403, r->host.src, how, "%s", r->reason ? r->reason : "denied by a rule");
		} else {
			v->action = v->action == ACT_DENY ? ACT_TUNNEL : v->action;
			snprintf(v->rule, sizeof v->rule, "%s", r->host.src);
			snprintf(v->reason, sizeof v->reason, "%s", r->reason ? r->reason : "allowed by a rule");
		}
		return -1;
	}
	return -1;
}

static const override *find_override(const policy *p, const char *host, int port)
{
	for (int i = 0; i < p->novr; i++)
		if (!strcmp(p->ovr[i].host, host) && (!p->ovr[i].port || p->ovr[i].port == port))
			return &p->ovr[i];
	return NULL;
}

/* ------------------------------------------------------------------ engine structs */

typedef struct engine engine;
typedef struct sandbox sandbox;
typedef struct conn conn;
typedef struct side side;

typedef struct listener {
	union {
		uv_tcp_t tcp;
		uv_pipe_t pipe;
		uv_handle_t h;
		uv_stream_t s;
	} u;
	sandbox *sb;
	int is_pipe;
	struct listener *next;
} listener;

typedef struct breaker {
	char key[PX_HOST_MAX + 8];
	int failures;
	uint64_t open_until;
	struct breaker *next;
} breaker;

struct sandbox {
	engine *e;
	char *name;
	char *socket_path;
	policy *pol;
	char *hook_token;
	size_t hook_tokenlen;
	listener *listeners;
	conn *conns;
	int nconns;
	int refs;
	int removed;
	double tokens;
	uint64_t tokens_at;
	breaker *breakers;
	uint64_t requests, denied, bytes_in, bytes_out;
	sandbox *next;
};

struct engine {
	fdr_host *host;
	lua_State *L;
	uv_loop_t *loop;
	int audit_ref, event_ref, hook_ref;
	int guard_want_ref, guard_ref, guard_resp_ref; /* foundry.guards (see "guards" below) */
	px_ca *ca;
	SSL_CTX *client_ctx;
	sandbox *sandboxes;
	int closed;
	int refs;            /* the host (until shutdown) and each sandbox */
	struct engine_ud *ud; /* the Lua userdata while it lives */
	uint64_t requests, denied, tunnels, inspected, conns_total, spliced;
	int nconns;
	int no_splice;       /* opaque tunnels copy through user memory (benchmarks compare) */
};

struct side {
	union {
		uv_tcp_t tcp;
		uv_pipe_t pipe;
		uv_handle_t h;
		uv_stream_t s;
	} u;
	conn *c;
	int is_up;
	int inited;
	int closing;
	int reading;
	int eof;
	int shut;
	SSL *ssl;
	BIO *rb, *wb;
	int hs_done;
	px_buf early;      /* plaintext written before the handshake completed */
	px_buf cork;       /* bytes written while the connection is corked */
	size_t queued;     /* bytes handed to uv_write, not yet written */
	uv_connect_t connect;
	/* the upstream this side talks to, for reuse */
	char host[PX_HOST_MAX];
	int port, tls;
	char addr[64];
};

typedef struct {
	int active;
	enum kind kind;
	char host[PX_HOST_MAX];
	int port;
	int is_ip;
	char method[24];
	char *path;          /* without the query */
	verdict v;
	int decided;
	int status;
	uint64_t bytes_in, bytes_out, t0;
	int head_req;
	int upgrade;
	int up_tls;
	int gateway;         /* index, or -1 */
	int resp_chunked;    /* re-chunk the response body for the client */
	int resp_close;      /* the client connection ends with this response */
	int req_chunked;     /* re-chunk the request body for upstream */
	int req_done, resp_done;
	int buffering;       /* collecting the body for on_request or a JSON swap */
	int hook_rule;
	size_t body_limit;
	uint64_t req_body;
	px_buf body;
	px_buf head;         /* the upstream request head, built once decided */
	int client_keepalive;
	int interim;         /* a 1xx response was forwarded */
	int swapped;         /* a credential went into this request */
	int cred_host;       /* a credential applies to this request */
	int head_sent;       /* the request head went upstream */
	int body_checked;    /* body_complete ran (an idle kept-alive upstream may be there) */
	int guard;           /* a guard decides: 1 wanted, 2 waiting for its verdict, 3 decided */
	int guard_filter;    /* the guard rewrites the response: it is held whole */
	px_buf resp_head;    /* the held response's headers, "name\0value\0"... */
	px_buf resp_body;    /* the held response's body */
} exch;

enum cstate { C_HTTP, C_TUNNEL, C_CLOSED };

typedef struct resolve_req {
	uv_getaddrinfo_t req;
	conn *c;
	int stale;           /* the exchange gave up waiting (connect_timeout, close) */
} resolve_req;

struct conn {
	engine *e;
	sandbox *sb;
	policy *pol;
	side *cl, *up;
	int refs;            /* handles and requests that still point here */
	enum cstate state;
	int closing;
	int ending;          /* closing once the client has been sent what is queued */
	int corked;          /* in a read callback: writes are gathered, sent once at its end */
	px_http req, resp;
	px_buf in;           /* client plaintext not yet parsed */
	int head_ready;      /* the request parser paused at a complete head */
	int msg_done;        /* the request parser paused at the end of a message */
	int inspected;       /* the client side is TLS we terminate */
	char ihost[PX_HOST_MAX];
	int iport;
	int iis_ip;
	exch x;
	px_buf hold;         /* response bytes held back while they may start a secret */
	uv_timer_t timer;
	uint64_t last_active;
	uint64_t tunnel_t0;
	px_splice *sp;       /* an opaque tunnel the kernel moves (splice.h) */
	struct resolve_req *resolving; /* the upstream's name is being resolved */
	conn *prev, *next;
};

static void conn_close(conn *c);
static void conn_end(conn *c);
static const px_http_cb resp_cb;
static void conn_unref(conn *c);
static void side_start(side *s);
static void process_client(conn *c);
static void finish_exchange(conn *c);
static int side_write(side *s, const void *data, size_t n);
static int guard_hold_body(conn *c, const char *data, size_t n);
static void guard_filter_done(conn *c);
static void try_splice(conn *c);

/* ------------------------------------------------------------------ Lua callbacks */

/* Call the Lua function at registry ref with the values pushed by `push`; errors are
 * reported on stderr (they never reach the data path). */
static void call_lua(engine *e, int ref, int nargs_pushed, int nres)
{
	lua_State *L = e->L;
	if (ref == LUA_NOREF || ref == LUA_REFNIL) {
		lua_pop(L, nargs_pushed);
		for (int i = 0; i < nres; i++)
			lua_pushnil(L);
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_insert(L, -(nargs_pushed + 1));
	if (lua_pcall(L, nargs_pushed, nres, 0) != LUA_OK) {
		fprintf(stderr, "foundry: proxy callback: %s\n", luaL_tolstring(L, -1, NULL));
		lua_pop(L, 2);
		for (int i = 0; i < nres; i++)
			lua_pushnil(L);
	}
}

static void set_str(lua_State *L, const char *k, const char *v)
{
	if (v) {
		lua_pushstring(L, v);
		lua_setfield(L, -2, k);
	}
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, k);
}

static void audit(conn *c)
{
	exch *x = &c->x;
	engine *e = c->e;
	lua_State *L = e->L;
	int denied = x->v.action == ACT_DENY;
	if (denied) {
		c->sb->denied++;
		e->denied++;
	}
	c->sb->bytes_in += x->bytes_in;
	c->sb->bytes_out += x->bytes_out;
	if (e->audit_ref == LUA_NOREF)
		return;
	lua_createtable(L, 0, 12);
	set_str(L, "sandbox", c->sb->name);
	set_str(L, "kind", kind_names[x->kind]);
	set_str(L, "decision", denied ? "deny" : "allow");
	set_str(L, "host", x->host);
	if (x->port)
		set_int(L, "port", x->port);
	set_str(L, "method", x->method[0] ? x->method : NULL);
	set_str(L, "path", x->path);
	set_str(L, "rule", x->v.rule[0] ? x->v.rule : NULL);
	set_str(L, "reason", x->v.reason[0] ? x->v.reason : NULL);
	if (x->status)
		set_int(L, "status", x->status);
	set_int(L, "bytes_in", (lua_Integer)x->bytes_in);
	set_int(L, "bytes_out", (lua_Integer)x->bytes_out);
	set_int(L, "ms", (lua_Integer)(fdr_now_ms() - x->t0));
	if (x->swapped) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "credential");
	}
	call_lua(e, e->audit_ref, 1, 0);
}

/* ------------------------------------------------------------------ sides: I/O and TLS */

typedef struct {
	uv_write_t req;
	side *s;
	size_t n;
	char data[];
} wreq;

static void on_write(uv_write_t *req, int status)
{
	wreq *w = (wreq *)req;
	side *s = w->s;
	conn *c = s->c;
	s->queued -= w->n;
	free(w);
	if (status < 0 && status != UV_ECANCELED) {
		conn_close(c);
	} else if (c->ending && s == c->cl && s->queued == 0) {
		conn_close(c);
	} else if (!c->closing) {
		/* the other side may read again */
		side *o = s == c->cl ? c->up : c->cl;
		if (o && s->queued < WRITE_HIGH / 2)
			side_start(o);
		if (s->queued == 0 && c->state == C_TUNNEL)
			try_splice(c);
	}
	conn_unref(c);
}

static int raw_write(side *s, const void *data, size_t n)
{
	if (s->closing || !s->inited || n == 0)
		return 0;
	if (s->c->corked)
		return px_buf_add(&s->cork, data, n);
	if (s->queued == 0 && uv_stream_get_write_queue_size(&s->u.s) == 0) {
		/* most writes complete at once: no copy, no request */
		uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
		int r = uv_try_write(&s->u.s, &b, 1);
		if (r == (int)n)
			return 0;
		if (r > 0) {
			data = (const char *)data + r;
			n -= (size_t)r;
		}
	}
	wreq *w = malloc(sizeof *w + n);
	if (!w)
		return -1;
	memcpy(w->data, data, n);
	w->s = s;
	w->n = n;
	uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
	if (uv_write(&w->req, &s->u.s, &b, 1, on_write) < 0) {
		free(w);
		return -1;
	}
	s->queued += n;
	s->c->refs++;
	return 0;
}

/* Send what OpenSSL wrote into the memory BIO. */
static int flush_tls(side *s)
{
	char buf[16384];
	int n;
	while ((n = BIO_read(s->wb, buf, sizeof buf)) > 0)
		if (raw_write(s, buf, (size_t)n) < 0)
			return -1;
	return 0;
}

static int side_write(side *s, const void *data, size_t n)
{
	if (!s || n == 0)
		return 0;
	if (!s->ssl)
		return raw_write(s, data, n);
	if (!s->hs_done)
		return px_buf_add(&s->early, data, n);
	const char *p = data;
	while (n > 0) {
		int chunk = n > 65536 ? 65536 : (int)n;
		int r = SSL_write(s->ssl, p, chunk);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
		if (flush_tls(s) < 0)
			return -1;
	}
	return 0;
}

static int side_writes(side *s, const char *str)
{
	return side_write(s, str, strlen(str));
}

static int want_read(side *s)
{
	conn *c = s->c;
	if (c->closing || c->ending || s->closing || s->eof || !s->inited || c->sp)
		return 0;
	side *o = s == c->cl ? c->up : c->cl;
	if (o && o->queued >= WRITE_HIGH)
		return 0;
	if (s == c->cl && c->state == C_HTTP && (c->head_ready || c->msg_done))
		return 0;
	return 1;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* One read buffer for every stream: a read is consumed (copied where it must be kept)
 * before the loop reads again. */
static char read_buf[256 * 1024];

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
	(void)h;
	(void)size;
	buf->base = read_buf;
	buf->len = sizeof read_buf;
}

static void side_start(side *s)
{
	if (!s)
		return;
	int want = want_read(s);
	if (want && !s->reading) {
		if (uv_read_start(&s->u.s, alloc_cb, on_read) == 0)
			s->reading = 1;
	} else if (!want && s->reading) {
		uv_read_stop(&s->u.s);
		s->reading = 0;
	}
}

static void update_reading(conn *c)
{
	side_start(c->cl);
	side_start(c->up);
}

static void on_splice(void *arg, px_splice *sp, enum px_splice_event ev, int err)
{
	conn *c = arg;
	(void)sp;
	(void)err;
	if (ev == PX_SPLICE_PROGRESS)
		c->last_active = fdr_now_ms();
	else
		conn_close(c); /* both directions ended, or a socket failed */
}

static int side_idle(side *s)
{
	return s && s->inited && !s->closing && !s->ssl && !s->eof && !s->shut && s->queued == 0 &&
	       s->cork.len == 0 && uv_stream_get_write_queue_size(&s->u.s) == 0;
}

/* An opaque tunnel that has carried SPLICE_AFTER bytes, with nothing queued either way,
 * goes to the kernel: splice(2) moves its bytes socket to socket without copying them
 * through the proxy. Small and idle tunnels (most API calls) keep copying through the
 * read callbacks, which costs no pipes; so does a tunnel that splice cannot serve. */
#define SPLICE_AFTER (256u << 10)

static void try_splice(conn *c)
{
	uv_os_fd_t a, b;
	if (c->sp || c->closing || c->ending || c->corked || c->state != C_TUNNEL || c->e->no_splice ||
	    c->x.bytes_in + c->x.bytes_out < SPLICE_AFTER || c->hold.len ||
	    !side_idle(c->cl) || !side_idle(c->up) || uv_fileno(&c->cl->u.h, &a) || uv_fileno(&c->up->u.h, &b))
		return;
	c->sp = px_splice_start(c->e->loop, a, b, on_splice, c);
	if (c->sp)
		c->e->spliced++;
	update_reading(c); /* reading stops while the kernel moves the bytes */
}

/* Send what was gathered while corked: a response head and its body, or a reply and
 * what the TLS layer wrote, leave in one write. */
static void uncork(side *s)
{
	if (!s || !s->cork.len)
		return;
	int corked = s->c->corked;
	px_buf b = s->cork;
	memset(&s->cork, 0, sizeof s->cork);
	s->c->corked = 0;
	raw_write(s, b.data, b.len);
	s->c->corked = corked;
	px_buf_free(&b, 0);
}

static void on_side_closed(uv_handle_t *h)
{
	side *s = h->data;
	conn *c = s->c;
	if (s->ssl)
		SSL_free(s->ssl); /* frees the BIOs */
	px_buf_free(&s->early, 1);
	px_buf_free(&s->cork, 0);
	free(s);
	conn_unref(c);
}

static void side_close(side *s)
{
	if (!s || s->closing)
		return;
	uncork(s);
	s->closing = 1;
	conn *c = s->c;
	if (c->up == s)
		c->up = NULL;
	if (s->inited) {
		uv_close(&s->u.h, on_side_closed);
	} else {
		if (s->ssl)
			SSL_free(s->ssl);
		px_buf_free(&s->early, 1);
		px_buf_free(&s->cork, 0);
		free(s);
		conn_unref(c);
	}
}

static side *side_new(conn *c, int is_up)
{
	side *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->c = c;
	s->is_up = is_up;
	s->u.h.data = s;
	c->refs++;
	return s;
}

/* Start TLS on a side: the client side as a server with a minted leaf, or the upstream
 * side as a client verifying `host`. */
static int side_tls(side *s, int server, const char *host, int is_ip)
{
	engine *e = s->c->e;
	s->ssl = SSL_new(server ? px_ca_server_ctx(e->ca) : e->client_ctx);
	if (!s->ssl)
		return -1;
	s->rb = BIO_new(BIO_s_mem());
	s->wb = BIO_new(BIO_s_mem());
	if (!s->rb || !s->wb) {
		BIO_free(s->rb);
		BIO_free(s->wb);
		s->rb = s->wb = NULL;
		return -1;
	}
	BIO_set_mem_eof_return(s->rb, -1);
	SSL_set_bio(s->ssl, s->rb, s->wb);
	if (server) {
		if (px_ca_use_leaf(e->ca, s->ssl, host, is_ip) < 0)
			return -1;
		SSL_set_accept_state(s->ssl);
		return 0;
	}
	SSL_set_connect_state(s->ssl);
	if (is_ip) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host);
	} else {
		SSL_set_tlsext_host_name(s->ssl, host);
		SSL_set1_host(s->ssl, host);
	}
	int r = SSL_do_handshake(s->ssl);
	(void)r;
	return flush_tls(s);
}

static void on_client_data(conn *c, const char *data, size_t n);
static void on_up_data(conn *c, const char *data, size_t n);
static void on_eof(side *s);
static void up_ready(conn *c);
static void respond_error(conn *c, int status, const char *msg);

static void deliver(side *s, const char *data, size_t n)
{
	conn *c = s->c;
	c->last_active = fdr_now_ms();
	if (s == c->cl)
		on_client_data(c, data, n);
	else
		on_up_data(c, data, n);
}

static void tls_failed(side *s)
{
	conn *c = s->c;
	unsigned long err = ERR_peek_error();
	char buf[200] = "handshake failed";
	if (err)
		ERR_error_string_n(err, buf, sizeof buf);
	ERR_clear_error();
	if (s->is_up && c->x.active && !c->x.decided) {
		long vr = SSL_get_verify_result(s->ssl);
		c->x.decided = 1;
		c->x.v.action = ACT_DENY;
		snprintf(c->x.v.rule, sizeof c->x.v.rule, "tls");
		snprintf(c->x.v.reason, sizeof c->x.v.reason, "upstream TLS: %s",
			 vr != X509_V_OK ? X509_verify_cert_error_string(vr) : buf);
		respond_error(c, 502, c->x.v.reason);
		return;
	}
	conn_close(c);
}

/* Ciphertext arrived on a TLS side. */
static void tls_input(side *s, const char *data, size_t n)
{
	conn *c = s->c;
	if (BIO_write(s->rb, data, (int)n) != (int)n) {
		conn_close(c);
		return;
	}
	if (!s->hs_done) {
		int r = SSL_do_handshake(s->ssl);
		if (flush_tls(s) < 0) {
			conn_close(c);
			return;
		}
		if (r != 1) {
			int err = SSL_get_error(s->ssl, r);
			if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
				tls_failed(s);
			return;
		}
		s->hs_done = 1;
		if (s->early.len) {
			px_buf early = s->early;
			memset(&s->early, 0, sizeof s->early);
			side_write(s, early.data, early.len);
			px_buf_free(&early, 1);
		}
		if (s->is_up)
			up_ready(c);
		if (c->closing)
			return;
	}
	char buf[16384];
	for (;;) {
		int r = SSL_read(s->ssl, buf, sizeof buf);
		if (r > 0) {
			deliver(s, buf, (size_t)r);
			if (c->closing || s->closing)
				return;
			continue;
		}
		int err = SSL_get_error(s->ssl, r);
		flush_tls(s);
		if (err == SSL_ERROR_WANT_READ)
			return;
		if (err == SSL_ERROR_ZERO_RETURN) {
			on_eof(s);
			return;
		}
		ERR_clear_error();
		conn_close(c);
		return;
	}
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	side *s = stream->data;
	conn *c = s->c;
	c->refs++;
	int outer = !c->corked;
	c->corked = 1;
	if (nread > 0) {
		if (s->ssl)
			tls_input(s, buf->base, (size_t)nread);
		else
			deliver(s, buf->base, (size_t)nread);
	} else if (nread < 0) {
		if (nread == UV_EOF)
			on_eof(s);
		else
			conn_close(c);
	}
	if (outer) {
		c->corked = 0;
		uncork(c->cl);
		uncork(c->up);
		try_splice(c);
	}
	if (!c->closing)
		update_reading(c);
	conn_unref(c);
}

/* ------------------------------------------------------------------ connections */

static void sandbox_unref(sandbox *sb);

static void conn_free(conn *c)
{
	px_http_free(&c->req);
	px_http_free(&c->resp);
	px_buf_free(&c->in, 1);
	px_buf_free(&c->hold, 1);
	px_buf_free(&c->x.body, 1);
	px_buf_free(&c->x.head, 1);
	px_buf_free(&c->x.resp_head, 1);
	px_buf_free(&c->x.resp_body, 1);
	free(c->x.path);
	policy_unref(c->pol);
	if (c->prev)
		c->prev->next = c->next;
	else
		c->sb->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->sb->nconns--;
	c->e->nconns--;
	sandbox_unref(c->sb);
	free(c);
}

static void conn_unref(conn *c)
{
	if (--c->refs == 0)
		conn_free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
	conn_unref(h->data);
}

/* Stop waiting for a name (the resolver runs on the thread pool: the request is
 * cancelled if it has not started, and its answer is ignored if it has). */
static void give_up_resolving(conn *c)
{
	if (!c->resolving)
		return;
	c->resolving->stale = 1;
	uv_cancel((uv_req_t *)&c->resolving->req);
	c->resolving = NULL;
}

static void conn_close(conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (c->sp) {
		c->x.bytes_out += c->sp->bytes[0];
		c->x.bytes_in += c->sp->bytes[1];
		px_splice_stop(c->sp);
		c->sp = NULL;
	}
	if (c->x.active) {
		if (c->state == C_TUNNEL || c->x.decided)
			audit(c);
		c->x.active = 0;
	}
	c->state = C_CLOSED;
	give_up_resolving(c);
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	side_close(c->up);
	side_close(c->cl);
	c->cl = NULL;
}

/* Close once what is queued for the client is written (a reply before closing). */
static void conn_end(conn *c)
{
	if (c->closing)
		return;
	uncork(c->cl);
	if (!c->cl || c->cl->queued == 0) {
		conn_close(c);
		return;
	}
	c->ending = 1;
	side_close(c->up);
	update_reading(c);
}

static void on_timer(uv_timer_t *t)
{
	conn *c = t->data;
	uint64_t now = fdr_now_ms();
	uint64_t idle = c->pol ? c->pol->lim.idle_timeout : 600000;
	if (c->x.active && !c->x.decided && (c->resolving || (c->up && !c->up->hs_done))) {
		/* resolving the name, connecting, or the upstream handshake */
		uint64_t ct = c->pol->lim.connect_timeout;
		if (now - c->x.t0 >= ct) {
			int resolving = c->resolving != NULL;
			give_up_resolving(c);
			c->x.decided = 1;
			c->x.v.action = ACT_DENY;
			snprintf(c->x.v.rule, sizeof c->x.v.rule, "limits.connect_timeout");
			snprintf(c->x.v.reason, sizeof c->x.v.reason, "%s %s:%d timed out after %llu ms%s",
				 resolving ? "resolving" : "connecting to", c->x.host, c->x.port,
				 (unsigned long long)ct, resolving ? " (the resolver did not answer)" : "");
			respond_error(c, 504, c->x.v.reason);
			return;
		}
	}
	if (now - c->last_active >= idle) {
		conn_close(c);
		return;
	}
	uv_timer_start(t, on_timer, 1000, 0);
}

/* A JSON string literal of s (for error bodies). */
static void json_str(px_buf *b, const char *s)
{
	px_buf_add(b, "\"", 1);
	for (; s && *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			px_buf_printf(b, "\\%c", ch);
		else if (ch < 0x20)
			px_buf_printf(b, "\\u%04x", ch);
		else
			px_buf_add(b, s, 1);
	}
	px_buf_add(b, "\"", 1);
}

static const char *status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Error";
	}
}

/* Answer the current request from the proxy itself with a JSON body; the exchange ends
 * (audited) and the connection closes unless it can carry on. */
static void respond_json(conn *c, int status, const char *body, int keep)
{
	exch *x = &c->x;
	px_buf b = {0};
	px_buf_printf(&b,
		      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
		      "Cache-Control: no-store\r\nX-Foundry-Proxy: 1\r\n%s\r\n",
		      status, status_text(status), strlen(body), keep ? "" : "Connection: close\r\n");
	px_buf_adds(&b, body);
	if (c->cl)
		side_write(c->cl, b.data, b.len);
	px_buf_free(&b, 0);
	x->status = status;
	x->bytes_in += strlen(body);
	if (x->active) {
		audit(c);
		x->active = 0;
	}
	if (!keep)
		conn_end(c);
}

static void respond_error(conn *c, int status, const char *msg)
{
	exch *x = &c->x;
	px_buf b = {0};
	px_buf_adds(&b, "{\"error\":");
	json_str(&b, msg);
	px_buf_adds(&b, ",\"rule\":");
	json_str(&b, x->v.rule[0] ? x->v.rule : "proxy");
	px_buf_adds(&b, ",\"reason\":");
	json_str(&b, x->v.reason[0] ? x->v.reason : msg);
	px_buf_adds(&b, ",\"how_to_allow\":");
	json_str(&b, x->v.how);
	px_buf_adds(&b, "}\n");
	if (x->v.action != ACT_DENY) {
		x->v.action = ACT_DENY;
		if (!x->v.reason[0])
			snprintf(x->v.reason, sizeof x->v.reason, "%s", msg);
	}
	/* Keep the connection when the request was read whole and nothing went upstream. */
	int keep = c->state == C_HTTP && !x->head_sent && x->client_keepalive &&
		   x->kind != K_CONNECT &&
		   (x->req_done || (!c->req.has_length && !c->req.chunked) ||
		    (c->req.has_length && c->req.length == 0));
	respond_json(c, status, b.data, keep);
	px_buf_free(&b, 0);
	if (keep && !c->closing) {
		c->head_ready = 0;
		px_http_pause(&c->req, 0);
	}
}

static void respond_denied(conn *c)
{
	exch *x = &c->x;
	c->x.decided = 1;
	px_buf b = {0};
	px_buf_adds(&b, "{\"error\":\"denied by the sandbox's network policy\",\"rule\":");
	json_str(&b, x->v.rule);
	px_buf_adds(&b, ",\"reason\":");
	json_str(&b, x->v.reason);
	px_buf_adds(&b, ",\"how_to_allow\":");
	json_str(&b, x->v.how);
	px_buf_adds(&b, "}\n");
	/* A denied request whose body has not been read cannot keep the connection. */
	int keep = c->state == C_HTTP && x->kind != K_CONNECT && x->client_keepalive &&
		   (x->req_done || (!c->req.has_length && !c->req.chunked) ||
		    (c->req.has_length && c->req.length == 0));
	int status = x->v.status ? x->v.status : 403;
	respond_json(c, status, b.data, keep);
	px_buf_free(&b, 0);
	if (keep && !c->closing) {
		/* discard the rest of this request, if any, then read the next */
		c->head_ready = 0;
		c->msg_done = x->req_done ? 0 : c->msg_done;
		px_http_pause(&c->req, 0);
	}
}

/* ------------------------------------------------------------------ secrets in transit */

/* Replace every occurrence of `from` in b with `to`. */
static int buf_replace(px_buf *b, const char *from, size_t fl, const char *to, size_t tl)
{
	if (!fl || b->len < fl)
		return 0;
	int count = 0;
	px_buf out = {0};
	size_t i = 0, last = 0;
	while (i + fl <= b->len) {
		if (memcmp(b->data + i, from, fl) == 0) {
			px_buf_add(&out, b->data + last, i - last);
			px_buf_add(&out, to, tl);
			i += fl;
			last = i;
			count++;
		} else {
			i++;
		}
	}
	if (!count)
		return 0;
	px_buf_add(&out, b->data + last, b->len - last);
	px_buf_free(b, 1);
	*b = out;
	return count;
}

/* Mask every real secret of the policy in b[0..n), in place. */
static void mask_secrets(const policy *p, char *data, size_t n)
{
	for (int k = 0; k < p->ncreds; k++) {
		const cred *cr = &p->creds[k];
		if (!cr->secret || cr->secretlen < 4 || cr->secretlen > n)
			continue;
		for (size_t i = 0; i + cr->secretlen <= n;) {
			char *hit = memmem(data + i, n - i, cr->secret, cr->secretlen);
			if (!hit)
				break;
			memset(hit, '*', cr->secretlen);
			i = (size_t)(hit - data) + cr->secretlen;
		}
	}
}

/* How many trailing bytes of data could be the start of a secret (held back so that a
 * secret split across two reads is still masked). */
static size_t partial_tail(const policy *p, const char *data, size_t n)
{
	size_t best = 0;
	for (int k = 0; k < p->ncreds; k++) {
		const cred *cr = &p->creds[k];
		if (!cr->secret || cr->secretlen < 4)
			continue;
		size_t max = cr->secretlen - 1 < n ? cr->secretlen - 1 : n;
		for (size_t l = max; l > best; l--)
			if (memcmp(data + n - l, cr->secret, l) == 0) {
				best = l;
				break;
			}
	}
	return best;
}

static int has_secrets(const policy *p)
{
	for (int k = 0; k < p->ncreds; k++)
		if (p->creds[k].secret)
			return 1;
	return 0;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(px_buf *out, const unsigned char *in, size_t n)
{
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? in[i + 2] : 0);
		char q[4] = {b64tab[v >> 18 & 63], b64tab[v >> 12 & 63],
			     i + 1 < n ? b64tab[v >> 6 & 63] : '=', i + 2 < n ? b64tab[v & 63] : '='};
		px_buf_add(out, q, 4);
	}
}

static int b64_decode(px_buf *out, const char *in, size_t n)
{
	unsigned v = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		const char *p = in[i] ? strchr(b64tab, in[i]) : NULL;
		if (in[i] == '=')
			break;
		if (!p)
			return -1;
		v = v << 6 | (unsigned)(p - b64tab);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			char ch = (char)(v >> bits & 0xff);
			px_buf_add(out, &ch, 1);
		}
	}
	return 0;
}

static int cred_applies(const cred *cr, const exch *x)
{
	return cr->secret && host_match(&cr->host, x->host, x->port) &&
	       methods_match(cr->methods, cr->nmethods, x->method) &&
	       paths_match(cr->paths, cr->npaths, x->path, strlen(x->path));
}

/* The formatted credential value: format with {secret} replaced (default: the secret). */
static void cred_value(const cred *cr, px_buf *out)
{
	if (cr->kind == C_BASIC) {
		px_buf raw = {0};
		px_buf_printf(&raw, "%s:", cr->user);
		px_buf_add(&raw, cr->secret, cr->secretlen);
		px_buf_adds(out, "Basic ");
		b64_encode(out, (unsigned char *)raw.data, raw.len);
		px_buf_free(&raw, 1);
		return;
	}
	const char *f = cr->format ? cr->format : "{secret}";
	const char *at = strstr(f, "{secret}");
	if (!at) {
		px_buf_add(out, cr->secret, cr->secretlen);
		return;
	}
	px_buf_add(out, f, (size_t)(at - f));
	px_buf_add(out, cr->secret, cr->secretlen);
	px_buf_adds(out, at + 8);
}

static int is_hop(const char *name, size_t n)
{
	static const char *hop[] = {"connection", "proxy-connection", "keep-alive",
				    "proxy-authorization", "proxy-authenticate", "te", "trailer",
				    "transfer-encoding", "upgrade", "content-length", NULL};
	for (int i = 0; hop[i]; i++)
		if (px_ieq(name, n, hop[i]))
			return 1;
	return 0;
}

/* Build the upstream request head into x->head, swapping placeholders for secrets where
 * a credential applies. `target` is the origin-form path and query to send. */
static void build_request_head(conn *c, const char *path, size_t pathlen, const char *query,
			       size_t querylen)
{
	exch *x = &c->x;
	px_http *r = &c->req;
	policy *p = c->pol;
	px_buf *h = &x->head;
	px_buf q = {0};
	int applied[64] = {0};
	int nc = p->ncreds < 64 ? p->ncreds : 64;
	if (query)
		px_buf_add(&q, query, querylen);
	for (int k = 0; k < nc; k++)
		x->cred_host |= cred_applies(&p->creds[k], x);
	for (int k = 0; k < nc; k++) {
		const cred *cr = &p->creds[k];
		if (!cred_applies(cr, x) || !cr->placeholder || !q.len)
			continue;
		if (buf_replace(&q, cr->placeholder, cr->phlen, cr->secret, cr->secretlen))
			applied[k] = 1;
	}
	px_buf_printf(h, "%s ", x->method);
	px_buf_add(h, path, pathlen);
	if (query) {
		px_buf_add(h, "?", 1);
		px_buf_add(h, q.data, q.len);
	}
	px_buf_adds(h, " HTTP/1.1\r\n");
	px_buf_free(&q, 1);
	int have_host = 0;
	for (int i = 0; i < r->nh; i++) {
		const char *name = px_http_str(r, r->h[i].name);
		size_t nl = r->h[i].namelen;
		if (is_hop(name, nl))
			continue;
		int strip = 0;
		for (int k = 0; k < nc && !strip; k++) {
			const cred *cr = &p->creds[k];
			if (!cred_applies(cr, x))
				continue;
			for (int s = 0; s < cr->nstrip; s++)
				strip |= px_ieq(name, nl, cr->strip[s]);
		}
		if (strip)
			continue;
		if (px_ieq(name, nl, "host")) {
			have_host = 1;
			/* A gateway's host is the provider's; a forwarded request's is its URL's
			 * (RFC 9112 3.2.2): a Host naming another site behind the same address
			 * would reach a host the policy never allowed. Inspected requests were
			 * checked against the tunnel's host already. */
			if (x->kind == K_GATEWAY || x->kind == K_HTTP)
				continue; /* rewritten below */
		}
		/* Compressed responses could hide a secret from the mask: ask for identity
		 * wherever a credential is involved. */
		if (px_ieq(name, nl, "accept-encoding") && x->cred_host)
			continue;
		px_buf val = {0};
		px_buf_add(&val, px_http_str(r, r->h[i].value), r->h[i].valuelen);
		for (int k = 0; k < nc; k++) {
			const cred *cr = &p->creds[k];
			if (!cr->placeholder || !cred_applies(cr, x))
				continue;
			if (cr->kind == C_BASIC && px_ieq(name, nl, "authorization") &&
			    val.len > 6 && px_ieq(val.data, 6, "basic ")) {
				px_buf dec = {0};
				if (b64_decode(&dec, val.data + 6, val.len - 6) == 0 &&
				    buf_replace(&dec, cr->placeholder, cr->phlen, cr->secret, cr->secretlen)) {
					px_buf_free(&val, 1);
					px_buf_adds(&val, "Basic ");
					b64_encode(&val, (unsigned char *)dec.data, dec.len);
					applied[k] = 1;
				}
				px_buf_free(&dec, 1);
			} else if (cr->kind != C_QUERY && (!cr->header || px_ieq(name, nl, cr->header))) {
				if (buf_replace(&val, cr->placeholder, cr->phlen, cr->secret, cr->secretlen))
					applied[k] = 1;
			}
		}
		/* An injected credential replaces whatever the client sent in its header. */
		int replaced = 0;
		for (int k = 0; k < nc && !replaced; k++) {
			const cred *cr = &p->creds[k];
			replaced = cr->inject && !applied[k] && cred_applies(cr, x) && cr->header &&
				   px_ieq(name, nl, cr->header);
		}
		if (!replaced) {
			px_buf_add(h, name, nl);
			px_buf_adds(h, ": ");
			px_buf_add(h, val.data, val.len);
			px_buf_adds(h, "\r\n");
		}
		px_buf_free(&val, 1);
	}
	for (int k = 0; k < nc; k++) {
		const cred *cr = &p->creds[k];
		if (!applied[k] && cr->inject && cred_applies(cr, x) && cr->header) {
			px_buf_adds(h, cr->header);
			px_buf_adds(h, ": ");
			cred_value(cr, h);
			px_buf_adds(h, "\r\n");
			applied[k] = 1;
		}
		if (applied[k])
			x->swapped = 1;
	}
	if (x->kind == K_GATEWAY || x->kind == K_HTTP || !have_host) {
		if (x->port == (x->up_tls ? 443 : 80))
			px_buf_printf(h, "Host: %s\r\n", x->host);
		else
			px_buf_printf(h, x->is_ip && strchr(x->host, ':') ? "Host: [%s]:%d\r\n" : "Host: %s:%d\r\n",
				      x->host, x->port);
	}
	if (x->cred_host)
		px_buf_adds(h, "Accept-Encoding: identity\r\n");
	if (x->upgrade) {
		size_t ul;
		const char *u = px_http_header(r, "upgrade", &ul);
		px_buf_adds(h, "Connection: Upgrade\r\nUpgrade: ");
		px_buf_add(h, u, ul);
		px_buf_adds(h, "\r\n");
	}
	if (x->buffering) {
		/* the body is sent whole, with its length, after the decision */
	} else if (r->chunked) {
		px_buf_adds(h, "Transfer-Encoding: chunked\r\n");
		x->req_chunked = 1;
	} else if (r->has_length) {
		px_buf_printf(h, "Content-Length: %llu\r\n", (unsigned long long)r->length);
	}
}

/* The JSON-body placeholder swap and the length of a buffered body, then send it. */
static void send_buffered_body(conn *c)
{
	exch *x = &c->x;
	policy *p = c->pol;
	for (int k = 0; k < p->ncreds; k++) {
		const cred *cr = &p->creds[k];
		if (cr->json && cr->placeholder && cred_applies(cr, x) &&
		    buf_replace(&x->body, cr->placeholder, cr->phlen, cr->secret, cr->secretlen))
			x->swapped = 1;
	}
	if (x->body.len || c->req.has_length || c->req.chunked)
		px_buf_printf(&x->head, "Content-Length: %zu\r\n", x->body.len);
	px_buf_adds(&x->head, "\r\n");
	x->head_sent = 1;
	side_write(c->up, x->head.data, x->head.len);
	side_write(c->up, x->body.data, x->body.len);
	x->bytes_out += x->body.len;
	px_buf_free(&x->body, 1);
	px_buf_free(&x->head, 1);
	x->buffering = 0;
}

/* ------------------------------------------------------------------ upstream connections */

static breaker *find_breaker(sandbox *sb, const char *host, int port, int create)
{
	char key[sizeof ((breaker *)0)->key];
	snprintf(key, sizeof key, "%s:%d", host, port);
	for (breaker *b = sb->breakers; b; b = b->next)
		if (!strcmp(b->key, key))
			return b;
	if (!create)
		return NULL;
	breaker *b = calloc(1, sizeof *b);
	if (!b)
		return NULL;
	snprintf(b->key, sizeof b->key, "%s", key);
	b->next = sb->breakers;
	sb->breakers = b;
	return b;
}

/* An upstream failure (connect, TLS, reset before a response) counts towards opening the
 * breaker; the breaker's own refusals never do. */
static void breaker_failure(conn *c)
{
	breaker *b = find_breaker(c->sb, c->x.host, c->x.port, 1);
	if (b && ++b->failures >= c->pol->lim.breaker_failures)
		b->open_until = fdr_now_ms() + c->pol->lim.breaker_cooldown;
}

static void breaker_success(conn *c)
{
	breaker *b = find_breaker(c->sb, c->x.host, c->x.port, 0);
	if (b) {
		b->failures = 0;
		b->open_until = 0;
	}
}

static void upstream_failed(conn *c, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void upstream_failed(conn *c, int status, const char *fmt, ...)
{
	va_list ap;
	exch *x = &c->x;
	breaker_failure(c);
	x->decided = 1;
	x->v.action = ACT_DENY;
	snprintf(x->v.rule, sizeof x->v.rule, "upstream");
	va_start(ap, fmt);
	vsnprintf(x->v.reason, sizeof x->v.reason, fmt, ap);
	va_end(ap);
	side_close(c->up);
	respond_error(c, status, x->v.reason);
}

static void on_connect(uv_connect_t *req, int status)
{
	side *s = req->data;
	conn *c = s->c;
	if (status == UV_ECANCELED || c->closing || s->closing) {
		conn_unref(c);
		return;
	}
	if (status < 0) {
		upstream_failed(c, 502, "cannot connect to %s:%d (%s): %s", c->x.host, c->x.port,
				s->addr, uv_strerror(status));
		conn_unref(c);
		return;
	}
	/* Check the address actually connected, not only the one we meant to connect. */
	struct sockaddr_storage ss;
	int len = sizeof ss;
	px_ip ip;
	if (uv_tcp_getpeername(&s->u.tcp, (struct sockaddr *)&ss, &len) != 0 ||
	    px_ip_from_sockaddr((struct sockaddr *)&ss, &ip) < 0) {
		upstream_failed(c, 502, "cannot read the upstream address");
		conn_unref(c);
		return;
	}
	uv_tcp_nodelay(&s->u.tcp, 1);
	if (s->tls) {
		int is_ip = c->x.is_ip;
		if (side_tls(s, 0, s->host, is_ip) < 0) {
			upstream_failed(c, 502, "cannot start TLS to %s", s->host);
			conn_unref(c);
			return;
		}
		side_start(s);
	} else {
		s->hs_done = 1;
		side_start(s);
		up_ready(c);
	}
	conn_unref(c);
}

static void connect_addr(conn *c, const struct sockaddr *sa, const char *host, int port, int tls)
{
	side *s = side_new(c, 1);
	if (!s) {
		conn_close(c);
		return;
	}
	c->up = s;
	snprintf(s->host, sizeof s->host, "%s", host);
	s->port = port;
	s->tls = tls;
	px_ip ip;
	px_ip_from_sockaddr(sa, &ip);
	px_ip_format(&ip, s->addr, sizeof s->addr);
	px_http_free(&c->resp);
	px_http_init(&c->resp, HTTP_RESPONSE, &resp_cb, c);
	uv_tcp_init(c->e->loop, &s->u.tcp);
	s->inited = 1;
	s->u.h.data = s;
	s->connect.data = s;
	c->refs++;
	int rc = uv_tcp_connect(&s->connect, &s->u.tcp, sa, on_connect);
	if (rc < 0) {
		c->refs--;
		upstream_failed(c, 502, "cannot connect to %s:%d: %s", host, port, uv_strerror(rc));
	}
}

/* Pick the first resolved address the policy allows and connect to it. */
static void connect_first_allowed(conn *c, struct addrinfo *ai, int named)
{
	exch *x = &c->x;
	verdict v;
	memset(&v, 0, sizeof v);
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		px_ip ip;
		if (px_ip_from_sockaddr(a->ai_addr, &ip) < 0)
			continue;
		if (!address_allowed(c->pol, &ip, named, &v))
			continue;
		connect_addr(c, a->ai_addr, x->host, x->port, x->up_tls);
		return;
	}
	x->v = v;
	if (!x->v.reason[0])
		snprintf(x->v.reason, sizeof x->v.reason, "%s has no usable address", x->host);
	else {
		char tmp[sizeof v.reason];
		snprintf(tmp, sizeof tmp, "%s resolves to %s", x->host, v.reason);
		snprintf(x->v.reason, sizeof x->v.reason, "%s", tmp);
	}
	x->v.action = ACT_DENY;
	x->v.status = 403;
	respond_denied(c);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
	resolve_req *r = (resolve_req *)req;
	conn *c = r->c;
	int stale = r->stale;
	free(r);
	if (!stale)
		c->resolving = NULL;
	if (c->closing || stale) {
		uv_freeaddrinfo(ai);
		conn_unref(c);
		return;
	}
	if (status < 0) {
		c->x.decided = 1;
		c->x.v.action = ACT_DENY;
		snprintf(c->x.v.rule, sizeof c->x.v.rule, "dns");
		snprintf(c->x.v.reason, sizeof c->x.v.reason, "cannot resolve %s: %s", c->x.host,
			 uv_strerror(status));
		respond_error(c, 502, c->x.v.reason);
	} else {
		connect_first_allowed(c, ai, 0);
	}
	uv_freeaddrinfo(ai);
	conn_unref(c);
}

/* Connect the upstream for the current exchange (or reuse the idle one). */
static void connect_upstream(conn *c)
{
	exch *x = &c->x;
	policy *p = c->pol;
	breaker *b = find_breaker(c->sb, x->host, x->port, 0);
	if (b && b->open_until > fdr_now_ms()) {
		x->decided = 1;
		x->v.action = ACT_DENY;
		snprintf(x->v.rule, sizeof x->v.rule, "limits.breaker");
		snprintf(x->v.reason, sizeof x->v.reason,
			 "%s:%d failed %d times in a row; not trying again for %llu s", x->host,
			 x->port, b->failures, (unsigned long long)(b->open_until - fdr_now_ms()) / 1000 + 1);
		respond_error(c, 503, x->v.reason);
		return;
	}
	if (c->up) {
		side *u = c->up;
		if (!u->closing && !u->eof && u->hs_done && u->tls == x->up_tls && u->port == x->port &&
		    !strcmp(u->host, x->host)) {
			up_ready(c);
			return;
		}
		side_close(u);
	}
	const override *o = find_override(p, x->host, x->port);
	struct sockaddr_storage ss;
	if (o) {
		if (o->tls >= 0)
			x->up_tls = o->tls;
		int port = o->addr_port ? o->addr_port : x->port;
		if (uv_ip4_addr(o->addr, port, (struct sockaddr_in *)&ss) != 0 &&
		    uv_ip6_addr(o->addr, port, (struct sockaddr_in6 *)&ss) != 0) {
			respond_error(c, 502, "bad override address");
			return;
		}
		connect_addr(c, (struct sockaddr *)&ss, x->host, x->port, x->up_tls);
		return;
	}
	if (x->is_ip) {
		if (uv_ip4_addr(x->host, x->port, (struct sockaddr_in *)&ss) != 0 &&
		    uv_ip6_addr(x->host, x->port, (struct sockaddr_in6 *)&ss) != 0) {
			respond_error(c, 400, "bad address");
			return;
		}
		struct addrinfo ai = {.ai_addr = (struct sockaddr *)&ss};
		int named = px_matcher_lookup(p->allow, x->host, x->port) >= 0;
		connect_first_allowed(c, &ai, named);
		return;
	}
	resolve_req *r = calloc(1, sizeof *r);
	if (!r) {
		conn_close(c);
		return;
	}
	r->c = c;
	c->resolving = r;
	char port[8];
	snprintf(port, sizeof port, "%d", x->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	c->refs++;
	int rc = uv_getaddrinfo(c->e->loop, &r->req, on_resolved, x->host, port, &hints);
	if (rc < 0) {
		c->refs--;
		c->resolving = NULL;
		free(r);
		respond_error(c, 502, "cannot resolve");
	}
}

/* ------------------------------------------------------------------ responses */

static void client_send_body(conn *c, const char *data, size_t n, int final)
{
	exch *x = &c->x;
	if (!c->cl)
		return;
	px_buf out = {0};
	const char *d = data;
	size_t len = n;
	if (has_secrets(c->pol)) {
		px_buf_add(&c->hold, data, n);
		mask_secrets(c->pol, c->hold.data, c->hold.len);
		size_t keep = final ? 0 : partial_tail(c->pol, c->hold.data, c->hold.len);
		px_buf_add(&out, c->hold.data, c->hold.len - keep);
		px_buf_consume(&c->hold, c->hold.len - keep);
		d = out.data;
		len = out.len;
	}
	if (len) {
		if (x->resp_chunked) {
			char hdr[24];
			int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", len);
			side_write(c->cl, hdr, (size_t)hl);
			side_write(c->cl, d, len);
			side_write(c->cl, "\r\n", 2);
		} else {
			side_write(c->cl, d, len);
		}
		x->bytes_in += len;
	}
	px_buf_free(&out, 1);
}

static int resp_on_head(px_http *h)
{
	conn *c = h->data;
	exch *x = &c->x;
	int status = h->p.status_code;
	px_buf b = {0};
	breaker_success(c);
	if (status / 100 == 1 && status != 101) {
		/* interim: forward as is, the real response follows */
		px_buf_printf(&b, "HTTP/1.1 %d %s\r\n\r\n", status, px_http_str(h, h->reason));
		side_write(c->cl, b.data, b.len);
		px_buf_free(&b, 0);
		x->interim = 1;
		return 0;
	}
	if (x->guard_filter && status != 101) {
		/* the guard rewrites this response: hold it whole (guard_filter_done) */
		x->status = status;
		x->resp_close = !x->client_keepalive || !http_should_keep_alive(&h->p);
		px_buf_free(&x->resp_head, 1);
		for (int i = 0; i < h->nh; i++) {
			px_buf_add(&x->resp_head, px_http_str(h, h->h[i].name), h->h[i].namelen);
			px_buf_add(&x->resp_head, "", 1);
			px_buf_add(&x->resp_head, px_http_str(h, h->h[i].value), h->h[i].valuelen);
			px_buf_add(&x->resp_head, "", 1);
		}
		return x->head_req || status == 204 || status == 304 ? 1 : 0;
	}
	x->status = status;
	int upgrade = status == 101 && x->upgrade;
	int no_body = x->head_req || status == 204 || status == 304 || upgrade;
	x->resp_chunked = 0;
	x->resp_close = !x->client_keepalive || !http_should_keep_alive(&h->p);
	if (!no_body && !h->has_length) {
		if (c->req.p.http_minor >= 1 && c->req.p.http_major == 1)
			x->resp_chunked = 1;
		else
			x->resp_close = 1;
	}
	px_buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, px_http_str(h, h->reason));
	for (int i = 0; i < h->nh; i++) {
		const char *name = px_http_str(h, h->h[i].name);
		size_t nl = h->h[i].namelen;
		if (is_hop(name, nl) && !(upgrade && px_ieq(name, nl, "upgrade")))
			continue;
		size_t vstart = b.len + nl + 2;
		px_buf_add(&b, name, nl);
		px_buf_adds(&b, ": ");
		px_buf_add(&b, px_http_str(h, h->h[i].value), h->h[i].valuelen);
		mask_secrets(c->pol, b.data + vstart, h->h[i].valuelen);
		px_buf_adds(&b, "\r\n");
	}
	if (upgrade)
		px_buf_adds(&b, "Connection: Upgrade\r\n");
	else if (x->resp_chunked)
		px_buf_adds(&b, "Transfer-Encoding: chunked\r\n");
	else if (h->has_length)
		px_buf_printf(&b, "Content-Length: %llu\r\n", (unsigned long long)h->length);
	if (!upgrade && x->resp_close)
		px_buf_adds(&b, "Connection: close\r\n");
	px_buf_adds(&b, "\r\n");
	side_write(c->cl, b.data, b.len);
	px_buf_free(&b, 0);
	if (upgrade) {
		/* the rest of both streams is the new protocol */
		px_http_pause(h, 1);
		return 0;
	}
	return no_body ? 1 : 0;
}

static int resp_on_body(px_http *h, const char *data, size_t n)
{
	conn *c = h->data;
	if (c->x.guard_filter)
		return guard_hold_body(c, data, n);
	client_send_body(c, data, n, 0);
	return 0;
}

static int resp_on_done(px_http *h)
{
	conn *c = h->data;
	exch *x = &c->x;
	if (x->interim && x->status == 0) {
		x->interim = 0;
		return 0;
	}
	if (x->guard_filter) {
		guard_filter_done(c);
		x->resp_done = 1;
		px_http_pause(h, 1);
		return 0;
	}
	client_send_body(c, "", 0, 1);
	if (x->resp_chunked && c->cl)
		side_writes(c->cl, "0\r\n\r\n");
	x->resp_done = 1;
	px_http_pause(h, 1);
	return 0;
}

static const px_http_cb resp_cb = {resp_on_head, resp_on_body, resp_on_done};

static void start_tunnel(conn *c, const char *rest, size_t n);

static void on_up_data(conn *c, const char *data, size_t n)
{
	exch *x = &c->x;
	if (c->state == C_TUNNEL) {
		x->bytes_in += n;
		side_write(c->cl, data, n);
		return;
	}
	if (!x->active) {
		/* bytes from an idle upstream: it is not speaking HTTP to us any more */
		side_close(c->up);
		return;
	}
	size_t used = px_http_feed(&c->resp, data, n);
	if (c->closing)
		return;
	if (x->status == 101 && x->upgrade) {
		start_tunnel(c, data + used, n - used);
		return;
	}
	if (x->resp_done) {
		finish_exchange(c);
		return;
	}
	if (used != n || px_http_error(&c->resp)) {
		if (x->status == 0)
			upstream_failed(c, 502, "the upstream sent a malformed response: %s",
					px_http_error(&c->resp) ? px_http_error(&c->resp) : "extra bytes");
		else
			conn_close(c);
	}
}

/* The request parser stopped at the head's last byte: let it finish the message (a
 * CONNECT has no body), so that what follows in c->in is the tunnel's. */
static void finish_head(conn *c)
{
	px_http_pause(&c->req, 0);
	size_t used = px_http_feed(&c->req, c->in.data ? c->in.data : "", c->in.len);
	px_buf_consume(&c->in, used);
}

static void start_tunnel(conn *c, const char *rest, size_t n)
{
	exch *x = &c->x;
	c->state = C_TUNNEL;
	if (x->kind == K_CONNECT)
		x->kind = K_TUNNEL;
	c->tunnel_t0 = fdr_now_ms();
	if (x->kind == K_TUNNEL)
		finish_head(c);
	if (n) {
		x->bytes_in += n;
		side_write(c->cl, rest, n);
	}
	/* client bytes that followed the request head go upstream */
	if (c->in.len) {
		x->bytes_out += c->in.len;
		side_write(c->up, c->in.data, c->in.len);
		c->in.len = 0;
	}
	c->head_ready = c->msg_done = 0;
	update_reading(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	conn *c = req->data;
	(void)status;
	free(req);
	conn_unref(c);
}

static void on_eof(side *s)
{
	conn *c = s->c;
	s->eof = 1;
	if (s->reading) {
		uv_read_stop(&s->u.s);
		s->reading = 0;
	}
	if (c->state == C_TUNNEL) {
		side *o = s == c->cl ? c->up : c->cl;
		if (!o || o->eof) {
			conn_close(c);
			return;
		}
		if (o->ssl) {
			SSL_shutdown(o->ssl);
			flush_tls(o);
		} else if (!o->shut && o->inited) {
			uv_shutdown_t *sr = malloc(sizeof *sr);
			if (sr) {
				sr->data = c;
				c->refs++;
				o->shut = 1;
				if (uv_shutdown(sr, &o->u.s, on_shutdown) < 0) {
					free(sr);
					c->refs--;
				}
			}
		}
		return;
	}
	if (s == c->up) {
		exch *x = &c->x;
		if (x->active && !x->resp_done) {
			px_http_feed(&c->resp, NULL, 0); /* the end of a body delimited by close */
			if (x->resp_done) {
				finish_exchange(c);
				return;
			}
			if (x->status == 0)
				upstream_failed(c, 502, "the upstream closed the connection without a response");
			else
				conn_close(c);
			return;
		}
		side_close(s);
		return;
	}
	/* the client is done sending */
	if (!c->x.active)
		conn_close(c);
}

/* ------------------------------------------------------------------ requests */

/* Push the request as plain data for on_request. */
static void push_request(lua_State *L, conn *c, const char *query, size_t qlen)
{
	exch *x = &c->x;
	px_http *r = &c->req;
	lua_createtable(L, 0, 10);
	set_str(L, "sandbox", c->sb->name);
	set_str(L, "method", x->method);
	set_str(L, "scheme", x->up_tls ? "https" : "http");
	set_str(L, "host", x->host);
	set_int(L, "port", x->port);
	set_str(L, "path", x->path);
	lua_pushlstring(L, query ? query : "", query ? qlen : 0);
	lua_setfield(L, -2, "query");
	lua_createtable(L, 0, r->nh);
	for (int i = 0; i < r->nh; i++) {
		char name[256];
		size_t nl = r->h[i].namelen < sizeof name - 1 ? r->h[i].namelen : sizeof name - 1;
		for (size_t k = 0; k < nl; k++) {
			char ch = px_http_str(r, r->h[i].name)[k];
			name[k] = ch >= 'A' && ch <= 'Z' ? ch + 32 : ch;
		}
		name[nl] = 0;
		if (lua_getfield(L, -1, name) == LUA_TSTRING) {
			lua_pushstring(L, ", ");
			lua_pushlstring(L, px_http_str(r, r->h[i].value), r->h[i].valuelen);
			lua_concat(L, 3);
		} else {
			lua_pop(L, 1);
			lua_pushlstring(L, px_http_str(r, r->h[i].value), r->h[i].valuelen);
		}
		lua_setfield(L, -2, name);
	}
	lua_setfield(L, -2, "headers");
	if (x->buffering) {
		lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
		lua_setfield(L, -2, "body");
	}
}

/* Ask the policy's on_request (in its restricted VM, through proxy.lua). */
static void run_hook(conn *c)
{
	exch *x = &c->x;
	engine *e = c->e;
	lua_State *L = e->L;
	const l7rule *r = &c->pol->rules[x->hook_rule];
	const char *target = px_http_str(&c->req, c->req.url);
	const char *q = memchr(target, '?', c->req.urllen);
	lua_pushstring(L, c->sb->name);
	push_request(L, c, q ? q + 1 : NULL, q ? c->req.urllen - (size_t)(q + 1 - target) : 0);
	call_lua(e, e->hook_ref, 2, 2);
	const char *verdict_s = lua_tostring(L, -2);
	const char *reason = lua_tostring(L, -1);
	if (verdict_s && !strcmp(verdict_s, "allow")) {
		x->v.action = x->v.action == ACT_DENY ? ACT_TUNNEL : x->v.action;
		snprintf(x->v.rule, sizeof x->v.rule, "%s (on_request)", r->host.src);
		snprintf(x->v.reason, sizeof x->v.reason, "%s", reason ? reason : "allowed by on_request");
	} else {
		char how[400];
		snprintf(how, sizeof how, "change the policy's on_request (rule %s)", r->host.src);
		deny(&x->v, 403, r->host.src, how, "%s",
		     reason ? reason : "denied by the policy's on_request");
		snprintf(x->v.rule, sizeof x->v.rule, "%s (on_request)", r->host.src);
	}
	lua_pop(L, 2);
}


/* ------------------------------------------------------------------ guards */

/* A guard is trusted Lua (lua/foundry/guards.lua: git smart HTTP, the GitHub API) that
 * decides a request with its whole body and may take its time (it runs git on the host).
 * The engine asks guard_want(name, {method=, host=, port=, path=, query=}) whether it wants
 * a request: false, or the number of body bytes it reads (nil - an error - refuses it). The body is buffered,
 * then guard(name, req, done) is called; done(verdict) may come later, from any task,
 * exactly once (a ticket dropped without a verdict answers 502). A verdict forwards the
 * request - {action="forward", remove_headers={...}, filter=bool, rule=, reason=} - or
 * answers it - {action="respond", status=, headers={}, body=, decision="deny"|"allow",
 * rule=, reason=}. With `filter`, the response is held whole and guard_response(name,
 * req, {status=, headers=, body=}) returns the one the client gets. Verdicts are applied
 * from a timer callback, never inside the task that gives them. */

#define TICKET_MT "foundry.proxy.GuardTicket"
#define GUARD_RESP_MAX (32u << 20)

typedef struct {
	uv_timer_t timer;
	conn *c;
	int ok, respond, deny, filter, status;
	px_buf head;   /* "Name: value\r\n" lines */
	px_buf body;
	px_buf remove; /* names of headers to remove, each NUL-terminated */
	char rule[160], reason[320];
} guard_verdict;

typedef struct {
	conn *c;
	int used;
} guard_ticket;

/* -1: not wanted, -2: the guard failed, else the body bytes it reads. */
static long long guard_wants(conn *c, const char *query, size_t qlen)
{
	engine *e = c->e;
	if (e->guard_want_ref == LUA_NOREF)
		return -1;
	lua_State *L = e->L;
	exch *x = &c->x;
	/* only what the question needs: this runs for every request a policy allowed */
	lua_pushstring(L, c->sb->name);
	lua_createtable(L, 0, 5);
	set_str(L, "method", x->method);
	set_str(L, "host", x->host);
	set_int(L, "port", x->port);
	set_str(L, "path", x->path);
	lua_pushlstring(L, query ? query : "", query ? qlen : 0);
	lua_setfield(L, -2, "query");
	call_lua(e, e->guard_want_ref, 2, 1);
	long long n = -2;
	if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
		n = -1;
	else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0)
		n = (long long)lua_tointeger(L, -1);
	lua_pop(L, 1);
	return n;
}

static int clean_header(const char *s)
{
	for (; *s; s++)
		if (*s == '\r' || *s == '\n')
			return 0;
	return 1;
}

/* Copy the verdict at idx into g (the Lua values stay with Lua). */
static void guard_read(lua_State *L, int idx, guard_verdict *g)
{
	g->status = 200;
	if (!lua_istable(L, idx)) {
		snprintf(g->reason, sizeof g->reason, "the guard gave no verdict");
		return;
	}
	lua_getfield(L, idx, "action");
	const char *a = lua_tostring(L, -1);
	g->ok = a && (!strcmp(a, "forward") || !strcmp(a, "respond"));
	g->respond = a && !strcmp(a, "respond");
	lua_pop(L, 1);
	lua_getfield(L, idx, "decision");
	const char *d = lua_tostring(L, -1);
	g->deny = d ? !strcmp(d, "deny") : g->respond;
	lua_pop(L, 1);
	lua_getfield(L, idx, "status");
	if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 100 && lua_tointeger(L, -1) <= 599)
		g->status = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, idx, "filter");
	g->filter = lua_toboolean(L, -1);
	lua_pop(L, 1);
	const char *keys[] = {"rule", "reason"};
	char *outs[] = {g->rule, g->reason};
	size_t sizes[] = {sizeof g->rule, sizeof g->reason};
	for (int i = 0; i < 2; i++) {
		lua_getfield(L, idx, keys[i]);
		if (lua_type(L, -1) == LUA_TSTRING)
			snprintf(outs[i], sizes[i], "%s", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_getfield(L, idx, "body");
	size_t bl;
	const char *b = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &bl) : NULL;
	if (b)
		px_buf_add(&g->body, b, bl);
	lua_pop(L, 1);
	lua_getfield(L, idx, "headers");
	if (lua_istable(L, -1)) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
				const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
				if (clean_header(k) && clean_header(v) && !is_hop(k, strlen(k)) &&
				    !px_ieq(k, strlen(k), "content-length"))
					px_buf_printf(&g->head, "%s: %s\r\n", k, v);
			}
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	lua_getfield(L, idx, "remove_headers");
	if (lua_istable(L, -1)) {
		for (lua_Integer i = 1;; i++) {
			if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
				lua_pop(L, 1);
				break;
			}
			px_buf_adds(&g->remove, lua_tostring(L, -1));
			px_buf_add(&g->remove, "", 1);
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
}

/* Remove the header lines named `name` from a request head being built. */
static void head_remove(px_buf *h, const char *name)
{
	size_t nl = strlen(name), i = 0;
	char *d = h->data;
	while (i + 1 < h->len && !(d[i] == '\r' && d[i + 1] == '\n'))
		i++;
	i += 2;
	while (i < h->len) {
		size_t e = i;
		while (e + 1 < h->len && !(d[e] == '\r' && d[e + 1] == '\n'))
			e++;
		size_t end = e + 2 <= h->len ? e + 2 : h->len;
		if (e - i > nl && d[i + nl] == ':' && px_ieq(d + i, nl, name)) {
			memmove(d + i, d + end, h->len - end);
			h->len -= end - i;
			continue;
		}
		i = end;
	}
}

/* Answer with the guard's own response; the exchange ends (audited). */
static void guard_respond(conn *c, guard_verdict *g)
{
	exch *x = &c->x;
	int keep = c->state == C_HTTP && !x->head_sent && x->client_keepalive &&
		   (x->req_done || (!c->req.has_length && !c->req.chunked) ||
		    (c->req.has_length && c->req.length == 0));
	px_buf b = {0};
	px_buf_printf(&b, "HTTP/1.1 %d %s\r\n", g->status, status_text(g->status));
	if (g->head.len)
		px_buf_add(&b, g->head.data, g->head.len);
	px_buf_printf(&b, "Content-Length: %zu\r\nX-Foundry-Proxy: 1\r\n%s\r\n", g->body.len,
		      keep ? "" : "Connection: close\r\n");
	if (g->body.len)
		px_buf_add(&b, g->body.data, g->body.len);
	if (c->cl)
		side_write(c->cl, b.data, b.len);
	px_buf_free(&b, 0);
	x->status = g->status;
	x->bytes_in += g->body.len;
	if (x->active) {
		audit(c);
		x->active = 0;
	}
	if (!keep) {
		conn_end(c);
		return;
	}
	c->head_ready = 0;
	c->msg_done = x->req_done ? 0 : c->msg_done;
	px_http_pause(&c->req, 0);
	process_client(c);
}

static void guard_apply(conn *c, guard_verdict *g)
{
	exch *x = &c->x;
	x->guard = 3;
	if (g->rule[0])
		snprintf(x->v.rule, sizeof x->v.rule, "%s", g->rule);
	if (g->reason[0])
		snprintf(x->v.reason, sizeof x->v.reason, "%s", g->reason);
	if (!g->ok) {
		deny(&x->v, 502, "guard", NULL, "%s", g->reason[0] ? g->reason : "the proxy's guard failed");
		respond_denied(c);
		if (!c->closing)
			process_client(c);
		return;
	}
	if (g->respond) {
		x->decided = 1;
		if (g->deny) {
			x->v.action = ACT_DENY;
			x->v.status = g->status;
			if (!g->rule[0])
				snprintf(x->v.rule, sizeof x->v.rule, "guard");
		}
		guard_respond(c, g);
		return;
	}
	for (size_t i = 0; i < g->remove.len; i += strlen(g->remove.data + i) + 1)
		head_remove(&x->head, g->remove.data + i);
	x->guard_filter = g->filter;
	connect_upstream(c);
}

static void on_guard_timer_closed(uv_handle_t *h)
{
	guard_verdict *g = h->data;
	px_buf_free(&g->head, 1);
	px_buf_free(&g->body, 1);
	px_buf_free(&g->remove, 1);
	free(g);
}

static void on_guard_timer(uv_timer_t *t)
{
	guard_verdict *g = t->data;
	conn *c = g->c;
	if (!c->closing && c->x.active && c->x.guard == 2)
		guard_apply(c, g);
	conn_unref(c);
	uv_close((uv_handle_t *)&g->timer, on_guard_timer_closed);
}

/* Apply g on the next turn of the loop; takes over the ticket's reference to c. */
static void guard_schedule(conn *c, guard_verdict *g)
{
	g->c = c;
	uv_timer_init(c->e->loop, &g->timer);
	g->timer.data = g;
	uv_timer_start(&g->timer, on_guard_timer, 0, 0);
}

/* done(verdict): the closure a guard is given. */
static int l_guard_done(lua_State *L)
{
	guard_ticket *t = luaL_checkudata(L, lua_upvalueindex(1), TICKET_MT);
	if (t->used)
		return luaL_error(L, "proxy guard: a verdict was given already");
	t->used = 1;
	guard_verdict *g = calloc(1, sizeof *g);
	if (!g) {
		conn_close(t->c);
		conn_unref(t->c);
		return luaL_error(L, "proxy guard: out of memory");
	}
	guard_read(L, 1, g);
	guard_schedule(t->c, g);
	return 0;
}

static int ticket_gc(lua_State *L)
{
	guard_ticket *t = luaL_checkudata(L, 1, TICKET_MT);
	if (t->used)
		return 0;
	t->used = 1;
	guard_verdict *g = t->c->closing ? NULL : calloc(1, sizeof *g);
	if (!g) {
		conn_unref(t->c);
		return 0;
	}
	snprintf(g->reason, sizeof g->reason, "the proxy's guard dropped the request without a verdict");
	guard_schedule(t->c, g);
	return 0;
}

/* The (buffered) request is complete: hand it to the guard and wait for its verdict. */
static void guard_start(conn *c)
{
	exch *x = &c->x;
	engine *e = c->e;
	lua_State *L = e->L;
	const char *target = px_http_str(&c->req, c->req.url);
	const char *q = memchr(target, '?', c->req.urllen);
	x->guard = 2;
	c->refs++; /* the ticket's */
	lua_pushstring(L, c->sb->name);
	push_request(L, c, q ? q + 1 : NULL, q ? c->req.urllen - (size_t)(q + 1 - target) : 0);
	guard_ticket *t = lua_newuserdatauv(L, sizeof *t, 0);
	t->c = c;
	t->used = 0;
	luaL_setmetatable(L, TICKET_MT);
	lua_pushcclosure(L, l_guard_done, 1);
	call_lua(e, e->guard_ref, 3, 0);
}

static int guard_hold_body(conn *c, const char *data, size_t n)
{
	exch *x = &c->x;
	if (x->resp_body.len + n > GUARD_RESP_MAX)
		return -1;
	px_buf_add(&x->resp_body, data, n);
	return 0;
}

/* The held response is complete: the guard gives the one the client gets. */
static void guard_filter_done(conn *c)
{
	exch *x = &c->x;
	engine *e = c->e;
	lua_State *L = e->L;
	const char *target = px_http_str(&c->req, c->req.url);
	const char *q = memchr(target, '?', c->req.urllen);
	lua_pushstring(L, c->sb->name);
	push_request(L, c, q ? q + 1 : NULL, q ? c->req.urllen - (size_t)(q + 1 - target) : 0);
	lua_createtable(L, 0, 3);
	set_int(L, "status", x->status);
	lua_newtable(L);
	for (size_t i = 0; i < x->resp_head.len;) {
		const char *k = x->resp_head.data + i;
		size_t kl = strlen(k);
		const char *v = k + kl + 1;
		size_t vl = strlen(v);
		i += kl + vl + 2;
		char name[256];
		size_t nl = kl < sizeof name - 1 ? kl : sizeof name - 1;
		for (size_t j = 0; j < nl; j++)
			name[j] = k[j] >= 'A' && k[j] <= 'Z' ? k[j] + 32 : k[j];
		name[nl] = 0;
		lua_pushlstring(L, v, vl);
		lua_setfield(L, -2, name);
	}
	lua_setfield(L, -2, "headers");
	lua_pushlstring(L, x->resp_body.data ? x->resp_body.data : "", x->resp_body.len);
	lua_setfield(L, -2, "body");
	px_buf_free(&x->resp_body, 1);
	px_buf_free(&x->resp_head, 1);
	call_lua(e, e->guard_resp_ref, 3, 1);
	guard_verdict g = {0};
	if (lua_istable(L, -1)) {
		guard_read(L, lua_gettop(L), &g);
	} else {
		g.status = 502;
		px_buf_adds(&g.body, "the proxy's guard could not check the upstream's response\n");
		px_buf_adds(&g.head, "Content-Type: text/plain\r\n");
		x->v.action = ACT_DENY;
		snprintf(x->v.rule, sizeof x->v.rule, "guard");
		snprintf(x->v.reason, sizeof x->v.reason, "the guard could not check the response");
	}
	lua_pop(L, 1);
	x->status = g.status;
	x->resp_chunked = 0;
	if (c->cl) {
		px_buf b = {0};
		px_buf_printf(&b, "HTTP/1.1 %d %s\r\n", g.status, status_text(g.status));
		if (g.head.len)
			px_buf_add(&b, g.head.data, g.head.len);
		px_buf_printf(&b, "Content-Length: %zu\r\n%s\r\n", g.body.len,
			      x->resp_close ? "Connection: close\r\n" : "");
		side_write(c->cl, b.data, b.len);
		px_buf_free(&b, 0);
		client_send_body(c, g.body.data ? g.body.data : "", g.body.len, 1);
	}
	px_buf_free(&g.head, 1);
	px_buf_free(&g.body, 1);
	px_buf_free(&g.remove, 1);
}

static int take_token(conn *c)
{
	sandbox *sb = c->sb;
	const limits *l = &c->pol->lim;
	uint64_t now = fdr_now_ms();
	if (l->rate <= 0)
		return 1;
	sb->tokens += (double)(now - sb->tokens_at) * l->rate / 1000.0;
	if (sb->tokens > l->burst)
		sb->tokens = l->burst;
	sb->tokens_at = now;
	if (sb->tokens < 1)
		return 0;
	sb->tokens -= 1;
	return 1;
}

static void handle_hook_event(conn *c);
static void begin_connect(conn *c, const char *authority, size_t n);
static void dispatch_request(conn *c);

/* Send the request head upstream (the upstream is ready) and let the body flow. */
static void up_ready(conn *c)
{
	exch *x = &c->x;
	if (!x->active || x->decided)
		return;
	x->decided = 1;
	if (x->kind == K_CONNECT) {
		/* a tunnel: the upstream is connected */
		side_writes(c->cl, "HTTP/1.1 200 Connection established\r\n\r\n");
		c->e->tunnels++;
		start_tunnel(c, NULL, 0);
		return;
	}
	if (x->buffering) {
		if (x->req_done)
			send_buffered_body(c);
	} else {
		x->head_sent = 1;
		px_buf_adds(&x->head, "\r\n");
		side_write(c->up, x->head.data, x->head.len);
		px_buf_free(&x->head, 1);
	}
	c->head_ready = 0;
	px_http_pause(&c->req, 0);
	if (x->upgrade && !x->req_done) {
		/* the body of an upgrade request is the new protocol: wait for 101 */
	}
	process_client(c);
}

static int req_on_head(px_http *h)
{
	conn *c = h->data;
	c->head_ready = 1;
	px_http_pause(h, 1);
	return 0;
}

static int req_on_body(px_http *h, const char *data, size_t n)
{
	conn *c = h->data;
	exch *x = &c->x;
	x->req_body += n;
	if (x->req_body > c->pol->lim.request_body) {
		deny(&x->v, 413, "limits.request_body", "raise limits.request_body in the policy",
		     "the request body is larger than %llu bytes",
		     (unsigned long long)c->pol->lim.request_body);
		return -1;
	}
	if (x->buffering) {
		if (x->body.len + n > x->body_limit) {
			deny(&x->v, 413, "limits.request_body", "raise the rule's body limit",
			     "the request body is larger than the %zu bytes the policy reads",
			     x->body_limit);
			return -1;
		}
		px_buf_add(&x->body, data, n);
		return 0;
	}
	x->bytes_out += n;
	if (x->req_chunked) {
		char hdr[24];
		int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", n);
		side_write(c->up, hdr, (size_t)hl);
		side_write(c->up, data, n);
		side_write(c->up, "\r\n", 2);
	} else {
		side_write(c->up, data, n);
	}
	return 0;
}

static int req_on_done(px_http *h)
{
	conn *c = h->data;
	exch *x = &c->x;
	x->req_done = 1;
	if (x->req_chunked && !x->buffering)
		side_writes(c->up, "0\r\n\r\n");
	c->msg_done = 1;
	px_http_pause(h, 1);
	return 0;
}

static const px_http_cb req_cb = {req_on_head, req_on_body, req_on_done};

/* The request head is complete: decide. */
static void on_request_head(conn *c)
{
	exch *x = &c->x;
	px_http *r = &c->req;
	px_buf_free(&x->body, 1);
	px_buf_free(&x->head, 1);
	px_buf_free(&x->resp_head, 1);
	px_buf_free(&x->resp_body, 1);
	free(x->path);
	memset(x, 0, sizeof *x);
	x->active = 1;
	x->gateway = -1;
	x->t0 = fdr_now_ms();
	x->client_keepalive = http_should_keep_alive(&r->p);
	snprintf(x->method, sizeof x->method, "%s", http_method_str(r->p.method));
	c->e->requests++;
	c->sb->requests++;
	/* the policy of this exchange: the sandbox's current one */
	if (c->pol != c->sb->pol) {
		policy_unref(c->pol);
		c->pol = c->sb->pol;
		c->pol->refs++;
	}
	const char *target = px_http_str(r, r->url);
	x->path = strdup("");
	if (!take_token(c)) {
		x->kind = K_HTTP;
		deny(&x->v, 429, "limits.rate", "raise limits.rate in the policy",
		     "more than %.0f requests a second", c->pol->lim.rate);
		respond_denied(c);
		return;
	}
	if (r->p.method == HTTP_CONNECT) {
		x->kind = K_CONNECT;
		begin_connect(c, target, r->urllen);
		return;
	}
	dispatch_request(c);
}

static int set_host(conn *c, const char *host, size_t n, int port)
{
	exch *x = &c->x;
	px_ip ip;
	int kind = px_host_canon(host, n, x->host, &ip);
	x->port = port;
	if (kind < 0) {
		snprintf(x->host, sizeof x->host, "%.*s", (int)(n < 200 ? n : 200), host);
		for (char *p = x->host; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				*p = '?';
		deny(&x->v, 400, "host", "use a valid host name",
		     "'%s' is not a valid host name or address", x->host);
		respond_denied(c);
		return -1;
	}
	x->is_ip = kind == PX_HOST_IP;
	return 0;
}

static void begin_connect(conn *c, const char *authority, size_t n)
{
	exch *x = &c->x;
	const char *host;
	size_t hl;
	int port;
	c->in.len += 0;
	if (px_hostport_split(authority, n, &host, &hl, &port, 1) < 0) {
		snprintf(x->host, sizeof x->host, "?");
		deny(&x->v, 400, "host", "CONNECT needs host:port", "bad CONNECT target");
		respond_denied(c);
		return;
	}
	if (set_host(c, host, hl, port) < 0)
		return;
	decide_host(c->pol, x->host, x->port, x->is_ip, &x->v);
	if (x->v.action == ACT_DENY) {
		respond_denied(c);
		return;
	}
	if (x->v.action == ACT_INSPECT) {
		/* terminate TLS here: the inner requests are decided one by one */
		x->decided = 1;
		x->kind = K_INSPECT;
		c->e->inspected++;
		side_writes(c->cl, "HTTP/1.1 200 Connection established\r\n\r\n");
		audit(c);
		x->active = 0;
		c->inspected = 1;
		snprintf(c->ihost, sizeof c->ihost, "%s", x->host);
		c->iport = x->port;
		c->iis_ip = x->is_ip;
		if (side_tls(c->cl, 1, x->host, x->is_ip) < 0) {
			conn_close(c);
			return;
		}
		/* a fresh parser for the inner stream; bytes already read are TLS */
		finish_head(c);
		px_http_free(&c->req);
		px_http_init(&c->req, HTTP_REQUEST, &req_cb, c);
		c->head_ready = c->msg_done = 0;
		if (c->in.len) {
			px_buf early = c->in;
			memset(&c->in, 0, sizeof c->in);
			tls_input(c->cl, early.data, early.len);
			px_buf_free(&early, 1);
		}
		return;
	}
	x->up_tls = 0;
	connect_upstream(c);
}

/* Origin-form requests to the proxy itself: gateways and hook events. */
static int local_request(conn *c, const char *path, size_t pathlen)
{
	exch *x = &c->x;
	policy *p = c->pol;
	if (pathlen >= 14 && !memcmp(path, "/_foundry/hook", 14) &&
	    (pathlen == 14 || path[14] == '?')) {
		x->kind = K_HOOK;
		snprintf(x->host, sizeof x->host, "foundry");
		free(x->path);
		x->path = strdup("/_foundry/hook");
		handle_hook_event(c);
		return 1;
	}
	if (pathlen > 5 && !memcmp(path, "/_gw/", 5)) {
		const char *name = path + 5;
		const char *slash = memchr(name, '/', pathlen - 5);
		size_t nl = slash ? (size_t)(slash - name) : pathlen - 5;
		x->kind = K_GATEWAY;
		for (int i = 0; i < p->ngws; i++)
			if (strlen(p->gws[i].name) == nl && !memcmp(p->gws[i].name, name, nl))
				x->gateway = i;
		if (x->gateway < 0) {
			snprintf(x->host, sizeof x->host, "%.*s", (int)(nl < 100 ? nl : 100), name);
			deny(&x->v, 404, "gateways", "add the provider to the policy's gateways",
			     "no gateway named '%s' in the sandbox's policy", x->host);
			respond_denied(c);
			return 1;
		}
		const gateway *g = &p->gws[x->gateway];
		snprintf(x->host, sizeof x->host, "%s", g->host);
		x->port = g->port;
		x->up_tls = 1;
		const char *rest = slash ? slash : "/";
		size_t restlen = slash ? pathlen - (size_t)(slash - path) : 1;
		const char *q = memchr(rest, '?', restlen);
		free(x->path);
		x->path = strndup(rest, q ? (size_t)(q - rest) : restlen);
		const cred *cr = g->cred >= 0 ? &p->creds[g->cred] : NULL;
		if (cr && !cr->secret) {
			char how[300];
			snprintf(how, sizeof how, "store the secret: foundry vault set %s", cr->secret_name);
			deny(&x->v, 503, g->name, how, "the gateway '%s' has no credential (%s is not set)",
			     g->name, cr->secret_name ? cr->secret_name : "?");
			respond_denied(c);
			return 1;
		}
		snprintf(x->v.rule, sizeof x->v.rule, "gateways.%s", g->name);
		snprintf(x->v.reason, sizeof x->v.reason, "gateway to %s", g->host);
		x->v.action = ACT_INSPECT;
		return 0;
	}
	snprintf(x->host, sizeof x->host, "proxy");
	deny(&x->v, 400, "proxy", "send requests through the proxy (HTTP_PROXY) or to a gateway",
	     "this is a proxy: use an absolute URL, CONNECT, /_gw/<provider>/ or /_foundry/hook");
	respond_denied(c);
	return 1;
}

static void dispatch_request(conn *c)
{
	exch *x = &c->x;
	px_http *r = &c->req;
	const char *target = px_http_str(r, r->url);
	size_t tlen = r->urllen;
	px_url u;
	if (px_url_split(target, tlen, 0, &u) < 0) {
		snprintf(x->host, sizeof x->host, "?");
		deny(&x->v, 400, "proxy", "send a valid request target", "bad request target");
		respond_denied(c);
		return;
	}
	x->upgrade = r->p.upgrade && r->p.method != HTTP_CONNECT;
	x->head_req = r->p.method == HTTP_HEAD;
	const char *path = u.path, *query = u.query;
	size_t pathlen = u.pathlen, querylen = u.querylen;
	if (c->inspected) {
		if (u.absolute) {
			deny(&x->v, 400, "proxy", NULL, "absolute URL inside a tunnel");
			respond_denied(c);
			return;
		}
		x->kind = K_INSPECT;
		snprintf(x->host, sizeof x->host, "%s", c->ihost);
		x->port = c->iport;
		x->is_ip = c->iis_ip;
		x->up_tls = 1;
		/* The Host header must name the host the tunnel was opened to. */
		size_t hl;
		const char *hh = px_http_header(r, "host", &hl);
		if (hh) {
			const char *hn;
			size_t hnl;
			int hp;
			char canon[PX_HOST_MAX];
			if (px_hostport_split(hh, hl, &hn, &hnl, &hp, 0) < 0 ||
			    px_host_canon(hn, hnl, canon, NULL) < 0 || strcmp(canon, x->host) != 0) {
				deny(&x->v, 403, "host", "send the request to the host the tunnel was opened for",
				     "the Host header does not match the tunnel's host %s", x->host);
				respond_denied(c);
				return;
			}
		}
		free(x->path);
		x->path = strndup(path, pathlen);
		decide_host(c->pol, x->host, x->port, x->is_ip, &x->v);
	} else if (!u.absolute) {
		int local_host = 1;
		if (local_request(c, path, pathlen + (query ? querylen + 1 : 0)) || !local_host)
			return;
		/* a gateway: x is filled in, path rewritten */
		size_t restoff = 5 + strlen(c->pol->gws[x->gateway].name);
		path = u.path + restoff;
		pathlen = u.pathlen - restoff;
		if (pathlen == 0) {
			path = "/";
			pathlen = 1;
		}
	} else {
		int https = px_ieq(u.scheme, u.schemelen, "https");
		if (!https && !px_ieq(u.scheme, u.schemelen, "http")) {
			deny(&x->v, 400, "proxy", NULL, "only http:// URLs (use CONNECT for https)");
			respond_denied(c);
			return;
		}
		free(x->path);
		x->path = strndup(path, pathlen);
		if (set_host(c, u.host, u.hostlen, u.port ? u.port : https ? 443 : 80) < 0)
			return;
		/* the proxy's own endpoints reached through HTTP_PROXY */
		if ((!strcmp(x->host, "127.0.0.1") || !strcmp(x->host, "localhost")) &&
		    ((pathlen >= 5 && !memcmp(path, "/_gw/", 5)) ||
		     (pathlen >= 14 && !memcmp(path, "/_foundry/hook", 14)))) {
			memset(&x->v, 0, sizeof x->v);
			if (local_request(c, path, pathlen))
				return;
			size_t restoff = 5 + strlen(c->pol->gws[x->gateway].name);
			path = path + restoff;
			pathlen = pathlen - restoff;
			if (pathlen == 0) {
				path = "/";
				pathlen = 1;
			}
		} else {
			x->kind = K_HTTP;
			x->up_tls = https;
			decide_host(c->pol, x->host, x->port, x->is_ip, &x->v);
		}
	}
	if (x->v.action == ACT_DENY) {
		respond_denied(c);
		return;
	}
	/* L7 rules */
	x->hook_rule = decide_request(c->pol, x->host, x->port, x->method, x->path,
				      strlen(x->path), &x->v);
	if (x->v.action == ACT_DENY) {
		respond_denied(c);
		return;
	}
	if (c->req.has_length && c->req.length > c->pol->lim.request_body) {
		deny(&x->v, 413, "limits.request_body", "raise limits.request_body in the policy",
		     "the request body (%llu bytes) is larger than %llu bytes",
		     (unsigned long long)c->req.length, (unsigned long long)c->pol->lim.request_body);
		respond_denied(c);
		return;
	}
	long long gwant = x->kind == K_HOOK ? -1 : guard_wants(c, query, query ? querylen : 0);
	if (gwant == -2) {
		deny(&x->v, 502, "guard", NULL, "the proxy's guard failed: the request is refused");
		respond_denied(c);
		return;
	}
	x->guard = gwant >= 0;
	int json_swap = 0;
	for (int k = 0; k < c->pol->ncreds; k++)
		json_swap |= c->pol->creds[k].json && c->pol->creds[k].placeholder &&
			     cred_applies(&c->pol->creds[k], x);
	if (x->hook_rule >= 0 || json_swap) {
		size_t want = x->hook_rule >= 0 ? c->pol->rules[x->hook_rule].body : 0;
		if (json_swap && want < (8u << 20))
			want = 8u << 20;
		if (want && !x->upgrade && (c->req.chunked || (c->req.has_length && c->req.length))) {
			x->buffering = 1;
			x->body_limit = want;
		}
	}
	if (x->guard && !x->upgrade && (c->req.chunked || (c->req.has_length && c->req.length))) {
		x->buffering = 1;
		if (x->body_limit < (size_t)gwant)
			x->body_limit = (size_t)gwant;
	}
	build_request_head(c, path, pathlen, query, querylen);
	if (x->hook_rule >= 0 && !x->buffering) {
		run_hook(c);
		if (x->v.action == ACT_DENY) {
			respond_denied(c);
			return;
		}
	}
	if (x->buffering) {
		/* read the body first; the hook and the upstream come after */
		c->head_ready = 0;
		px_http_pause(&c->req, 0);
		return;
	}
	if (x->guard) {
		guard_start(c);
		return;
	}
	connect_upstream(c);
}

/* A buffered body is complete: run the hook if one waits, then go upstream. */
static void body_complete(conn *c)
{
	exch *x = &c->x;
	x->body_checked = 1;
	if (x->hook_rule >= 0) {
		run_hook(c);
		if (x->v.action == ACT_DENY) {
			respond_denied(c);
			return;
		}
	}
	if (x->guard) {
		guard_start(c);
		return;
	}
	connect_upstream(c);
}

/* ---- hook events ---- */

static int hex_eq(const char *hex, size_t n, const unsigned char *mac, size_t maclen)
{
	static const char digits[] = "0123456789abcdef";
	if (n != maclen * 2)
		return 0;
	unsigned diff = 0;
	for (size_t i = 0; i < maclen; i++) {
		char a = hex[2 * i], b = hex[2 * i + 1];
		a = a >= 'A' && a <= 'F' ? a + 32 : a;
		b = b >= 'A' && b <= 'F' ? b + 32 : b;
		diff |= (unsigned)(a ^ digits[mac[i] >> 4]) | (unsigned)(b ^ digits[mac[i] & 15]);
	}
	return diff == 0;
}

static void handle_hook_event(conn *c)
{
	exch *x = &c->x;
	snprintf(x->v.rule, sizeof x->v.rule, "hook");
	if (c->req.p.method != HTTP_POST) {
		deny(&x->v, 405, "hook", NULL, "hook events are POSTed");
		respond_denied(c);
		return;
	}
	if (c->req.chunked || (c->req.has_length && c->req.length > HOOK_BODY_MAX)) {
		deny(&x->v, 413, "hook", NULL, "hook events are at most 1 MiB, with a Content-Length");
		respond_denied(c);
		return;
	}
	x->buffering = 1;
	x->body_limit = HOOK_BODY_MAX;
	x->decided = 1;
	c->head_ready = 0;
	px_http_pause(&c->req, 0);
	/* finished in hook_body_complete once the body is in */
}

static void hook_body_complete(conn *c)
{
	exch *x = &c->x;
	sandbox *sb = c->sb;
	size_t tl;
	const char *tok = px_http_header(&c->req, "x-foundry-token", &tl);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	int ok = 0;
	if (tok && sb->hook_token &&
	    HMAC(EVP_sha256(), sb->hook_token, (int)sb->hook_tokenlen,
		 (const unsigned char *)(x->body.data ? x->body.data : ""), x->body.len, mac, &maclen))
		ok = hex_eq(tok, tl, mac, maclen);
	if (!ok) {
		deny(&x->v, 403, "hook", NULL, "the hook event's X-Foundry-Token is missing or wrong");
		respond_denied(c);
		return;
	}
	lua_State *L = c->e->L;
	lua_pushstring(L, sb->name);
	lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
	call_lua(c->e, c->e->event_ref, 2, 1);
	int accepted = lua_toboolean(L, -1);
	lua_pop(L, 1);
	px_buf_free(&x->body, 1);
	x->buffering = 0;
	x->v.action = ACT_TUNNEL;
	snprintf(x->v.reason, sizeof x->v.reason, accepted ? "event delivered" : "event not valid JSON");
	if (!accepted) {
		x->v.action = ACT_DENY;
		respond_error(c, 400, "the hook event is not a JSON object");
		return;
	}
	/* the daemon audits the event it received (with its name): one row, not two */
	x->active = 0;
	respond_json(c, 200, "{\"ok\":true}\n", x->client_keepalive);
	if (x->client_keepalive && !c->closing) {
		c->msg_done = 0;
		px_http_pause(&c->req, 0);
	}
}

/* The exchange is over (response complete): audit, then reuse or close. */
static void finish_exchange(conn *c)
{
	exch *x = &c->x;
	int close_client = x->resp_close;
	audit(c);
	x->active = 0;
	if (close_client || !x->req_done) {
		conn_close(c);
		return;
	}
	if (c->up && !http_should_keep_alive(&c->resp.p))
		side_close(c->up);
	if (c->up) {
		/* ready for the next response on this upstream */
		px_http_pause(&c->resp, 0);
	}
	c->msg_done = 0;
	c->head_ready = 0;
	px_http_pause(&c->req, 0);
	process_client(c);
}

/* Feed buffered client bytes to the request parser until it pauses. */
static void process_client(conn *c)
{
	while (!c->closing && c->state == C_HTTP && c->cl) {
		exch *x = &c->x;
		if (c->head_ready || (c->msg_done && x->active))
			break;
		if (c->msg_done && !x->active) {
			c->msg_done = 0;
			px_http_pause(&c->req, 0);
		}
		if (!c->in.len)
			break;
		size_t used = px_http_feed(&c->req, c->in.data, c->in.len);
		px_buf_consume(&c->in, used);
		if (c->closing)
			return;
		const char *err = px_http_error(&c->req);
		if (err) {
			if (x->active && x->v.action == ACT_DENY && x->v.status) {
				/* a body limit hit while streaming */
				if (c->up && x->decided) {
					audit(c);
					x->active = 0;
					conn_close(c);
				} else {
					respond_denied(c);
					conn_close(c);
				}
				return;
			}
			x->active = 1;
			x->kind = K_HTTP;
			snprintf(x->host, sizeof x->host, "?");
			deny(&x->v, c->req.too_big ? 431 : 400, "proxy", NULL, "malformed request: %s", err);
			respond_denied(c);
			conn_close(c);
			return;
		}
		if (c->head_ready) {
			if (c->req.p.upgrade && c->req.p.method == HTTP_CONNECT) {
				/* bytes after a CONNECT head stay in c->in for the tunnel */
			}
			on_request_head(c);
			continue;
		}
		if (c->msg_done && x->active) {
			if (x->kind == K_HOOK && x->buffering) {
				hook_body_complete(c);
				continue;
			}
			if (x->buffering && !x->decided && !x->body_checked) {
				body_complete(c);
				break;
			}
			if (x->buffering && x->decided)
				send_buffered_body(c);
			break;
		}
		if (used == 0)
			break;
	}
	if (!c->closing)
		update_reading(c);
}

static void on_client_data(conn *c, const char *data, size_t n)
{
	if (c->state == C_TUNNEL) {
		c->x.bytes_out += n;
		side_write(c->up, data, n);
		return;
	}
	px_buf_add(&c->in, data, n);
	if (c->in.len > 8u << 20 && (c->head_ready || c->msg_done)) {
		/* a client that keeps sending while we wait for upstream: it waits too */
		update_reading(c);
	}
	process_client(c);
}

/* ------------------------------------------------------------------ listeners */

static void on_connection(uv_stream_t *server, int status)
{
	listener *l = server->data;
	sandbox *sb = l->sb;
	engine *e = sb->e;
	if (status < 0 || sb->removed)
		return;
	conn *c = calloc(1, sizeof *c);
	if (!c)
		return;
	c->e = e;
	c->sb = sb;
	sb->refs++;
	c->pol = sb->pol;
	c->pol->refs++;
	c->next = sb->conns;
	if (sb->conns)
		sb->conns->prev = c;
	sb->conns = c;
	sb->nconns++;
	e->nconns++;
	e->conns_total++;
	c->refs = 1; /* the timer */
	uv_timer_init(e->loop, &c->timer);
	c->timer.data = c;
	c->last_active = fdr_now_ms();
	px_http_init(&c->req, HTTP_REQUEST, &req_cb, c);
	px_http_init(&c->resp, HTTP_RESPONSE, &resp_cb, c);
	side *s = side_new(c, 0);
	if (!s) {
		conn_close(c);
		return;
	}
	c->cl = s;
	if (l->is_pipe)
		uv_pipe_init(e->loop, &s->u.pipe, 0);
	else
		uv_tcp_init(e->loop, &s->u.tcp);
	s->inited = 1;
	s->u.h.data = s;
	s->hs_done = 1;
	if (uv_accept(server, &s->u.s) != 0) {
		conn_close(c);
		return;
	}
	if (!l->is_pipe)
		uv_tcp_nodelay(&s->u.tcp, 1);
	if (sb->nconns > c->pol->lim.connections) {
		exch *x = &c->x;
		x->active = 1;
		x->t0 = fdr_now_ms();
		snprintf(x->host, sizeof x->host, "-");
		x->path = strdup("");
		deny(&x->v, 503, "limits.connections", "raise limits.connections in the policy",
		     "more than %d connections open", c->pol->lim.connections);
		respond_denied(c);
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timer, 1000, 0);
	update_reading(c);
}

static void on_listener_closed(uv_handle_t *h)
{
	listener *l = h->data;
	sandbox *sb = l->sb;
	free(l);
	sandbox_unref(sb);
}

static void engine_unref(engine *e);

static void sandbox_free(sandbox *sb)
{
	engine *e = sb->e;
	policy_unref(sb->pol);
	for (breaker *b = sb->breakers, *n; b; b = n) {
		n = b->next;
		free(b);
	}
	if (sb->hook_token) {
		fdr_wipe(sb->hook_token, sb->hook_tokenlen);
		free(sb->hook_token);
	}
	free(sb->name);
	free(sb->socket_path);
	free(sb);
	engine_unref(e);
}

static void sandbox_unref(sandbox *sb)
{
	if (--sb->refs == 0)
		sandbox_free(sb);
}

static void sandbox_remove(engine *e, sandbox *sb)
{
	if (sb->removed)
		return;
	sb->removed = 1;
	for (sandbox **pp = &e->sandboxes; *pp; pp = &(*pp)->next)
		if (*pp == sb) {
			*pp = sb->next;
			break;
		}
	for (listener *l = sb->listeners, *n; l; l = n) {
		n = l->next;
		uv_close(&l->u.h, on_listener_closed);
	}
	sb->listeners = NULL;
	if (sb->socket_path) {
		struct stat st;
		if (lstat(sb->socket_path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(sb->socket_path);
	}
	for (conn *c = sb->conns, *n; c; c = n) {
		n = c->next;
		conn_close(c);
	}
	sandbox_unref(sb);
}

/* ------------------------------------------------------------------ the Lua API */

typedef struct engine_ud {
	engine *e;
} engine_ud;

static engine *check_engine(lua_State *L)
{
	engine_ud *u = luaL_checkudata(L, 1, ENGINE_MT);
	if (!u->e || u->e->closed)
		luaL_error(L, "proxy engine: used after close");
	return u->e;
}

static sandbox *find_sandbox(engine *e, const char *name)
{
	for (sandbox *sb = e->sandboxes; sb; sb = sb->next)
		if (!strcmp(sb->name, name))
			return sb;
	return NULL;
}

static void engine_shutdown(engine *e)
{
	if (e->closed)
		return;
	e->closed = 1;
	while (e->sandboxes)
		sandbox_remove(e, e->sandboxes);
	lua_State *L = e->L;
	luaL_unref(L, LUA_REGISTRYINDEX, e->audit_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, e->event_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, e->hook_ref);
	e->audit_ref = e->event_ref = e->hook_ref = LUA_NOREF;
	luaL_unref(L, LUA_REGISTRYINDEX, e->guard_want_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, e->guard_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, e->guard_resp_ref);
	e->guard_want_ref = e->guard_ref = e->guard_resp_ref = LUA_NOREF;
}

static void engine_free(engine *e)
{
	if (e->ud)
		e->ud->e = NULL;
	SSL_CTX_free(e->client_ctx);
	px_ca_free(e->ca);
	free(e);
}

static void engine_unref(engine *e)
{
	if (--e->refs == 0)
		engine_free(e);
}

/* The host holds the engine until it shuts down (the at-close hook cannot be removed);
 * sandboxes hold it until their last connection is gone. */
static void engine_at_close(void *data)
{
	engine *e = data;
	e->L = fdr_host_state(e->host);
	engine_shutdown(e);
	engine_unref(e);
}

/* _proxy.engine{ ca_dir=, upstream_ca_file=, splice=bool, audit=fn, event=fn, hook=fn,
 *                guard_want=fn, guard=fn, guard_response=fn } */
static int l_engine(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "ca_dir");
	const char *ca_dir = luaL_optstring(L, -1, NULL);
	lua_getfield(L, 1, "upstream_ca_file");
	const char *ca_file = luaL_optstring(L, -1, NULL);
	if (!ca_dir)
		return luaL_error(L, "proxy.engine: ca_dir: expected string");
	char err[512];
	px_ca *ca = px_ca_open(ca_dir, err, sizeof err);
	if (!ca)
		return fdr_error(L, "proxy.ca", "check ca_dir and its permissions", "%s", err);
	SSL_CTX *client = px_tls_client_ctx(ca_file, err, sizeof err);
	if (!client) {
		px_ca_free(ca);
		return fdr_error(L, "proxy.tls", NULL, "%s", err);
	}
	engine *e = calloc(1, sizeof *e);
	engine_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
	u->e = e;
	e->ud = u;
	luaL_setmetatable(L, ENGINE_MT);
	fdr_host *h = fdr_host_of(L);
	e->host = h;
	e->L = fdr_host_state(h);
	e->loop = fdr_host_loop(h);
	e->ca = ca;
	e->client_ctx = client;
	e->refs = 1;
	lua_getfield(L, 1, "splice");
	e->no_splice = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
	lua_pop(L, 1);
	const char *refs[] = {"audit", "event", "hook", "guard_want", "guard", "guard_response"};
	int *slots[] = {&e->audit_ref, &e->event_ref, &e->hook_ref,
			&e->guard_want_ref, &e->guard_ref, &e->guard_resp_ref};
	for (int i = 0; i < 6; i++) {
		lua_getfield(L, 1, refs[i]);
		*slots[i] = lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX) : (lua_pop(L, 1), LUA_NOREF);
	}
	fdr_host_at_close(h, engine_at_close, e);
	return 1;
}

/* engine:_add(name, socket_path|nil, policy, secrets, placeholders, hook_token) */
static int e_add(lua_State *L)
{
	engine *e = check_engine(L);
	const char *name = luaL_checkstring(L, 2);
	const char *path = luaL_optstring(L, 3, NULL);
	luaL_checktype(L, 4, LUA_TTABLE);
	size_t toklen = 0;
	const char *token = luaL_optlstring(L, 7, NULL, &toklen);
	if (find_sandbox(e, name))
		return fdr_error(L, "proxy.exists", NULL, "sandbox '%s' is already registered", name);
	policy *p = compile_policy(L, 4, lua_istable(L, 5) ? 5 : 0, lua_istable(L, 6) ? 6 : 0);
	sandbox *sb = calloc(1, sizeof *sb);
	sb->e = e;
	e->refs++;
	sb->name = strdup(name);
	sb->pol = p;
	sb->refs = 1;
	sb->tokens = p->lim.burst;
	sb->tokens_at = fdr_now_ms();
	if (token) {
		sb->hook_token = malloc(toklen + 1);
		memcpy(sb->hook_token, token, toklen + 1);
		sb->hook_tokenlen = toklen;
	}
	if (path) {
		sb->socket_path = strdup(path);
		listener *l = calloc(1, sizeof *l);
		l->sb = sb;
		l->is_pipe = 1;
		uv_pipe_init(e->loop, &l->u.pipe, 0);
		l->u.h.data = l;
		struct stat st;
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path); /* stale, from a daemon that is gone */
		int rc = uv_pipe_bind(&l->u.pipe, path);
		if (rc == 0)
			rc = uv_listen(&l->u.s, 511, on_connection);
		if (rc == 0 && chmod(path, 0666) != 0)
			rc = uv_translate_sys_error(errno);
		sb->refs++;
		l->next = sb->listeners;
		sb->listeners = l;
		if (rc != 0) {
			sb->next = e->sandboxes;
			e->sandboxes = sb;
			sandbox_remove(e, sb);
			return fdr_error(L, "proxy.listen", "check that the directory exists and is writable",
					 "cannot listen on %s: %s", path, uv_strerror(rc));
		}
	}
	sb->next = e->sandboxes;
	e->sandboxes = sb;
	return 0;
}

/* engine:listen_tcp(host, port, sandbox) -> port */
static int e_listen_tcp(lua_State *L)
{
	engine *e = check_engine(L);
	const char *host = luaL_checkstring(L, 2);
	int port = (int)luaL_checkinteger(L, 3);
	const char *name = luaL_checkstring(L, 4);
	sandbox *sb = find_sandbox(e, name);
	if (!sb)
		return fdr_error(L, "proxy.not_found", NULL, "no sandbox named '%s'", name);
	struct sockaddr_storage ss;
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
		return luaL_error(L, "listen_tcp: host: not an IP address");
	listener *l = calloc(1, sizeof *l);
	l->sb = sb;
	uv_tcp_init(e->loop, &l->u.tcp);
	l->u.h.data = l;
	sb->refs++;
	l->next = sb->listeners;
	sb->listeners = l;
	int rc = uv_tcp_bind(&l->u.tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen(&l->u.s, 511, on_connection);
	if (rc != 0) {
		sb->listeners = l->next;
		uv_close(&l->u.h, on_listener_closed);
		return fdr_error(L, "proxy.listen", NULL, "cannot listen on %s:%d: %s", host, port,
				 uv_strerror(rc));
	}
	struct sockaddr_storage got;
	int len = sizeof got;
	uv_tcp_getsockname(&l->u.tcp, (struct sockaddr *)&got, &len);
	lua_pushinteger(L, ntohs(((struct sockaddr_in *)&got)->sin_port));
	return 1;
}

/* engine:_update(name, policy, secrets, placeholders) */
static int e_update(lua_State *L)
{
	engine *e = check_engine(L);
	const char *name = luaL_checkstring(L, 2);
	luaL_checktype(L, 3, LUA_TTABLE);
	sandbox *sb = find_sandbox(e, name);
	if (!sb)
		return fdr_error(L, "proxy.not_found", NULL, "no sandbox named '%s'", name);
	policy *p = compile_policy(L, 3, lua_istable(L, 4) ? 4 : 0, lua_istable(L, 5) ? 5 : 0);
	if (p->lim.rate != sb->pol->lim.rate || p->lim.burst != sb->pol->lim.burst) {
		/* new rate limits start with a full bucket: a raised limit applies at once */
		sb->tokens = p->lim.burst;
		sb->tokens_at = fdr_now_ms();
	}
	policy_unref(sb->pol);
	sb->pol = p;
	return 0;
}

static int e_remove(lua_State *L)
{
	engine *e = check_engine(L);
	sandbox *sb = find_sandbox(e, luaL_checkstring(L, 2));
	lua_State *saved = e->L;
	e->L = L; /* audit rows of closed connections are written from this task */
	if (sb)
		sandbox_remove(e, sb);
	e->L = saved;
	lua_pushboolean(L, sb != NULL);
	return 1;
}

static int e_stats(lua_State *L)
{
	engine *e = check_engine(L);
	size_t minted, cached;
	px_ca_stats(e->ca, &minted, &cached);
	lua_createtable(L, 0, 12);
	set_int(L, "connections", e->nconns);
	set_int(L, "connections_total", (lua_Integer)e->conns_total);
	set_int(L, "requests", (lua_Integer)e->requests);
	set_int(L, "denied", (lua_Integer)e->denied);
	set_int(L, "tunnels", (lua_Integer)e->tunnels);
	set_int(L, "spliced", (lua_Integer)e->spliced);
	set_int(L, "inspected", (lua_Integer)e->inspected);
	set_int(L, "leaf_minted", (lua_Integer)minted);
	set_int(L, "leaf_cached", (lua_Integer)cached);
	lua_newtable(L);
	int n = 0;
	for (sandbox *sb = e->sandboxes; sb; sb = sb->next) {
		lua_createtable(L, 0, 6);
		set_int(L, "connections", sb->nconns);
		set_int(L, "requests", (lua_Integer)sb->requests);
		set_int(L, "denied", (lua_Integer)sb->denied);
		set_int(L, "bytes_in", (lua_Integer)sb->bytes_in);
		set_int(L, "bytes_out", (lua_Integer)sb->bytes_out);
		set_int(L, "policy_bytes", (lua_Integer)sb->pol->bytes);
		lua_setfield(L, -2, sb->name);
		n++;
	}
	lua_setfield(L, -2, "sandboxes");
	set_int(L, "nsandboxes", n);
	return 1;
}

static int e_ca_cert(lua_State *L)
{
	engine *e = check_engine(L);
	lua_pushstring(L, px_ca_cert_path(e->ca));
	return 1;
}

static int e_close(lua_State *L)
{
	engine_ud *u = luaL_checkudata(L, 1, ENGINE_MT);
	if (u->e && !u->e->closed) {
		lua_State *saved = u->e->L;
		u->e->L = L;
		engine_shutdown(u->e);
		u->e->L = saved;
	}
	return 0;
}

static int e_gc(lua_State *L)
{
	engine_ud *u = luaL_checkudata(L, 1, ENGINE_MT);
	e_close(L);
	if (u->e)
		u->e->ud = NULL;
	u->e = NULL;
	return 0;
}

static int e_tostring(lua_State *L)
{
	engine_ud *u = luaL_checkudata(L, 1, ENGINE_MT);
	int n = 0;
	if (u->e)
		for (sandbox *sb = u->e->sandboxes; sb; sb = sb->next)
			n++;
	lua_pushfstring(L, "proxy engine (%d sandboxes%s)", n, u->e && u->e->closed ? ", closed" : "");
	return 1;
}

/* ------------------------------------------------------------------ decisions for Lua */

/* _proxy.decide(policy, host, port, method, path) -> {action=, rule=, reason=, how=, kind=}
 * The engine's own decision code, for `foundry policy explain` and tests. */
static int l_decide(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	size_t hl;
	const char *host = luaL_checklstring(L, 2, &hl);
	int port = (int)luaL_checkinteger(L, 3);
	const char *method = luaL_optstring(L, 4, NULL);
	size_t pl = 0;
	const char *path = luaL_optlstring(L, 5, NULL, &pl);
	policy *p = compile_policy(L, 1, 0, 0);
	verdict v;
	char canon[PX_HOST_MAX];
	px_ip ip;
	int kind = px_host_canon(host, hl, canon, &ip);
	lua_createtable(L, 0, 6);
	if (kind < 0) {
		set_str(L, "action", "deny");
		set_str(L, "rule", "host");
		set_str(L, "reason", "not a valid host name or address");
		policy_unref(p);
		return 1;
	}
	set_str(L, "host", canon);
	if (kind == PX_HOST_IP)
		set_str(L, "address_class", px_ip_class_name(px_ip_classify(&ip)));
	decide_host(p, canon, port, kind == PX_HOST_IP, &v);
	int hook = -1;
	if (v.action != ACT_DENY && method && path)
		hook = decide_request(p, canon, port, method, path, pl, &v);
	set_str(L, "action", v.action == ACT_DENY ? "deny" : v.action == ACT_INSPECT ? "inspect" : "tunnel");
	set_str(L, "rule", v.rule);
	set_str(L, "reason", v.reason);
	if (v.how[0])
		set_str(L, "how_to_allow", v.how);
	if (hook >= 0) {
		set_str(L, "hook", p->rules[hook].host.src);
	}
	const override *o = find_override(p, canon, port);
	if (o)
		set_str(L, "override", o->addr);
	policy_unref(p);
	return 1;
}

/* _proxy.bench_decide(policy, hosts, rounds) -> sorted per-decision times in ns (list) */
static int l_bench_decide(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checktype(L, 2, LUA_TTABLE);
	int rounds = (int)luaL_optinteger(L, 3, 1);
	policy *p = compile_policy(L, 1, 0, 0);
	int n = (int)luaL_len(L, 2);
	char (*hosts)[PX_HOST_MAX] = calloc((size_t)n + 1, PX_HOST_MAX);
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, 2, i + 1);
		snprintf(hosts[i], PX_HOST_MAX, "%s", luaL_checkstring(L, -1));
		lua_pop(L, 1);
	}
	lua_createtable(L, n * rounds, 0);
	int k = 0;
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i < n; i++) {
			struct timespec a, b;
			verdict v;
			clock_gettime(CLOCK_MONOTONIC, &a);
			decide_host(p, hosts[i], 443, 0, &v);
			decide_request(p, hosts[i], 443, "GET", "/", 1, &v);
			clock_gettime(CLOCK_MONOTONIC, &b);
			lua_pushinteger(L, (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec));
			lua_rawseti(L, -2, ++k);
		}
	free(hosts);
	policy_unref(p);
	return 1;
}

/* _proxy.canonical_host(s) -> canonical, "name"|"ip", class|nil  (nil when invalid) */
static int l_canonical_host(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	char out[PX_HOST_MAX];
	px_ip ip;
	int kind = px_host_canon(s, n, out, &ip);
	if (kind < 0)
		return 0;
	lua_pushstring(L, out);
	lua_pushstring(L, kind == PX_HOST_IP ? "ip" : "name");
	if (kind == PX_HOST_IP)
		lua_pushstring(L, px_ip_class_name(px_ip_classify(&ip)));
	else
		lua_pushnil(L);
	return 3;
}

/* _proxy.valid_cidr(s) -> boolean */
static int l_valid_cidr(lua_State *L)
{
	px_cidr c;
	lua_pushboolean(L, px_cidr_parse(luaL_checkstring(L, 1), &c) == 0);
	return 1;
}

int luaopen_foundry_proxy(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"_add", e_add},     {"listen_tcp", e_listen_tcp}, {"_update", e_update},
		{"remove_sandbox", e_remove}, {"stats", e_stats}, {"ca_cert", e_ca_cert},
		{"close", e_close},  {NULL, NULL}};
	if (luaL_newmetatable(L, ENGINE_MT)) {
		luaL_newlib(L, methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, e_gc);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, e_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, e_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, TICKET_MT)) {
		lua_pushcfunction(L, ticket_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	static const luaL_Reg fns[] = {{"engine", l_engine},
				       {"decide", l_decide},
				       {"bench_decide", l_bench_decide},
				       {"canonical_host", l_canonical_host},
				       {"valid_cidr", l_valid_cidr},
				       {NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
