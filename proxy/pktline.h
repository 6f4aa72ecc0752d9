/*
 * pktline.h - git's pkt-line framing and the few messages of the smart-HTTP protocol the
 * proxy must read or write: a push's command list (receive-pack request), a ref
 * advertisement (info/refs), a fetch's wants (upload-pack request), and the replies
 * git prints (report-status inside side-band, "ERR" packets).
 *
 * Everything here is strict and fails closed: a message that is not exactly what git
 * sends is refused with a reason, never guessed at. Nothing allocates unless it says so;
 * parsed messages point into the caller's buffer only where noted.
 */
#ifndef PX_PKTLINE_H
#define PX_PKTLINE_H

#include <stddef.h>

#define PX_PKT_MAX 65520                   /* a packet, its 4-byte length included */
#define PX_PKT_DATA_MAX (PX_PKT_MAX - 4)   /* the payload of one packet */
#define PX_PKT_ERRLEN 160

typedef enum { PX_PKT_DATA, PX_PKT_FLUSH, PX_PKT_DELIM, PX_PKT_END } px_pkt_kind;

typedef struct {
	px_pkt_kind kind;
	const char *data; /* PX_PKT_DATA: the payload, borrowed from the buffer read */
	size_t len;
} px_pkt;

/* Read the packet at buf[*off] and advance *off past it. Returns 1 when a packet was
 * read, 0 when *off == len, -1 for a malformed or truncated packet. */
int px_pkt_read(const char *buf, size_t len, size_t *off, px_pkt *p);

/* A growable output buffer. Zero-initialise; free with px_pkt_buf_free. Appending
 * functions return 0, or -1 when a payload is too long (nothing is appended) or memory
 * runs out. */
typedef struct {
	char *data;
	size_t len, cap;
} px_pkt_buf;

void px_pkt_buf_free(px_pkt_buf *b);
int px_pkt_write(px_pkt_buf *b, const void *data, size_t n);
int px_pkt_writef(px_pkt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int px_pkt_flush(px_pkt_buf *b);
/* Data on side-band `band` (1 data, 2 progress, 3 error), split into packets of at most
 * `pktmax` bytes, length and band byte included (1000 for side-band, 65520 for
 * side-band-64k). */
int px_pkt_sideband(px_pkt_buf *b, int band, const void *data, size_t n, size_t pktmax);
/* An "ERR <msg>" packet: git dies with "fatal: remote error: <msg>". */
int px_pkt_error(px_pkt_buf *b, const char *msg);

/* Is `s` (n bytes) a valid full ref name ("refs/..." by git's check-ref-format rules)? */
int px_ref_valid(const char *s, size_t n);

/* ---- receive-pack request: the push ---- */

typedef struct {
	char old_id[65], new_id[65];
	char *ref; /* owned */
} px_push_cmd;

typedef struct {
	px_push_cmd *cmds;
	int ncmds;
	char *caps;          /* owned: the capabilities after the first command's NUL */
	char **shallow;      /* owned */
	int nshallow;
	char **options;      /* owned: push options, when the client asked for push-options */
	int noptions;
	size_t pack_offset;  /* where the packfile starts in the body (== len when none) */
	int hexsz;           /* 40 (SHA-1) or 64 (SHA-256) */
	char err[PX_PKT_ERRLEN];
} px_push_req;

/* Parse a receive-pack request body. Returns 0, or -1 with req->err set (req is then
 * freed already). Free a parsed request with px_push_req_free. */
int px_push_parse(const char *body, size_t len, px_push_req *req);
void px_push_req_free(px_push_req *req);

/* ---- ref advertisement (info/refs?service=git-*-pack, protocol v0/v1) ---- */

typedef struct {
	char id[65];
	char *name; /* owned; may end in "^{}" (a peeled tag) or be "HEAD" */
} px_ref;

typedef struct {
	char *service;   /* owned: from "# service=...", NULL when the body has no such line */
	int version;     /* 0, or 1 for a "version 1" line */
	px_ref *refs;
	int nrefs;
	char *caps;      /* owned */
	char **shallow;  /* owned */
	int nshallow;
	int hexsz;
	char err[PX_PKT_ERRLEN];
} px_advert;

/* Parse an advertisement. Returns 0, or -1 with adv->err set (a protocol v2 answer is
 * refused too: the proxy asks for v0). Free with px_advert_free. */
int px_advert_parse(const char *body, size_t len, px_advert *adv);
void px_advert_free(px_advert *adv);

/* Write an advertisement: the "# service=" header and its flush when `service` is not
 * NULL, then `refs` with `caps` on the first line (or the "capabilities^{}" line when
 * there are none), shallow lines, a flush. */
int px_advert_build(px_pkt_buf *b, const char *service, const px_ref *refs, int nrefs,
		    const char *caps, char *const *shallow, int nshallow, int hexsz);

/* ---- upload-pack request: the wants of a fetch (v0 stateless RPC) ---- */

typedef struct {
	char (*wants)[65];
	int nwants;
	int nhaves;
	char *caps;      /* owned: after the first want's id */
	int done;
	char err[PX_PKT_ERRLEN];
} px_upload_req;

int px_upload_parse(const char *body, size_t len, px_upload_req *req);
void px_upload_req_free(px_upload_req *req);

/* ---- replies ---- */

typedef struct {
	const char *ref;
	const char *reason; /* NULL: "ok"; else "ng <ref> <reason>" */
} px_ref_status;

/* A receive-pack result: "unpack <unpack>", one line per ref, a flush; wrapped in
 * side-band 1 when `sideband_max` (the packet size, as for px_pkt_sideband) > 0, after
 * `messages` on side-band 2 (each printed by git as "remote: <line>"). Without side-band
 * the messages are dropped. */
int px_report_status(px_pkt_buf *b, const char *unpack, const px_ref_status *st, int n,
		     const char *const *messages, int nmessages, size_t sideband_max);

/* Does the space-separated capability list `caps` contain `name` (or "name=...")? */
int px_caps_has(const char *caps, const char *name);

#endif
