/*
 * git_store.c - shared single-branch object stores (part of foundry._git).
 *
 * A store holds exactly the objects reachable from one branch of one source repository,
 * and nothing else, so a workspace may borrow it through objects/info/alternates
 * without seeing other branches. Layout (docs/workspaces.md):
 *
 *   <store>/g000001/objects/pack/pack-*.{pack,idx}   one generation: read-only packs
 *   <store>/g000001/tip                              the commit it is closed over
 *   <store>/g000001/users/<id>                       workspaces using it (file = path)
 *
 * A generation never changes once made, so a workspace sees what its base held when it
 * was made and nothing newer. When the branch moves forward, the next generation
 * hard-links the previous one's packs and adds one pack with only the new objects;
 * when it was rewritten, the next generation is built afresh. Generations nobody uses
 * are deleted, and the store with the last one.
 *
 * Building a pack copies the source's packed objects as they are (compressed bytes,
 * deltas included, OFS_DELTA rewritten as REF_DELTA) and writes the index itself: no
 * object is inflated or hashed, which is what makes the first workspace cheap. Objects
 * that cannot be copied - loose ones, and deltas whose base is outside the branch - go
 * to a second pack made by libgit2's packbuilder.
 *
 * Every change to a store happens under flock() on its directory, so Foundry processes
 * can share the cache.
 */
#include "git_private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OBJ_OFS_DELTA 6
#define OBJ_REF_DELTA 7

/* ---- CRC-32 (the pack index's per-entry checksum) ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- reading pack indexes (version 2) ---- */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

struct srcpack {
	unsigned char *idx, *pack;
	size_t idx_len, pack_len;
	uint32_t n;
	const unsigned char *fanout, *ids, *crcs, *offs, *large;
	uint64_t *sorted;  /* entry offsets, ascending: where each entry ends */
	uint32_t *by_off;  /* index of the entry at sorted[i] */
};

static void *map_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	struct stat st;
	void *p = MAP_FAILED;
	if (fstat(fd, &st) == 0 && st.st_size > 0)
		p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return NULL;
	*len = (size_t)st.st_size;
	return p;
}

static uint64_t pack_offset(const struct srcpack *p, uint32_t i)
{
	uint32_t o = be32(p->offs + 4 * (size_t)i);
	if (!(o & 0x80000000u))
		return o;
	return be64(p->large + 8 * (size_t)(o & 0x7fffffffu));
}

static struct srcpack *sort_tmp;
static int cmp_by_off(const void *a, const void *b)
{
	uint64_t x = pack_offset(sort_tmp, *(const uint32_t *)a);
	uint64_t y = pack_offset(sort_tmp, *(const uint32_t *)b);
	return x < y ? -1 : x > y;
}

/* Map an index (and optionally its pack); 0, or -1 when it is not a v2 index we can
 * use (such packs are simply not copied from). */
static int srcpack_open(struct srcpack *p, const char *idx_path, int with_pack)
{
	memset(p, 0, sizeof *p);
	p->idx = map_file(idx_path, &p->idx_len);
	if (!p->idx)
		return -1;
	if (p->idx_len < 8 + 1024 + 40 || memcmp(p->idx, "\377tOc", 4) != 0 || be32(p->idx + 4) != 2)
		goto bad;
	p->fanout = p->idx + 8;
	p->n = be32(p->fanout + 4 * 255);
	p->ids = p->fanout + 1024;
	p->crcs = p->ids + 20 * (size_t)p->n;
	p->offs = p->crcs + 4 * (size_t)p->n;
	p->large = p->offs + 4 * (size_t)p->n;
	if ((size_t)(p->large - p->idx) + 40 > p->idx_len)
		goto bad;
	if (!with_pack)
		return 0;
	char pack_path[4096];
	size_t l = strlen(idx_path);
	if (l < 4 || l >= sizeof pack_path)
		goto bad;
	memcpy(pack_path, idx_path, l - 4);
	strcpy(pack_path + l - 4, ".pack");
	p->pack = map_file(pack_path, &p->pack_len);
	if (!p->pack || p->pack_len < 32)
		goto bad;
	p->by_off = gx_malloc(sizeof *p->by_off * (p->n ? p->n : 1));
	p->sorted = gx_malloc(sizeof *p->sorted * (p->n ? p->n : 1));
	for (uint32_t i = 0; i < p->n; i++)
		p->by_off[i] = i;
	/* qsort has no context argument; the store lock serialises builds in a process
	 * only per store, so guard the comparator's global. */
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&mu);
	sort_tmp = p;
	qsort(p->by_off, p->n, sizeof *p->by_off, cmp_by_off);
	pthread_mutex_unlock(&mu);
	for (uint32_t i = 0; i < p->n; i++)
		p->sorted[i] = pack_offset(p, p->by_off[i]);
	return 0;
