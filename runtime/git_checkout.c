/*
 * git_checkout.c - the fast checkout of a fresh work tree (part of foundry._git).
 *
 * A workspace starts as an empty directory and a known commit, which is the easy case
 * of checkout: nothing to compare, nothing to overwrite. So instead of libgit2's general
 * checkout (a diff against the work tree, then per-file path checks) this lists the tree
 * once, creates the directories, then writes the files on a few threads - each with its
 * own object database handle - and writes the index (version 2) with the stat data of
 * the files it made, exactly as `git checkout` would leave it.
 *
 * It refuses trees it cannot reproduce exactly: gitlinks (submodules: git.submodules)
 * and .gitattributes asking for conversions on checkout (git.needs_filters: the caller
 * uses libgit2's checkout, mode="libgit2", instead). Both are found before anything is
 * written. Entry names that could escape the work tree or touch .git are refused too.
 */
#include "git_private.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct centry {
	char *path;
	unsigned mode;  /* git mode: 0100644, 0100755, 0120000 */
	git_oid id;
	struct stat st; /* after writing */
};

struct cdir {
	char *path;
};

struct op_checkout {
	gop base;
	char *gitdir, *commit, *workdir, *index, *mode;
	int64_t uid, gid, threads;
	int dry_run;
	/* the listing */
	struct centry *ents;
	size_t nents, capents;
	struct cdir *dirs;
	size_t ndirs, capdirs;
	gv *submodules, *filters;
	/* the writers claim chunks: runs of entries in one directory */
	int dirfd;
	size_t *chunks;  /* start index of each chunk, then nents */
	size_t nchunks;
	atomic_size_t next;
	pthread_mutex_t mu;
	atomic_int failed;
};

/* Most a thread writes before claiming again; a directory's files stay with one thread
 * up to this, so two threads rarely wait on one directory's lock. */
#define CHUNK 256

static void add_entry(struct op_checkout *op, const char *path, unsigned mode, const git_oid *id)
{
	if (op->nents == op->capents) {
		op->capents = op->capents ? op->capents * 2 : 4096;
		op->ents = gx_realloc(op->ents, op->capents * sizeof *op->ents);
	}
	struct centry *e = &op->ents[op->nents++];
	memset(e, 0, sizeof *e);
	e->path = gx_strdup(path);
	e->mode = mode;
	e->id = *id;
}

static void add_dir(struct op_checkout *op, const char *path)
{
	if (op->ndirs == op->capdirs) {
		op->capdirs = op->capdirs ? op->capdirs * 2 : 256;
		op->dirs = gx_realloc(op->dirs, op->capdirs * sizeof *op->dirs);
	}
	op->dirs[op->ndirs++].path = gx_strdup(path);
}

/* A name git itself would refuse to check out. */
static int bad_name(const char *name)
{
	return !name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
	       strcasecmp(name, ".git") == 0 || strchr(name, '/') != NULL;
}

/* Conversions git (and libgit2) would apply on checkout. Matching loosely is safe: a
 * false positive only costs the slower checkout. */
static int wants_filters(const char *text, size_t len)
{
	static const char *words[] = {"crlf", "ident", "encoding"};
	for (size_t i = 0; i < sizeof words / sizeof *words; i++)
		if (memmem(text, len, words[i], strlen(words[i])))
			return 1;
	return 0;
}