bad:
	if (p->idx)
		munmap(p->idx, p->idx_len);
	if (p->pack)
		munmap(p->pack, p->pack_len);
	free(p->by_off);
	free(p->sorted);
	memset(p, 0, sizeof *p);
	return -1;
}

static void srcpack_close(struct srcpack *p)
{
	if (p->idx)
		munmap(p->idx, p->idx_len);
	if (p->pack)
		munmap(p->pack, p->pack_len);
	free(p->by_off);
	free(p->sorted);
}

static int64_t srcpack_find(const struct srcpack *p, const git_oid *id)
{
	unsigned b = id->id[0];
	uint32_t lo = b ? be32(p->fanout + 4 * (b - 1)) : 0, hi = be32(p->fanout + 4 * b);
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int c = memcmp(p->ids + 20 * (size_t)mid, id->id, 20);
		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Position in p->sorted of the entry at `off`, or -1. */
static int64_t srcpack_at(const struct srcpack *p, uint64_t off)
{
	uint32_t lo = 0, hi = p->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (p->sorted[mid] == off)
			return mid;
		if (p->sorted[mid] < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

struct packs {
	struct srcpack *v;
	size_t n;
};

static int is_idx_name(const char *name)
{
	size_t l = strlen(name);
	return l > 9 && strncmp(name, "pack-", 5) == 0 && strcmp(name + l - 4, ".idx") == 0;
}

static void packs_open(struct packs *ps, const char *pack_dir, int with_pack)
{
	memset(ps, 0, sizeof *ps);
	DIR *d = opendir(pack_dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!is_idx_name(e->d_name))
			continue;
		char path[4096];
		pathf(path, sizeof path, "%s/%s", pack_dir, e->d_name);
		ps->v = gx_realloc(ps->v, (ps->n + 1) * sizeof *ps->v);
		if (srcpack_open(&ps->v[ps->n], path, with_pack) == 0)
			ps->n++;
	}
	closedir(d);
}

static void packs_close(struct packs *ps)
{
	for (size_t i = 0; i < ps->n; i++)
		srcpack_close(&ps->v[i]);
	free(ps->v);
}

/* ---- enumerating a branch's objects ---- */

struct obj {
	git_oid id;
	int pack;          /* source pack, or -1 */
	uint64_t off, end; /* the entry in that pack */
	uint64_t data;     /* where its compressed data (after any delta base) begins */
	int type;
	git_oid base;      /* for deltas */
	enum { M_UNKNOWN, M_COPY, M_DELTA, M_LIBGIT2, M_VISITING } mode;
};

struct build {
	gop *op;
	git_repository *repo;
	oidset seen;       /* every object already in the store or listed: value = list index + 1, or 0 */
	struct obj *list;
	size_t n, cap;
};

static void build_push(struct build *b, const git_oid *id)
{
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 4096;
		b->list = gx_realloc(b->list, b->cap * sizeof *b->list);
	}
	memset(&b->list[b->n], 0, sizeof b->list[b->n]);
	b->list[b->n].id = *id;
	b->n++;
}

/* Trees and commits are parsed from their raw bytes: no git_tree or git_commit is
 * built, which more than halves the time of a walk over a long history. */
static int walk_tree(struct build *b, git_odb *odb, const git_oid *tid)
{
	if (!oidset_put(&b->seen, tid, (uint32_t)b->n + 1))
		return 0;
	build_push(b, tid);
	git_odb_object *obj = NULL;
	int rc = git_odb_read(&obj, odb, tid);
	if (rc < 0)
		return gop_git_fail(b->op, rc, "read tree");
	if (git_odb_object_type(obj) != GIT_OBJECT_TREE) {
		git_odb_object_free(obj);
		gop_fail(b->op, "git.corrupt", NULL, "a tree entry names an object that is not a tree");
		return -1;
	}
	const unsigned char *p = git_odb_object_data(obj);
	const unsigned char *end = p + git_odb_object_size(obj);
	while (p < end && rc == 0) {
		unsigned mode = 0;
		while (p < end && *p >= '0' && *p <= '7')
			mode = mode * 8 + (unsigned)(*p++ - '0');
		const unsigned char *nul = memchr(p, 0, (size_t)(end - p));
		if (!nul || nul + 21 > end || *p != ' ') {
			gop_fail(b->op, "git.corrupt", NULL, "malformed tree");
			rc = -1;
			break;
		}
		git_oid id;
		memcpy(id.id, nul + 1, 20);
		p = nul + 21;
		if (mode == 040000)
			rc = walk_tree(b, odb, &id);
		else if (mode != 0160000 && oidset_put(&b->seen, &id, (uint32_t)b->n + 1))
			build_push(b, &id);
	}
	git_odb_object_free(obj);
	return rc;
}

static int commit_tree(git_odb *odb, const git_oid *id, git_oid *tree)
{
	git_odb_object *obj = NULL;
	int rc = git_odb_read(&obj, odb, id);
	if (rc < 0)
		return rc;
	const char *d = git_odb_object_data(obj);
	size_t n = git_odb_object_size(obj);
	rc = -1;
	if (git_odb_object_type(obj) == GIT_OBJECT_COMMIT && n >= 46 && memcmp(d, "tree ", 5) == 0 &&
	    git_oid_fromstrn(tree, d + 5, 40) == 0)
		rc = 0;
	else
		git_error_set_str(GIT_ERROR_OBJECT, "malformed commit");
	git_odb_object_free(obj);
	return rc;
}

/* List every object reachable from `tip` and not from `hide` (already in the store). */
static int enumerate(struct build *b, const git_oid *tip, const git_oid *hide)
{
	git_revwalk *w = NULL;
	git_odb *odb = NULL;
	int rc = git_repository_odb(&odb, b->repo);
	if (rc == 0)
		rc = git_revwalk_new(&w, b->repo);
	if (rc == 0)
		rc = git_revwalk_push(w, tip);
	if (rc == 0 && hide)
		rc = git_revwalk_hide(w, hide);
	if (rc < 0) {
		git_revwalk_free(w);
		git_odb_free(odb);
		return gop_git_fail(b->op, rc, "walk history");
	}
	git_oid id, tree;
	while ((rc = git_revwalk_next(&id, w)) == 0) {
		if (atomic_load(&b->op->cancelled)) {
			gop_fail(b->op, "cancelled", NULL, "cancelled");
			rc = -1;
			break;
		}
		if (!oidset_put(&b->seen, &id, (uint32_t)b->n + 1))
			continue;
		build_push(b, &id);
		if ((rc = commit_tree(odb, &id, &tree)) < 0) {
			gop_git_fail(b->op, rc, "read commit");
			break;
		}
		if ((rc = walk_tree(b, odb, &tree)) < 0)
			break;
	}
	git_revwalk_free(w);
	git_odb_free(odb);
	if (rc == GIT_ITEROVER)
		return 0;
	return rc < 0 ? rc : 0;
}

/* Where each object lives in the source packs, and its header. */
static void locate(struct build *b, struct packs *ps)
{
	for (size_t i = 0; i < b->n; i++) {
		struct obj *o = &b->list[i];
		o->pack = -1;
		for (size_t k = 0; k < ps->n; k++) {
			int64_t at = srcpack_find(&ps->v[k], &o->id);
			if (at < 0)
				continue;
			const struct srcpack *p = &ps->v[k];
			uint64_t off = pack_offset(p, (uint32_t)at);
			int64_t pos = srcpack_at(p, off);
			if (pos < 0 || off >= p->pack_len - 20)
				continue;
			uint64_t end = (size_t)pos + 1 < p->n ? p->sorted[pos + 1] : p->pack_len - 20;
			const unsigned char *h = p->pack + off, *lim = p->pack + end;
			unsigned c = *h++;
			int type = (c >> 4) & 7;
			while ((c & 0x80) && h < lim)
				c = *h++;
			if (type == OBJ_OFS_DELTA) {
				c = *h++;
				uint64_t rel = c & 127;
				while ((c & 0x80) && h < lim) {
					c = *h++;
					rel = ((rel + 1) << 7) | (c & 127);
				}
				if (rel > off)
					continue;
				int64_t bpos = srcpack_at(p, off - rel);
				if (bpos < 0)
					continue;
				memcpy(o->base.id, p->ids + 20 * (size_t)p->by_off[bpos], 20);
			} else if (type == OBJ_REF_DELTA) {
				if (h + 20 > lim)
					continue;
				memcpy(o->base.id, h, 20);
				h += 20;
			} else if (type < 1 || type > 4) {
				continue;
			}
			if (h > lim)
				continue;
			o->pack = (int)k;
			o->off = off;
			o->end = end;
			o->data = (uint64_t)(h - p->pack);
			o->type = type;
			break;
		}
	}
}

/* Copy as is, keep as a delta on a base also copied, or leave to libgit2. */
static int decide(struct build *b, struct obj *o)
{
	if (o->mode != M_UNKNOWN && o->mode != M_VISITING)
		return o->mode;
	if (o->mode == M_VISITING) /* a cycle in a corrupt pack */
		return o->mode = M_LIBGIT2;
	if (o->pack < 0)
		return o->mode = M_LIBGIT2;
	if (o->type != OBJ_OFS_DELTA && o->type != OBJ_REF_DELTA)
		return o->mode = M_COPY;
	int64_t at = oidset_get(&b->seen, &o->base);
	if (at <= 0) /* outside the branch, or already in the store (another pack) */
		return o->mode = M_LIBGIT2;
	o->mode = M_VISITING;
	int bm = decide(b, &b->list[at - 1]);
	return o->mode = bm == M_LIBGIT2 ? M_LIBGIT2 : M_DELTA;
}

/* ---- writing a pack and its index ---- */

struct out {
	gop *op;
	int fd;
	EVP_MD_CTX *sha;
	unsigned char buf[1 << 16];
	size_t nbuf;
	uint64_t off;
	int failed;
};

static void out_raw(struct out *w, const unsigned char *p, size_t n)
{
	while (n > 0 && !w->failed) {
		ssize_t k = write(w->fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			gop_sys_fail(w->op, "write pack");
			w->failed = 1;
			break;
		}
		p += k;
		n -= (size_t)k;
	}
}

static void out_flush(struct out *w)
{
	out_raw(w, w->buf, w->nbuf);
	w->nbuf = 0;
}

static void out_write(struct out *w, const void *data, size_t n)
{
	EVP_DigestUpdate(w->sha, data, n);
	w->off += n;
	if (w->nbuf + n > sizeof w->buf)
		out_flush(w);
	if (n >= sizeof w->buf) {
		out_raw(w, data, n);
		return;
	}
	memcpy(w->buf + w->nbuf, data, n);
	w->nbuf += n;
}

struct idxent {
	git_oid id;
	uint32_t crc;
	uint64_t off;
};

static int cmp_idxent(const void *a, const void *b)
{
	return memcmp(((const struct idxent *)a)->id.id, ((const struct idxent *)b)->id.id, 20);
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Write <dir>/pack-<sha>.pack and .idx for the objects of mode M_COPY/M_DELTA. */
static int write_reuse_pack(struct build *b, struct packs *ps, const char *dir, size_t *written)
{
	gop *op = b->op;
	size_t count = 0;
	for (size_t i = 0; i < b->n; i++)
		if (b->list[i].mode == M_COPY || b->list[i].mode == M_DELTA)
			count++;
	*written = count;
	if (count == 0)
		return 0;
	char tmp[4096], final[4096];
	pathf(tmp, sizeof tmp, "%s/tmp-pack", dir);
	struct out w = {.op = op};
	w.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (w.fd < 0)
		return gop_sys_fail(op, "create %s", tmp);
	w.sha = EVP_MD_CTX_new();
	EVP_DigestInit_ex(w.sha, EVP_sha1(), NULL);
	struct idxent *ents = gx_malloc(count * sizeof *ents);
	unsigned char hdr[12] = {'P', 'A', 'C', 'K', 0, 0, 0, 2};
	put32(hdr + 8, (uint32_t)count);
	out_write(&w, hdr, sizeof hdr);
	size_t k = 0;
	for (size_t i = 0; i < b->n && !w.failed; i++) {
		struct obj *o = &b->list[i];
		if (o->mode != M_COPY && o->mode != M_DELTA)
			continue;
		const struct srcpack *p = &ps->v[o->pack];
		ents[k].id = o->id;
		ents[k].off = w.off;
		if (o->mode == M_COPY) {
			/* Identical bytes: the source index already has their checksum. */
			int64_t at = srcpack_find(p, &o->id);
			ents[k].crc = be32(p->crcs + 4 * (size_t)at);
			out_write(&w, p->pack + o->off, (size_t)(o->end - o->off));
		} else {
			/* Same compressed delta, new header naming the base by id. */
			unsigned char h[32];
			size_t hl = 0;
			const unsigned char *s = p->pack + o->off;
			uint64_t size = s[0] & 15;
			int shift = 4;
			for (const unsigned char *q = s; *q & 0x80;) {
				q++;
				size |= (uint64_t)(*q & 127) << shift;
				shift += 7;
			}
			unsigned char c = (unsigned char)((OBJ_REF_DELTA << 4) | (size & 15));
			size >>= 4;
			while (size) {
				h[hl++] = c | 0x80;
				c = size & 127;
				size >>= 7;
			}
			h[hl++] = c;
			memcpy(h + hl, o->base.id, 20);
			hl += 20;
			uint32_t crc = crc32_update(0, h, hl);
			crc = crc32_update(crc, p->pack + o->data, (size_t)(o->end - o->data));
			ents[k].crc = crc;
			out_write(&w, h, hl);
			out_write(&w, p->pack + o->data, (size_t)(o->end - o->data));
		}
		k++;
	}
	out_flush(&w);
	unsigned char pack_sha[20];
	EVP_DigestFinal_ex(w.sha, pack_sha, NULL);
	EVP_MD_CTX_free(w.sha);
	int rc = -1;
	if (w.failed)
		goto out;
	if (write(w.fd, pack_sha, 20) != 20) {
		gop_sys_fail(op, "write pack");
		goto out;
	}
	char hex[41];
	for (int i = 0; i < 20; i++)
		sprintf(hex + 2 * i, "%02x", pack_sha[i]);
	/* The index: fan-out, sorted ids, checksums, offsets (large ones apart). */
	qsort(ents, count, sizeof *ents, cmp_idxent);
	size_t nlarge = 0;
	for (size_t i = 0; i < count; i++)
		if (ents[i].off >= 0x80000000u)
			nlarge++;
	size_t ilen = 8 + 1024 + count * 28 + nlarge * 8 + 40;
	unsigned char *idx = gx_calloc(1, ilen), *q = idx;
	memcpy(q, "\377tOc\0\0\0\2", 8);
	q += 8;
	uint32_t fan[256] = {0};
	for (size_t i = 0; i < count; i++)
		fan[ents[i].id.id[0]]++;
	for (int i = 1; i < 256; i++)
		fan[i] += fan[i - 1];
	for (int i = 0; i < 256; i++, q += 4)
		put32(q, fan[i]);
	for (size_t i = 0; i < count; i++, q += 20)
		memcpy(q, ents[i].id.id, 20);
	for (size_t i = 0; i < count; i++, q += 4)
		put32(q, ents[i].crc);
	unsigned char *large = q + 4 * count;
	uint32_t li = 0;
	for (size_t i = 0; i < count; i++, q += 4) {
		if (ents[i].off < 0x80000000u) {
			put32(q, (uint32_t)ents[i].off);
		} else {
			put32(q, 0x80000000u | li);
			put32(large + 8 * li, (uint32_t)(ents[i].off >> 32));
			put32(large + 8 * li + 4, (uint32_t)ents[i].off);
			li++;
		}
	}
	q = large + 8 * nlarge;
	memcpy(q, pack_sha, 20);
	q += 20;
	EVP_Digest(idx, (size_t)(q - idx), q, NULL, EVP_sha1(), NULL);
	pathf(final, sizeof final, "%s/pack-%s.pack", dir, hex);
	if (fsync(w.fd) < 0 || rename(tmp, final) < 0) {
		gop_sys_fail(op, "write %s", final);
		free(idx);
		goto out;
	}
	pathf(final, sizeof final, "%s/pack-%s.idx", dir, hex);
	pathf(tmp, sizeof tmp, "%s/tmp-idx", dir);
	if (write_file(tmp, idx, ilen, 0444) < 0 || rename(tmp, final) < 0) {
		gop_sys_fail(op, "write %s", final);
		free(idx);
		goto out;
	}
	free(idx);
	rc = 0;
out:
	close(w.fd);
	free(ents);
	unlink(tmp);
	return rc;
}

/* Objects that could not be copied, packed by libgit2 (compressed, deltified). */
static int write_libgit2_pack(struct build *b, const char *dir, size_t *written)
{
	git_packbuilder *pb = NULL;
	size_t count = 0;
	int rc = 0;
	for (size_t i = 0; i < b->n && rc == 0; i++) {
		if (b->list[i].mode != M_LIBGIT2)
			continue;
		if (!pb && (rc = git_packbuilder_new(&pb, b->repo)) < 0)
			break;
		rc = git_packbuilder_insert(pb, &b->list[i].id, NULL);
		count++;
	}
	if (rc == 0 && pb)
		rc = git_packbuilder_write(pb, dir, 0444, NULL, NULL);
	if (rc < 0)
		gop_git_fail(b->op, rc, "pack objects");
	git_packbuilder_free(pb);
	*written = count;
	return rc;
}

/* ---- generations ---- */

struct gen {
	char name[16];
	unsigned num;
	git_oid tip;
	int has_tip;
	size_t users, packs;
};

static int cmp_gen(const void *a, const void *b)
{
	unsigned x = ((const struct gen *)a)->num, y = ((const struct gen *)b)->num;
	return x < y ? -1 : x > y;
}

static size_t count_entries(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	size_t n = 0, sl = suffix ? strlen(suffix) : 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		size_t l = strlen(e->d_name);
		if (!suffix || (l > sl && strcmp(e->d_name + l - sl, suffix) == 0))
			n++;
	}
	closedir(d);
	return n;
}

/* Drop users whose workspace is gone (a crash between create and destroy). */
static void prune_users(const char *users_dir)
{
	DIR *d = opendir(users_dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		pathf(path, sizeof path, "%s/%s", users_dir, e->d_name);
		char *ws = read_file(path, NULL);
		struct stat st;
		if (ws && ws[0] == '/' && lstat(ws, &st) < 0 && errno == ENOENT)
			unlink(path);
		free(ws);
	}
	closedir(d);
}

/* Read the generations (oldest first), deleting unfinished builds and, when
 * `collect`, generations nobody uses. */
static struct gen *scan_gens(const char *store, size_t *n, int collect, size_t *removed)
{
	struct gen *v = NULL;
	*n = 0;
	DIR *d = opendir(store);
	if (!d)
		return NULL;
	struct dirent *e;
	char path[4096];
	while ((e = readdir(d))) {
		pathf(path, sizeof path, "%s/%s", store, e->d_name);
		if (strncmp(e->d_name, "tmp-", 4) == 0) {
			remove_tree(path);
			continue;
		}
		unsigned num;
		if (e->d_name[0] != 'g' || sscanf(e->d_name + 1, "%u", &num) != 1 || strlen(e->d_name) > 15)
			continue;
		struct gen g = {.num = num};
		snprintf(g.name, sizeof g.name, "%s", e->d_name);
		char sub[4096];
		pathf(sub, sizeof sub, "%s/users", path);
		prune_users(sub);
		g.users = count_entries(sub, NULL);
		if (collect && g.users == 0) {
			remove_tree(path);
			if (removed)
				(*removed)++;
			continue;
		}
		pathf(sub, sizeof sub, "%s/tip", path);
		char *tip = read_file(sub, NULL);
		if (tip && strlen(tip) >= 40 && git_oid_fromstrn(&g.tip, tip, 40) == 0)
			g.has_tip = 1;
		free(tip);
		pathf(sub, sizeof sub, "%s/objects/pack", path);
		g.packs = count_entries(sub, ".pack");
		v = gx_realloc(v, (*n + 1) * sizeof *v);
		v[(*n)++] = g;
	}
	closedir(d);
	if (*n > 1)
		qsort(v, *n, sizeof *v, cmp_gen);
	return v;
}

/* Open and lock the store directory, creating it; retries when another process
 * deleted it while we waited. Returns the locked fd or -1. */
static int lock_store(gop *op, const char *store, int create)
{
	for (int attempt = 0; attempt < 50; attempt++) {
		if (create && mkdir_p(store, 0755) < 0)
			return gop_sys_fail(op, "create %s", store);
		int fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT && create)
				continue;
			return gop_sys_fail(op, "open %s", store);
		}
		if (flock(fd, LOCK_EX) < 0) {
			close(fd);
			return gop_sys_fail(op, "lock %s", store);
		}
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_nlink > 0)
			return fd;
		close(fd); /* removed while we waited */
		if (!create) {
			errno = ENOENT;
			return gop_sys_fail(op, "open %s", store);
		}
	}
	gop_fail(op, "git.error", NULL, "%s: cannot lock the store", store);
	return -1;
}

static int add_user(gop *op, const char *gen_dir, const char *user, const char *info)
{
	char path[4096];
	pathf(path, sizeof path, "%s/users/%s", gen_dir, user);
	if (write_file(path, info, strlen(info), 0644) < 0)
		return gop_sys_fail(op, "write %s", path);
	return 0;
}

/* ---- store_acquire{store=, gitdir=, tip=, user=, info=, max_packs=} ---- */

struct op_store {
	gop base;
	char *store, *gitdir, *tip, *user, *info, *gen;
	int64_t max_packs;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Build generation `num` closed over `tip`, incrementally over `prev` when given. */
static int build_gen(gop *op, const char *store, unsigned num, const git_oid *tip,
		     const struct gen *prev, const char *gitdir, gv *res)
{
	char tmp[4096], pack_dir[4096], path[4096], final[4096];
	pathf(tmp, sizeof tmp, "%s/tmp-%d-%u", store, (int)getpid(), num);
	pathf(pack_dir, sizeof pack_dir, "%s/objects/pack", tmp);
	struct build b = {.op = op};
	struct packs src = {0}, old = {0};
	int rc = -1;
	remove_tree(tmp);
	if (mkdir_p(pack_dir, 0755) < 0) {
		gop_sys_fail(op, "create %s", pack_dir);
		goto out;
	}
	pathf(path, sizeof path, "%s/users", tmp);
	if (mkdir(path, 0755) < 0) {
		gop_sys_fail(op, "create %s", path);
		goto out;
	}
	if ((rc = git_repository_open_ext(&b.repo, gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL)) < 0) {
		gop_git_fail(op, rc, "open %s", gitdir);
		goto out;
	}
	rc = -1;
	if (prev) {
		/* Share the previous generation's packs and skip what they hold. */
		char prev_dir[4096];
		pathf(prev_dir, sizeof prev_dir, "%s/%s/objects/pack", store, prev->name);
		packs_open(&old, prev_dir, 0);
		for (size_t k = 0; k < old.n; k++)
			for (uint32_t i = 0; i < old.v[k].n; i++) {
				git_oid id;
				memcpy(id.id, old.v[k].ids + 20 * (size_t)i, 20);
				oidset_put(&b.seen, &id, 0);
			}
		DIR *d = opendir(prev_dir);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (strncmp(e->d_name, "pack-", 5) != 0)
				continue;
			char from[4096];
			pathf(from, sizeof from, "%s/%s", prev_dir, e->d_name);
			pathf(path, sizeof path, "%s/%s", pack_dir, e->d_name);
			if (link(from, path) < 0) {
				gop_sys_fail(op, "link %s", from);
				closedir(d);
				goto out;
			}
		}
		if (d)
			closedir(d);
	}
	double t0 = now_s();
	if (enumerate(&b, tip, prev ? &prev->tip : NULL) < 0)
		goto out;
	double t1 = now_s();
	char src_packs[4096];
	pathf(src_packs, sizeof src_packs, "%s/objects/pack", git_repository_commondir(b.repo));
	packs_open(&src, src_packs, 1);
	locate(&b, &src);
	for (size_t i = 0; i < b.n; i++)
		decide(&b, &b.list[i]);
	size_t copied = 0, packed = 0;
	if (write_reuse_pack(&b, &src, pack_dir, &copied) < 0 ||
	    write_libgit2_pack(&b, pack_dir, &packed) < 0)
		goto out;
	double t2 = now_s();
	char hex[GIT_OID_HEXSZ + 2];
	git_oid_tostr(hex, sizeof hex - 1, tip);
	strcat(hex, "\n");
	pathf(path, sizeof path, "%s/tip", tmp);
	if (write_file(path, hex, strlen(hex), 0444) < 0) {
		gop_sys_fail(op, "write %s", path);
		goto out;
	}
	pathf(final, sizeof final, "%s/g%06u", store, num);
	if (rename(tmp, final) < 0) {
		gop_sys_fail(op, "rename %s", tmp);
		goto out;
	}
	gv_set_int(res, "objects", (int64_t)b.n);
	gv_set_int(res, "copied", (int64_t)copied);
	gv_set_int(res, "packed", (int64_t)packed);
	gv_set_int(res, "enumerate_ms", (int64_t)((t1 - t0) * 1000));
	gv_set_int(res, "write_ms", (int64_t)((t2 - t1) * 1000));
	rc = 0;
out:
	if (rc < 0)
		remove_tree(tmp);
	packs_close(&src);
	packs_close(&old);
	oidset_free(&b.seen);
	free(b.list);
	git_repository_free(b.repo);
	return rc;
}