static int list_tree(struct op_checkout *op, git_repository *repo, const git_oid *tid,
		     char *prefix, size_t plen)
{
	git_tree *t = NULL;
	int rc = git_tree_lookup(&t, repo, tid);
	if (rc < 0)
		return gop_git_fail(&op->base, rc, "read tree");
	size_t n = git_tree_entrycount(t);
	const char *prev = NULL;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(t, i);
		const char *name = git_tree_entry_name(e);
		size_t nl = strlen(name);
		if (bad_name(name) || (prev && strcmp(prev, name) == 0)) {
			gop_fail(&op->base, "git.bad_tree", NULL,
				 "the tree has an entry git refuses to check out: '%.*s%s'",
				 (int)plen, prefix, name);
			rc = -1;
			break;
		}
		prev = name;
		if (plen + nl + 2 >= 4096) {
			gop_fail(&op->base, "git.bad_tree", NULL, "path too long: %.*s%s", (int)plen,
				 prefix, name);
			rc = -1;
			break;
		}
		memcpy(prefix + plen, name, nl + 1);
		unsigned mode = (unsigned)git_tree_entry_filemode(e);
		switch (mode) {
		case GIT_FILEMODE_TREE:
			add_dir(op, prefix);
			prefix[plen + nl] = '/';
			prefix[plen + nl + 1] = 0;
			rc = list_tree(op, repo, git_tree_entry_id(e), prefix, plen + nl + 1);
			break;
		case GIT_FILEMODE_COMMIT:
			gv_append(op->submodules, gv_str(prefix));
			break;
		case GIT_FILEMODE_BLOB:
		case GIT_FILEMODE_BLOB_EXECUTABLE:
		case GIT_FILEMODE_LINK:
			add_entry(op, prefix, mode, git_tree_entry_id(e));
			if (strcmp(name, ".gitattributes") == 0 && mode != GIT_FILEMODE_LINK) {
				git_blob *blob = NULL;
				if ((rc = git_blob_lookup(&blob, repo, git_tree_entry_id(e))) < 0) {
					gop_git_fail(&op->base, rc, "read %s", prefix);
					break;
				}
				if (wants_filters(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)))
					gv_append(op->filters, gv_str(prefix));
				git_blob_free(blob);
			}
			break;
		default:
			gop_fail(&op->base, "git.bad_tree", NULL, "unknown mode %o at %s", mode, prefix);
			rc = -1;
		}
		prefix[plen] = 0;
	}
	git_tree_free(t);
	return rc;
}

/* ---- writing ---- */

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void thread_fail(struct op_checkout *op, const char *what, const char *path, int rc)
{
	pthread_mutex_lock(&op->mu);
	if (!op->failed) {
		op->failed = 1;
		if (rc)
			gop_git_fail(&op->base, rc, "%s %s", what, path);
		else
			gop_sys_fail(&op->base, "%s %s", what, path);
	}
	pthread_mutex_unlock(&op->mu);
}

static int write_entry(struct op_checkout *op, git_odb *odb, struct centry *e)
{
	git_odb_object *obj = NULL;
	int rc = git_odb_read(&obj, odb, &e->id);
	if (rc < 0) {
		thread_fail(op, "read", e->path, rc);
		return -1;
	}
	const char *data = git_odb_object_data(obj);
	size_t size = git_odb_object_size(obj);
	int ok = 0;
	if (e->mode == GIT_FILEMODE_LINK) {
		char *target = gx_malloc(size + 1);
		memcpy(target, data, size);
		target[size] = 0;
		if (symlinkat(target, op->dirfd, e->path) < 0 ||
		    (op->uid >= 0 && fchownat(op->dirfd, e->path, (uid_t)op->uid, (gid_t)op->gid,
					      AT_SYMLINK_NOFOLLOW) < 0) ||
		    fstatat(op->dirfd, e->path, &e->st, AT_SYMLINK_NOFOLLOW) < 0)
			thread_fail(op, "create", e->path, 0);
		else
			ok = 1;
		free(target);
	} else {
		mode_t m = e->mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0777 : 0666;
		int fd = openat(op->dirfd, e->path,
				O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, m);
		if (fd < 0 || (op->uid >= 0 && fchown(fd, (uid_t)op->uid, (gid_t)op->gid) < 0) ||
		    write_all(fd, data, size) < 0 || fstat(fd, &e->st) < 0)
			thread_fail(op, "write", e->path, 0);
		else
			ok = 1;
		if (fd >= 0)
			close(fd);
	}
	git_odb_object_free(obj);
	return ok ? 0 : -1;
}