static void run_acquire(gop *o)
{
	struct op_store *op = (struct op_store *)o;
	pthread_once(&crc_once, crc_init);
	git_oid tip;
	if (git_oid_fromstrn(&tip, op->tip, strlen(op->tip)) < 0 || strlen(op->tip) != 40) {
		gop_fail(o, "git.invalid", NULL, "store: bad commit id '%s'", op->tip);
		return;
	}
	int fd = lock_store(o, op->store, 1);
	if (fd < 0)
		return;
	size_t n = 0;
	struct gen *gens = scan_gens(op->store, &n, 1, NULL);
	struct gen *latest = n ? &gens[n - 1] : NULL;
	gv *res = gv_table();
	char gen_dir[4096];
	if (latest && latest->has_tip && git_oid_equal(&latest->tip, &tip)) {
		pathf(gen_dir, sizeof gen_dir, "%s/%s", op->store, latest->name);
		gv_set_str(res, "mode", "reused");
	} else {
		const struct gen *prev = NULL;
		if (latest && latest->has_tip && latest->packs < (size_t)op->max_packs) {
			git_repository *repo = NULL;
			if (git_repository_open_ext(&repo, op->gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) == 0 &&
			    git_graph_descendant_of(repo, &tip, &latest->tip) == 1)
				prev = latest;
			git_repository_free(repo);
			git_error_clear();
		}
		unsigned num = latest ? latest->num + 1 : 1;
		if (build_gen(o, op->store, num, &tip, prev, op->gitdir, res) < 0)
			goto out;
		pathf(gen_dir, sizeof gen_dir, "%s/g%06u", op->store, num);
		gv_set_str(res, "mode", prev ? "incremental" : "full");
	}
	if (add_user(o, gen_dir, op->user, op->info) < 0)
		goto out;
	/* The generation this one replaced may have lost its last user long ago. */
	free(scan_gens(op->store, &n, 1, NULL));
	gv_set_str(res, "gen", strrchr(gen_dir, '/') + 1);
	gv_set_str(res, "path", gen_dir);
	o->result = res;
	res = NULL;
out:
	gv_free(res);
	free(gens);
	close(fd); /* unlocks */
}