static void *writer(void *arg)
{
	struct op_checkout *op = arg;
	git_repository *repo = NULL;
	git_odb *odb = NULL;
	int rc = git_repository_open_ext(&repo, op->gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	if (rc == 0)
		rc = git_repository_odb(&odb, repo);
	if (rc < 0) {
		thread_fail(op, "open", op->gitdir, rc);
		git_repository_free(repo);
		return NULL;
	}
	for (;;) {
		size_t c = atomic_fetch_add(&op->next, 1);
		if (c >= op->nchunks || op->failed || atomic_load(&op->base.cancelled))
			break;
		for (size_t i = op->chunks[c]; i < op->chunks[c + 1]; i++)
			if (write_entry(op, odb, &op->ents[i]) < 0)
				break;
	}
	git_odb_free(odb);
	git_repository_free(repo);
	git_error_clear();
	return NULL;
}

static size_t dir_len(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? (size_t)(slash - path) : 0;
}

static void make_chunks(struct op_checkout *op)
{
	op->chunks = gx_malloc((op->nents + 1) * sizeof *op->chunks);
	op->nchunks = 0;
	size_t start = 0;
	for (size_t i = 0; i <= op->nents; i++) {
		int cut = i == op->nents || i - start >= CHUNK;
		if (!cut && i > start) {
			const char *a = op->ents[start].path, *b = op->ents[i].path;
			size_t la = dir_len(a);
			cut = la != dir_len(b) || memcmp(a, b, la) != 0;
		}
		if (cut && i > start) {
			op->chunks[op->nchunks++] = start;
			start = i;
		}
	}
	op->chunks[op->nchunks] = op->nents;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct centry *)a)->path, ((const struct centry *)b)->path);
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* The index, version 2: header, entries sorted by path, SHA-1 of all that. */
static int write_index(struct op_checkout *op)
{
	int sorted = 1;
	for (size_t i = 1; i < op->nents && sorted; i++)
		sorted = strcmp(op->ents[i - 1].path, op->ents[i].path) < 0;
	if (!sorted)
		qsort(op->ents, op->nents, sizeof *op->ents, cmp_entry);
	size_t cap = 12 + 20;
	for (size_t i = 0; i < op->nents; i++)
		cap += (62 + strlen(op->ents[i].path) + 8) & ~(size_t)7;
	unsigned char *buf = gx_calloc(1, cap), *p = buf;
	memcpy(p, "DIRC", 4);
	put32(p + 4, 2);
	put32(p + 8, (uint32_t)op->nents);
	p += 12;
	for (size_t i = 0; i < op->nents; i++) {
		const struct centry *e = &op->ents[i];
		const struct stat *st = &e->st;
		size_t len = strlen(e->path);
		put32(p, (uint32_t)st->st_ctim.tv_sec);
		put32(p + 4, (uint32_t)st->st_ctim.tv_nsec);
		put32(p + 8, (uint32_t)st->st_mtim.tv_sec);
		put32(p + 12, (uint32_t)st->st_mtim.tv_nsec);
		put32(p + 16, (uint32_t)st->st_dev);
		put32(p + 20, (uint32_t)st->st_ino);
		put32(p + 24, e->mode == GIT_FILEMODE_LINK ? 0120000
			      : e->mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0100755 : 0100644);
		put32(p + 28, (uint32_t)st->st_uid);
		put32(p + 32, (uint32_t)st->st_gid);
		put32(p + 36, (uint32_t)st->st_size);
		memcpy(p + 40, e->id.id, 20);
		unsigned flags = len < 0xfff ? (unsigned)len : 0xfff;
		p[60] = (unsigned char)(flags >> 8);
		p[61] = (unsigned char)flags;
		memcpy(p + 62, e->path, len);
		p += (62 + len + 8) & ~(size_t)7; /* at least one NUL, padded to 8 */
	}
	unsigned int n = 0;
	EVP_Digest(buf, (size_t)(p - buf), p, &n, EVP_sha1(), NULL);
	p += 20;
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.lock", op->index);
	int rc = 0;
	if (write_file(tmp, buf, (size_t)(p - buf), 0644) < 0 || rename(tmp, op->index) < 0) {
		gop_sys_fail(&op->base, "write %s", op->index);
		unlink(tmp);
		rc = -1;
	} else if (op->uid >= 0 && lchown(op->index, (uid_t)op->uid, (gid_t)op->gid) < 0) {
		rc = gop_sys_fail(&op->base, "chown %s", op->index);
	}
	free(buf);
	return rc;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

static void run_fast(struct op_checkout *op)
{
	gop *o = &op->base;
	git_repository *repo = NULL;
	git_commit *commit = NULL;
	git_oid id;
	double t0 = now_ms();
	int rc = git_repository_open_ext(&repo, op->gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	if (rc < 0) {
		gop_git_fail(o, rc, "open %s", op->gitdir);
		return;
	}
	if ((rc = git_oid_fromstr(&id, op->commit)) < 0 ||
	    (rc = git_commit_lookup(&commit, repo, &id)) < 0) {
		gop_git_fail(o, rc, "commit %s", op->commit);
		goto out;
	}
	op->submodules = gv_table();
	op->filters = gv_table();
	char prefix[4096] = "";
	if (list_tree(op, repo, git_commit_tree_id(commit), prefix, 0) < 0)
		goto out;
	double t1 = now_ms();
	gv *res = gv_table();
	o->result = res;
	gv_set_int(res, "files", (int64_t)op->nents);
	gv_set_int(res, "dirs", (int64_t)op->ndirs);
	gv_set(res, "submodules", op->submodules);
	gv_set(res, "filters", op->filters);
	gv *subs = op->submodules, *filt = op->filters;
	op->submodules = op->filters = NULL;
	if (op->dry_run)
		goto out;
	if (subs->narr) {
		gop_fail(o, "git.submodules", "Foundry cannot check out submodules yet",
			 "the tree has %zu submodule%s (first: %s); workspaces with submodules are "
			 "not supported", subs->narr, subs->narr == 1 ? "" : "s", subs->arr[0]->s);
		goto out;
	}
	if (filt->narr) {
		gop_fail(o, "git.needs_filters", "use mode=\"libgit2\"",
			 "%s asks for conversions on checkout", filt->arr[0]->s);
		goto out;
	}
	/* The work tree must not exist: a workspace is always made fresh. */
	if (mkdir(op->workdir, 0777) < 0) {
		if (errno == EEXIST)
			gop_fail(o, "git.exists", NULL, "%s already exists", op->workdir);
		else
			gop_sys_fail(o, "create %s", op->workdir);
		goto out;
	}
	op->dirfd = open(op->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (op->dirfd < 0 || (op->uid >= 0 && fchown(op->dirfd, (uid_t)op->uid, (gid_t)op->gid) < 0)) {
		gop_sys_fail(o, "open %s", op->workdir);
		goto out;
	}
	for (size_t i = 0; i < op->ndirs; i++)
		if (mkdirat(op->dirfd, op->dirs[i].path, 0777) < 0 ||
		    (op->uid >= 0 && fchownat(op->dirfd, op->dirs[i].path, (uid_t)op->uid,
					      (gid_t)op->gid, AT_SYMLINK_NOFOLLOW) < 0)) {
			gop_sys_fail(o, "create %s/%s", op->workdir, op->dirs[i].path);
			goto out;
		}
	double t2 = now_ms();
	make_chunks(op);
	size_t nthreads = op->threads > 0 ? (size_t)op->threads : uv_available_parallelism();
	if (nthreads > 8)
		nthreads = 8;
	if (nthreads > op->nchunks)
		nthreads = op->nchunks ? op->nchunks : 1;
	pthread_t tids[8];
	size_t started = 0;
	for (size_t i = 1; i < nthreads; i++)
		if (pthread_create(&tids[started], NULL, writer, op) == 0)
			started++;
	writer(op); /* this thread too */
	for (size_t i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	gv_set_int(res, "threads", (int64_t)started + 1);
	if (op->failed)
		goto out;
	if (atomic_load(&o->cancelled)) {
		gop_fail(o, "cancelled", NULL, "cancelled");
		goto out;
	}
	double t3 = now_ms();
	char gitdir[4096];
	snprintf(gitdir, sizeof gitdir, "%s/.git", op->workdir);
	if (mkdir(gitdir, 0777) < 0 && errno != EEXIST) {
		gop_sys_fail(o, "create %s", gitdir);
		goto out;
	}
	if (write_index(op) < 0)
		goto out;
	double t4 = now_ms();
	gv_set_int(res, "list_ms", (int64_t)(t1 - t0));
	gv_set_int(res, "dirs_ms", (int64_t)(t2 - t1));
	gv_set_int(res, "write_ms", (int64_t)(t3 - t2));
	gv_set_int(res, "index_ms", (int64_t)(t4 - t3));
out:
	gv_free(op->submodules);
	gv_free(op->filters);
	op->submodules = op->filters = NULL;
	git_commit_free(commit);
	git_repository_free(repo);
}

/* libgit2's own checkout of HEAD into the (complete) workspace: for trees whose
 * attributes ask for conversions. */
static void run_libgit2(struct op_checkout *op)
{
	gop *o = &op->base;
	git_repository *repo = NULL;
	char gitdir[4096];
	snprintf(gitdir, sizeof gitdir, "%s/.git", op->workdir);
	/* (just made by setup: its work tree is the one around it) */
	int rc = git_repository_open_ext(&repo, gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	git_checkout_options co;
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	if (rc == 0)
		rc = git_checkout_head(repo, &co);
	if (rc < 0)
		gop_git_fail(o, rc, "checkout %s", op->workdir);
	else if (op->uid >= 0 && chown_tree(op->workdir, (uid_t)op->uid, (gid_t)op->gid) < 0)
		gop_sys_fail(o, "chown %s", op->workdir);
	else
		o->result = gv_table();
	git_repository_free(repo);
}

static void run_checkout(gop *o)
{
	struct op_checkout *op = (struct op_checkout *)o;
	if (strcmp(op->mode, "libgit2") == 0)
		run_libgit2(op);
	else
		run_fast(op);
}

static void destroy_checkout(gop *o)
{
	struct op_checkout *op = (struct op_checkout *)o;
	if (op->dirfd > 0)
		close(op->dirfd);
	for (size_t i = 0; i < op->nents; i++)
		free(op->ents[i].path);
	free(op->ents);
	free(op->chunks);
	for (size_t i = 0; i < op->ndirs; i++)
		free(op->dirs[i].path);
	free(op->dirs);
	gv_free(op->submodules);
	gv_free(op->filters);
	pthread_mutex_destroy(&op->mu);
	free(op->gitdir);
	free(op->commit);
	free(op->workdir);
	free(op->index);
	free(op->mode);
}

/* checkout{gitdir=, commit=, workdir=, index=, owner_uid=, owner_gid=, threads=,
 * dry_run=, mode="fast"|"libgit2"} */
int gcheckout_run(lua_State *L)
{
	const char *what = "git.checkout";
	const char *mode = opt_str(L, what, "mode", 0);
	int fast = !mode || strcmp(mode, "fast") == 0;
	if (!fast && strcmp(mode, "libgit2") != 0)
		return luaL_error(L, "%s: mode: expected \"fast\" or \"libgit2\", got '%s'", what, mode);
	const char *gitdir = opt_str(L, what, "gitdir", fast);
	const char *commit = opt_str(L, what, "commit", fast);
	const char *workdir = opt_str(L, what, "workdir", 1);
	const char *index = opt_str(L, what, "index", 0);
	lua_Integer uid = opt_int(L, what, "owner_uid", -1);
	lua_Integer gid = opt_int(L, what, "owner_gid", -1);
	lua_Integer threads = opt_int(L, what, "threads", 0);
	int dry_run = opt_bool(L, what, "dry_run", 0);
	fdr_wait *w = gop_wait(L, what);
	struct op_checkout *op =
		(struct op_checkout *)gop_new(sizeof *op, what, run_checkout, destroy_checkout);
	op->mode = gx_strdup(fast ? "fast" : "libgit2");
	op->gitdir = gx_strdup(gitdir);
	op->commit = gx_strdup(commit);
	op->workdir = gx_strdup(workdir);
	if (index) {
		op->index = gx_strdup(index);
	} else {
		op->index = gx_malloc(strlen(workdir) + 12);
		sprintf(op->index, "%s/.git/index", workdir);
	}
	op->uid = uid;
	op->gid = uid >= 0 ? gid : -1;
	op->threads = threads;
	op->dry_run = dry_run;
	op->dirfd = -1;
	pthread_mutex_init(&op->mu, NULL);
	return gop_start(L, w, &op->base);
}