static void destroy_store(gop *o)
{
	struct op_store *op = (struct op_store *)o;
	free(op->store);
	free(op->gitdir);
	free(op->tip);
	free(op->user);
	free(op->info);
	free(op->gen);
}

static int check_name(lua_State *L, const char *what, const char *key, const char *s)
{
	if (s && (!s[0] || strchr(s, '/') || s[0] == '.'))
		return luaL_error(L, "%s: %s: expected a plain file name, got '%s'", what, key, s);
	return 0;
}

int gstore_acquire(lua_State *L)
{
	const char *what = "git.store_acquire";
	const char *store = opt_str(L, what, "store", 1);
	const char *gitdir = opt_str(L, what, "gitdir", 1);
	const char *tip = opt_str(L, what, "tip", 1);
	const char *user = opt_str(L, what, "user", 1);
	const char *info = opt_str(L, what, "info", 1);
	lua_Integer max_packs = opt_int(L, what, "max_packs", 16);
	check_name(L, what, "user", user);
	fdr_wait *w = gop_wait(L, what);
	struct op_store *op = (struct op_store *)gop_new(sizeof *op, what, run_acquire, destroy_store);
	op->store = gx_strdup(store);
	op->gitdir = gx_strdup(gitdir);
	op->tip = gx_strdup(tip);
	op->user = gx_strdup(user);
	op->info = gx_strdup(info);
	op->max_packs = max_packs;
	return gop_start(L, w, &op->base);
}

/* ---- store_release{store=, gen=, user=} ---- */

static void run_release(gop *o)
{
	struct op_store *op = (struct op_store *)o;
	struct stat st;
	gv *res = gv_table();
	o->result = res;
	if (stat(op->store, &st) < 0) {
		gv_set_bool(res, "removed", 1);
		return;
	}
	int fd = lock_store(o, op->store, 0);
	if (fd < 0) {
		if (errno == ENOENT) { /* someone removed it meanwhile */
			o->err.set = 0;
			gv_set_bool(res, "removed", 1);
		}
		return;
	}
	char path[4096];
	pathf(path, sizeof path, "%s/%s/users/%s", op->store, op->gen, op->user);
	if (unlink(path) < 0 && errno != ENOENT)
		gop_sys_fail(o, "remove %s", path);
	size_t n = 0, removed = 0;
	free(scan_gens(op->store, &n, 1, &removed));
	gv_set_int(res, "removed_generations", (int64_t)removed);
	if (n == 0) {
		/* Whoever waits on the lock sees the directory gone and starts over. */
		DIR *d = opendir(op->store);
		struct dirent *e;
		while (d && (e = readdir(d)))
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
				pathf(path, sizeof path, "%s/%s", op->store, e->d_name);
				remove_tree(path);
			}
		if (d)
			closedir(d);
		if (rmdir(op->store) < 0)
			gop_sys_fail(o, "remove %s", op->store);
		gv_set_bool(res, "removed", 1);
	}
	close(fd);
}

int gstore_release(lua_State *L)
{
	const char *what = "git.store_release";
	const char *store = opt_str(L, what, "store", 1);
	const char *gen = opt_str(L, what, "gen", 1);
	const char *user = opt_str(L, what, "user", 1);
	check_name(L, what, "user", user);
	check_name(L, what, "gen", gen);
	fdr_wait *w = gop_wait(L, what);
	struct op_store *op = (struct op_store *)gop_new(sizeof *op, what, run_release, destroy_store);
	op->store = gx_strdup(store);
	op->gen = gx_strdup(gen);
	op->user = gx_strdup(user);
	return gop_start(L, w, &op->base);
}

/* ---- store_inspect{store=}: generations, tips, users, pack counts ---- */

static void run_inspect(gop *o)
{
	struct op_store *op = (struct op_store *)o;
	gv *res = gv_table();
	o->result = res;
	struct stat st;
	if (stat(op->store, &st) < 0)
		return;
	int fd = lock_store(o, op->store, 0);
	if (fd < 0)
		return;
	size_t n = 0;
	struct gen *gens = scan_gens(op->store, &n, 0, NULL);
	for (size_t i = 0; i < n; i++) {
		gv *g = gv_table();
		gv_set_str(g, "name", gens[i].name);
		if (gens[i].has_tip)
			gv_set(g, "tip", gv_oid(&gens[i].tip));
		gv_set_int(g, "users", (int64_t)gens[i].users);
		gv_set_int(g, "packs", (int64_t)gens[i].packs);
		gv_append(res, g);
	}
	free(gens);
	close(fd);
}

int gstore_inspect(lua_State *L)
{
	const char *what = "git.store_inspect";
	const char *store = opt_str(L, what, "store", 1);
	fdr_wait *w = gop_wait(L, what);
	struct op_store *op = (struct op_store *)gop_new(sizeof *op, what, run_inspect, destroy_store);
	op->store = gx_strdup(store);
	return gop_start(L, w, &op->base);
}
