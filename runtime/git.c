/*
 * git.c - module foundry._git: libgit2 on the libuv thread pool.
 *
 * Every native takes one table of options, copies what it needs, runs on the thread
 * pool (libgit2 blocks) and resumes the calling task with plain Lua values, or raises an
 * error object {code="git.*", message=, hint=}. Repositories are opened afresh by each
 * operation from explicit paths: a git_repository is not safe to share between threads
 * and opening one costs well under a millisecond.
 *
 * The machinery (values, operations, options) is in git_util.c; the shared object
 * stores in git_store.c; the fast checkout in git_checkout.c; the workspace model built
 * from them in lua/foundry/workspace.lua. See docs/workspaces.md.
 */
#include "git_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- opening repositories ---- */

/* "a/b/" and "a/b" name one directory. (libgit2 1.5's git_repository_set_workdir leaks
 * its path when given the work tree the repository already has: skip that call.) */
static int same_dir(const char *a, const char *b)
{
	if (!a || !b)
		return 0;
	size_t la = strlen(a), lb = strlen(b);
	while (la > 1 && a[la - 1] == '/')
		la--;
	while (lb > 1 && b[lb - 1] == '/')
		lb--;
	return la == lb && memcmp(a, b, la) == 0;
}

/* Open `gitdir` exactly (no discovery) and, when given, use `workdir` as its work tree
 * whatever its configuration says: a workspace's git directory is written by the agent,
 * and Foundry's own operations must not follow it elsewhere (core.worktree). */
static int open_repo(gop *op, git_repository **out, const char *gitdir, const char *workdir)
{
	int rc = git_repository_open_ext(out, gitdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
	if (rc == GIT_ENOTFOUND) {
		gop_fail(op, "git.not_a_repo", NULL, "%s: not a git repository", gitdir);
		return rc;
	}
	if (rc < 0)
		return gop_git_fail(op, rc, "open %s", gitdir);
	if (workdir && !same_dir(git_repository_workdir(*out), workdir) &&
	    (rc = git_repository_set_workdir(*out, workdir, 0)) < 0) {
		git_repository_free(*out);
		*out = NULL;
		return gop_git_fail(op, rc, "set work tree %s", workdir);
	}
	return 0;
}

/* ---- discover{path=} ---- */

struct op_discover {
	gop base;
	char *path;
	int exact;
};

static gv *head_info(git_repository *repo)
{
	gv *h = gv_table();
	git_reference *head = NULL;
	int rc = git_repository_head(&head, repo);
	if (rc == GIT_EUNBORNBRANCH) {
		gv_set_bool(h, "unborn", 1);
		git_reference *sym = NULL;
		if (git_reference_lookup(&sym, repo, "HEAD") == 0) {
			const char *t = git_reference_symbolic_target(sym);
			gv_set_str(h, "ref", t);
			if (t && strncmp(t, "refs/heads/", 11) == 0)
				gv_set_str(h, "branch", t + 11);
			git_reference_free(sym);
		}
	} else if (rc == 0) {
		gv_set(h, "id", gv_oid(git_reference_target(head)));
		if (git_repository_head_detached(repo) == 1) {
			gv_set_bool(h, "detached", 1);
		} else {
			gv_set_str(h, "ref", git_reference_name(head));
			if (git_reference_is_branch(head))
				gv_set_str(h, "branch", git_reference_shorthand(head));
		}
		git_reference_free(head);
	}
	git_error_clear();
	return h;
}

static void run_discover(gop *o)
{
	struct op_discover *op = (struct op_discover *)o;
	git_repository *repo = NULL;
	int rc = git_repository_open_ext(&repo, op->path, op->exact ? GIT_REPOSITORY_OPEN_NO_SEARCH : 0, NULL);
	if (rc == GIT_ENOTFOUND) {
		gop_fail(o, "git.not_a_repo", "run `git init` there, or pass the path of a repository",
			 "%s: not a git repository%s", op->path, op->exact ? "" : " (or any parent up to /)");
		return;
	}
	if (rc < 0) {
		gop_git_fail(o, rc, "open %s", op->path);
		return;
	}
	gv *t = gv_table();
	o->result = t;
	gv_set_str(t, "gitdir", git_repository_path(repo));
	const char *wd = git_repository_workdir(repo);
	gv_set_str(t, "workdir", wd);
	gv_set_bool(t, "bare", git_repository_is_bare(repo));
	gv_set_bool(t, "shallow", git_repository_is_shallow(repo));
	gv_set_str(t, "commondir", git_repository_commondir(repo));
	gv_set_bool(t, "worktree", git_repository_is_worktree(repo));
	gv_set(t, "head", head_info(repo));
	int state = git_repository_state(repo);
	gv_set_bool(t, "busy", state != GIT_REPOSITORY_STATE_NONE);
	/* Where discovery started, relative to the work tree ("" at its root). */
	char real[4096];
	if (wd && realpath(op->path, real)) {
		char rwd[4096];
		if (realpath(wd, rwd)) {
			size_t n = strlen(rwd);
			if (strncmp(real, rwd, n) == 0 && (real[n] == '/' || real[n] == 0))
				gv_set_str(t, "prefix", real[n] == '/' ? real + n + 1 : "");
		}
	}
	git_repository_free(repo);
}

static void destroy_discover(gop *o)
{
	free(((struct op_discover *)o)->path);
}

static int l_discover(lua_State *L)
{
	const char *path = opt_str(L, "git.discover", "path", 1);
	int exact = opt_bool(L, "git.discover", "exact", 0);
	fdr_wait *w = gop_wait(L, "git.discover");
	struct op_discover *op = (struct op_discover *)gop_new(sizeof *op, "git.discover", run_discover, destroy_discover);
	op->path = gx_strdup(path);
	op->exact = exact;
	return gop_start(L, w, &op->base);
}

/* ---- resolve{gitdir=, name=} : a branch (local or remote-tracking) to its ref and id ---- */

struct op_resolve {
	gop base;
	char *gitdir, *name;
};

static void run_resolve(gop *o)
{
	struct op_resolve *op = (struct op_resolve *)o;
	git_repository *repo = NULL;
	if (open_repo(o, &repo, op->gitdir, NULL) < 0)
		return;
	git_reference *ref = NULL, *resolved = NULL;
	int rc = 0;
	if (!op->name) {
		rc = git_repository_head(&ref, repo);
		if (rc == GIT_EUNBORNBRANCH) {
			gop_fail(o, "git.unborn", "make a first commit",
				 "%s has no commits yet", op->gitdir);
			goto out;
		}
		if (rc < 0) {
			gop_git_fail(o, rc, "read HEAD of %s", op->gitdir);
			goto out;
		}
		if (git_repository_head_detached(repo) == 1) {
			gop_fail(o, "git.detached",
				 "check out a branch, or name the base branch (from=)",
				 "HEAD is detached in %s: there is no current branch to start from",
				 op->gitdir);
			goto out;
		}
	} else {
		char full[1024];
		const char *forms[] = {"%s", "refs/heads/%s", "refs/remotes/%s", "refs/remotes/%s/HEAD"};
		rc = GIT_ENOTFOUND;
		for (size_t i = 0; i < sizeof forms / sizeof *forms && rc == GIT_ENOTFOUND; i++) {
			if (i == 0 && strncmp(op->name, "refs/", 5) != 0)
				continue;
			snprintf(full, sizeof full, forms[i], op->name);
			if (!git_reference_is_valid_name(full))
				continue;
			rc = git_reference_lookup(&ref, repo, full);
		}
		if (rc == GIT_ENOTFOUND) {
			gop_fail(o, "git.not_found", "list the branches with `git branch -a`",
				 "unknown base branch '%s' in %s", op->name, op->gitdir);
			goto out;
		}
		if (rc < 0) {
			gop_git_fail(o, rc, "look up %s", op->name);
			goto out;
		}
	}
	if ((rc = git_reference_resolve(&resolved, ref)) < 0) {
		gop_git_fail(o, rc, "resolve %s", git_reference_name(ref));
		goto out;
	}
	const char *name = git_reference_name(resolved);
	if (strncmp(name, "refs/heads/", 11) != 0 && strncmp(name, "refs/remotes/", 13) != 0) {
		gop_fail(o, "git.not_found", "name a branch",
			 "'%s' is not a branch (%s)", op->name ? op->name : "HEAD", name);
		goto out;
	}
	git_object *obj = NULL;
	if ((rc = git_reference_peel(&obj, resolved, GIT_OBJECT_COMMIT)) < 0) {
		gop_git_fail(o, rc, "%s", name);
		goto out;
	}
	gv *t = gv_table();
	gv_set_str(t, "ref", name);
	gv_set_str(t, "name", strncmp(name, "refs/heads/", 11) == 0 ? name + 11 : name + 13);
	gv_set_bool(t, "remote", name[5] == 'r');
	gv_set(t, "id", gv_oid(git_object_id(obj)));
	o->result = t;
	git_object_free(obj);
out:
	git_reference_free(ref);
	git_reference_free(resolved);
	git_repository_free(repo);
}

static void destroy_resolve(gop *o)
{
	struct op_resolve *op = (struct op_resolve *)o;
	free(op->gitdir);
	free(op->name);
}

static int l_resolve(lua_State *L)
{
	const char *gitdir = opt_str(L, "git.resolve", "gitdir", 1);
	const char *name = opt_str(L, "git.resolve", "name", 0);
	fdr_wait *w = gop_wait(L, "git.resolve");
	struct op_resolve *op = (struct op_resolve *)gop_new(sizeof *op, "git.resolve", run_resolve, destroy_resolve);
	op->gitdir = gx_strdup(gitdir);
	op->name = gx_strdup(name);
	return gop_start(L, w, &op->base);
}

/* ---- refs{gitdir=, glob=} : every reference and what it points at ---- */

struct op_refs {
	gop base;
	char *gitdir, *glob;
};

static void run_refs(gop *o)
{
	struct op_refs *op = (struct op_refs *)o;
	git_repository *repo = NULL;
	if (open_repo(o, &repo, op->gitdir, NULL) < 0)
		return;
	git_reference_iterator *it = NULL;
	int rc = op->glob ? git_reference_iterator_glob_new(&it, repo, op->glob)
			  : git_reference_iterator_new(&it, repo);
	if (rc < 0) {
		gop_git_fail(o, rc, "list references of %s", op->gitdir);
		git_repository_free(repo);
		return;
	}
	gv *t = gv_table();
	git_reference *ref;
	while ((rc = git_reference_next(&ref, it)) == 0) {
		if (git_reference_type(ref) == GIT_REFERENCE_SYMBOLIC)
			gv_set_str(t, git_reference_name(ref), git_reference_symbolic_target(ref));
		else
			gv_set(t, git_reference_name(ref), gv_oid(git_reference_target(ref)));
		git_reference_free(ref);
	}
	if (rc != GIT_ITEROVER) {
		gop_git_fail(o, rc, "list references of %s", op->gitdir);
		gv_free(t);
	} else {
		o->result = t;
	}
	git_reference_iterator_free(it);
	git_repository_free(repo);
}

static void destroy_refs(gop *o)
{
	struct op_refs *op = (struct op_refs *)o;
	free(op->gitdir);
	free(op->glob);
}

static int l_refs(lua_State *L)
{
	const char *gitdir = opt_str(L, "git.refs", "gitdir", 1);
	const char *glob = opt_str(L, "git.refs", "glob", 0);
	fdr_wait *w = gop_wait(L, "git.refs");
	struct op_refs *op = (struct op_refs *)gop_new(sizeof *op, "git.refs", run_refs, destroy_refs);
	op->gitdir = gx_strdup(gitdir);
	op->glob = gx_strdup(glob);
	return gop_start(L, w, &op->base);
}

/* ---- config{gitdir=, keys={...}} : values as the repository sees them ---- */

struct op_config {
	gop base;
	char *gitdir;
	char **keys;
};

static void run_config(gop *o)
{
	struct op_config *op = (struct op_config *)o;
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	if (open_repo(o, &repo, op->gitdir, NULL) < 0)
		return;
	int rc = git_repository_config_snapshot(&cfg, repo);
	if (rc < 0) {
		gop_git_fail(o, rc, "read configuration of %s", op->gitdir);
		git_repository_free(repo);
		return;
	}
	gv *t = gv_table();
	for (char **k = op->keys; k && *k; k++) {
		const char *v = NULL;
		if (git_config_get_string(&v, cfg, *k) == 0)
			gv_set_str(t, *k, v);
	}
	git_error_clear();
	o->result = t;
	git_config_free(cfg);
	git_repository_free(repo);
}

static void destroy_config(gop *o)
{
	struct op_config *op = (struct op_config *)o;
	free(op->gitdir);
	strv_free(op->keys);
}

static int l_config(lua_State *L)
{
	const char *gitdir = opt_str(L, "git.config", "gitdir", 1);
	opt_strv(L, "git.config", "keys", 0);
	fdr_wait *w = gop_wait(L, "git.config");
	struct op_config *op = (struct op_config *)gop_new(sizeof *op, "git.config", run_config, destroy_config);
	op->gitdir = gx_strdup(gitdir);
	op->keys = opt_strv(L, "git.config", "keys", 1);
	return gop_start(L, w, &op->base);
}

/* ---- status{gitdir=, workdir=, untracked=true} ---- */

struct op_status {
	gop base;
	char *gitdir, *workdir;
	int untracked, ignored;
};

static const char *index_word(unsigned s)
{
	if (s & GIT_STATUS_INDEX_NEW) return "added";
	if (s & GIT_STATUS_INDEX_DELETED) return "deleted";
	if (s & GIT_STATUS_INDEX_RENAMED) return "renamed";
	if (s & GIT_STATUS_INDEX_TYPECHANGE) return "typechange";
	if (s & GIT_STATUS_INDEX_MODIFIED) return "modified";
	return NULL;
}

static const char *worktree_word(unsigned s)
{
	if (s & GIT_STATUS_WT_NEW) return "untracked";
	if (s & GIT_STATUS_WT_DELETED) return "deleted";
	if (s & GIT_STATUS_WT_RENAMED) return "renamed";
	if (s & GIT_STATUS_WT_TYPECHANGE) return "typechange";
	if (s & GIT_STATUS_WT_MODIFIED) return "modified";
	if (s & GIT_STATUS_IGNORED) return "ignored";
	return NULL;
}

static void run_status(gop *o)
{
	struct op_status *op = (struct op_status *)o;
	git_repository *repo = NULL;
	git_status_list *list = NULL;
	if (open_repo(o, &repo, op->gitdir, op->workdir) < 0)
		return;
	git_status_options so;
	git_status_options_init(&so, GIT_STATUS_OPTIONS_VERSION);
	so.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR;
	so.flags = GIT_STATUS_OPT_EXCLUDE_SUBMODULES;
	if (op->untracked)
		so.flags |= GIT_STATUS_OPT_INCLUDE_UNTRACKED | GIT_STATUS_OPT_RECURSE_UNTRACKED_DIRS;
	if (op->ignored)
		so.flags |= GIT_STATUS_OPT_INCLUDE_IGNORED;
	int rc = git_status_list_new(&list, repo, &so);
	if (rc < 0) {
		gop_git_fail(o, rc, "status of %s", op->workdir ? op->workdir : op->gitdir);
		git_repository_free(repo);
		return;
	}
	gv *t = gv_table();
	size_t n = git_status_list_entrycount(list);
	for (size_t i = 0; i < n; i++) {
		const git_status_entry *e = git_status_byindex(list, i);
		gv *f = gv_table();
		const git_diff_delta *d = e->index_to_workdir ? e->index_to_workdir : e->head_to_index;
		if (e->status & GIT_STATUS_CONFLICTED)
			gv_set_str(f, "conflict", "conflicted");
		gv_set_str(f, "path", d->new_file.path);
		if (e->head_to_index && e->head_to_index->status == GIT_DELTA_RENAMED)
			gv_set_str(f, "old_path", e->head_to_index->old_file.path);
		gv_set_str(f, "index", index_word(e->status));
		gv_set_str(f, "worktree", worktree_word(e->status));
		gv_append(t, f);
	}
	o->result = t;
	git_status_list_free(list);
	git_repository_free(repo);
}

static void destroy_status(gop *o)
{
	struct op_status *op = (struct op_status *)o;
	free(op->gitdir);
	free(op->workdir);
}

static int l_status(lua_State *L)
{
	const char *gitdir = opt_str(L, "git.status", "gitdir", 1);
	const char *workdir = opt_str(L, "git.status", "workdir", 1);
	int untracked = opt_bool(L, "git.status", "untracked", 1);
	int ignored = opt_bool(L, "git.status", "ignored", 0);
	fdr_wait *w = gop_wait(L, "git.status");
	struct op_status *op = (struct op_status *)gop_new(sizeof *op, "git.status", run_status, destroy_status);
	op->gitdir = gx_strdup(gitdir);
	op->workdir = gx_strdup(workdir);
	op->untracked = untracked;
	op->ignored = ignored;
	return gop_start(L, w, &op->base);
}

/* ---- commit_all{gitdir=, workdir=, message=, name=, email=} ---- */

struct op_commit {
	gop base;
	char *gitdir, *workdir, *message, *name, *email;
};

static void run_commit(gop *o)
{
	struct op_commit *op = (struct op_commit *)o;
	git_repository *repo = NULL;
	git_index *index = NULL;
	git_tree *tree = NULL;
	git_commit *parent = NULL;
	git_signature *sig = NULL;
	git_reference *head = NULL;
	if (open_repo(o, &repo, op->gitdir, op->workdir) < 0)
		return;
	int rc, state = git_repository_state(repo);
	if (state != GIT_REPOSITORY_STATE_NONE) {
		gop_fail(o, "git.busy", "finish or abort it, then commit",
			 "%s: a merge, rebase, cherry-pick or similar is in progress",
			 op->workdir);
		goto out;
	}
	rc = git_repository_head(&head, repo);
	if (rc == 0 && git_repository_head_detached(repo) == 1) {
		gop_fail(o, "git.detached", "check out the workspace's branch",
			 "%s: HEAD is detached; not committing", op->workdir);
		goto out;
	}
	if (rc < 0 && rc != GIT_EUNBORNBRANCH) {
		gop_git_fail(o, rc, "read HEAD");
		goto out;
	}
	if (rc == 0 && (rc = git_reference_peel((git_object **)&parent, head, GIT_OBJECT_COMMIT)) < 0) {
		gop_git_fail(o, rc, "read HEAD commit");
		goto out;
	}
	if ((rc = git_repository_index(&index, repo)) < 0 ||
	    (rc = git_index_read(index, 0)) < 0) {
		gop_git_fail(o, rc, "read the index");
		goto out;
	}
	char *all[] = {"*"};
	git_strarray spec = {all, 1};
	/* `git add -A`: new and modified files (ignores honoured), then deletions. */
	if ((rc = git_index_add_all(index, &spec, GIT_INDEX_ADD_DEFAULT, NULL, NULL)) < 0 ||
	    (rc = git_index_update_all(index, &spec, NULL, NULL)) < 0) {
		gop_git_fail(o, rc, "stage changes in %s", op->workdir);
		goto out;
	}
	git_oid tree_id, commit_id;
	if ((rc = git_index_write_tree(&tree_id, index)) < 0) {
		gop_git_fail(o, rc, "write tree");
		goto out;
	}
	if (parent && git_oid_equal(&tree_id, git_commit_tree_id(parent))) {
		/* Nothing to commit; do not even rewrite the index (the agent may hold it). */
		gv *t = gv_table();
		gv_set_bool(t, "changed", 0);
		gv_set(t, "head", gv_oid(git_commit_id(parent)));
		o->result = t;
		goto out;
	}
	if ((rc = git_index_write(index)) < 0) {
		if (rc == GIT_ELOCKED)
			gop_fail(o, "git.locked", "another git process holds the index; retry",
				 "%s: index.lock exists", op->workdir);
		else
			gop_git_fail(o, rc, "write the index");
		goto out;
	}
	if ((rc = git_tree_lookup(&tree, repo, &tree_id)) < 0) {
		gop_git_fail(o, rc, "read tree");
		goto out;
	}
	if (op->name && op->email)
		rc = git_signature_now(&sig, op->name, op->email);
	else if ((rc = git_signature_default(&sig, repo)) == GIT_ENOTFOUND)
		rc = git_signature_now(&sig, "Foundry", "foundry@localhost");
	if (rc < 0) {
		gop_git_fail(o, rc, "author identity");
		goto out;
	}
	const git_commit *parents[1] = {parent};
	rc = git_commit_create(&commit_id, repo, "HEAD", sig, sig, NULL, op->message, tree,
			       parent ? 1 : 0, parents);
	if (rc < 0) {
		gop_git_fail(o, rc, "commit");
		goto out;
	}
	gv *t = gv_table();
	gv_set_bool(t, "changed", 1);
	gv_set(t, "id", gv_oid(&commit_id));
	gv_set(t, "head", gv_oid(&commit_id));
	o->result = t;
out:
	git_reference_free(head);
	git_signature_free(sig);
	git_commit_free(parent);
	git_tree_free(tree);
	git_index_free(index);
	git_repository_free(repo);
}

static void destroy_commit(gop *o)
{
	struct op_commit *op = (struct op_commit *)o;
	free(op->gitdir);
	free(op->workdir);
	free(op->message);
	free(op->name);
	free(op->email);
}

static int l_commit_all(lua_State *L)
{
	const char *what = "git.commit_all";
	const char *gitdir = opt_str(L, what, "gitdir", 1);
	const char *workdir = opt_str(L, what, "workdir", 1);
	const char *message = opt_str(L, what, "message", 1);
	const char *name = opt_str(L, what, "name", 0);
	const char *email = opt_str(L, what, "email", 0);
	fdr_wait *w = gop_wait(L, what);
	struct op_commit *op = (struct op_commit *)gop_new(sizeof *op, what, run_commit, destroy_commit);
	op->gitdir = gx_strdup(gitdir);
	op->workdir = gx_strdup(workdir);
	op->message = gx_strdup(message);
	op->name = gx_strdup(name);
	op->email = gx_strdup(email);
	return gop_start(L, w, &op->base);
}

/* ---- diff{gitdir=, workdir=, base=, paths=, context=, max_bytes=, patch=} ---- */

struct op_diff {
	gop base;
	char *gitdir, *workdir, *rev;
	char **paths;
	int context, patch, untracked;
	int64_t max_bytes;
};

static const char *delta_word(git_delta_t s)
{
	switch (s) {
	case GIT_DELTA_ADDED:
	case GIT_DELTA_UNTRACKED: return "added";
	case GIT_DELTA_DELETED: return "deleted";
	case GIT_DELTA_MODIFIED: return "modified";
	case GIT_DELTA_RENAMED: return "renamed";
	case GIT_DELTA_COPIED: return "copied";
	case GIT_DELTA_TYPECHANGE: return "typechange";
	case GIT_DELTA_CONFLICTED: return "conflicted";
	default: return "unmodified";
	}
}

static void run_diff(gop *o)
{
	struct op_diff *op = (struct op_diff *)o;
	git_repository *repo = NULL;
	git_object *obj = NULL;
	git_tree *tree = NULL;
	git_diff *diff = NULL;
	if (open_repo(o, &repo, op->gitdir, op->workdir) < 0)
		return;
	int rc = git_revparse_single(&obj, repo, op->rev);
	if (rc < 0) {
		gop_git_fail(o, rc, "diff base '%s'", op->rev);
		goto out;
	}
	if ((rc = git_object_peel((git_object **)&tree, obj, GIT_OBJECT_TREE)) < 0) {
		gop_git_fail(o, rc, "diff base '%s'", op->rev);
		goto out;
	}
	git_diff_options dopt;
	git_diff_options_init(&dopt, GIT_DIFF_OPTIONS_VERSION);
	dopt.context_lines = (uint32_t)op->context;
	dopt.flags = GIT_DIFF_IGNORE_SUBMODULES;
	if (op->untracked)
		dopt.flags |= GIT_DIFF_INCLUDE_UNTRACKED | GIT_DIFF_RECURSE_UNTRACKED_DIRS |
			      GIT_DIFF_SHOW_UNTRACKED_CONTENT;
	if (op->paths) {
		dopt.pathspec.strings = op->paths;
		dopt.pathspec.count = strv_len(op->paths);
	}
	if ((rc = git_diff_tree_to_workdir_with_index(&diff, repo, tree, &dopt)) < 0) {
		gop_git_fail(o, rc, "diff %s", op->workdir);
		goto out;
	}
	git_diff_find_options fopt;
	git_diff_find_options_init(&fopt, GIT_DIFF_FIND_OPTIONS_VERSION);
	fopt.flags = GIT_DIFF_FIND_RENAMES | GIT_DIFF_FIND_FOR_UNTRACKED;
	if ((rc = git_diff_find_similar(diff, &fopt)) < 0) {
		gop_git_fail(o, rc, "rename detection");
		goto out;
	}
	gv *t = gv_table(), *files = gv_table();
	gv_set(t, "files", files);
	o->result = t;
	size_t n = git_diff_num_deltas(diff);
	int64_t adds = 0, dels = 0;
	for (size_t i = 0; i < n; i++) {
		if (atomic_load(&o->cancelled))
			break;
		const git_diff_delta *d = git_diff_get_delta(diff, i);
		gv *f = gv_table();
		gv_append(files, f);
		gv_set_str(f, "path", d->new_file.path ? d->new_file.path : d->old_file.path);
		if (d->status == GIT_DELTA_RENAMED || d->status == GIT_DELTA_COPIED) {
			gv_set_str(f, "old_path", d->old_file.path);
			gv_set_int(f, "similarity", d->similarity);
		}
		gv_set_str(f, "status", delta_word(d->status));
		if (d->status == GIT_DELTA_UNTRACKED)
			gv_set_bool(f, "untracked", 1);
		if (d->old_file.mode && d->new_file.mode && d->old_file.mode != d->new_file.mode) {
			gv_set_int(f, "old_mode", d->old_file.mode);
			gv_set_int(f, "new_mode", d->new_file.mode);
		}
		git_patch *patch = NULL;
		if ((rc = git_patch_from_diff(&patch, diff, i)) < 0) {
			gop_git_fail(o, rc, "diff of %s", d->new_file.path);
			break;
		}
		int binary = (d->flags & GIT_DIFF_FLAG_BINARY) != 0;
		gv_set_bool(f, "binary", binary);
		size_t ctx = 0, a = 0, r = 0;
		if (patch)
			git_patch_line_stats(&ctx, &a, &r, patch);
		gv_set_int(f, "additions", (int64_t)a);
		gv_set_int(f, "deletions", (int64_t)r);
		adds += (int64_t)a;
		dels += (int64_t)r;
		if (op->patch && patch) {
			git_buf buf = GIT_BUF_INIT;
			if (git_patch_to_buf(&buf, patch) == 0) {
				size_t len = buf.size;
				if ((int64_t)len > op->max_bytes) {
					len = (size_t)op->max_bytes;
					gv_set_bool(f, "truncated", 1);
				}
				gv_set(f, "patch", gv_strn(buf.ptr ? buf.ptr : "", len));
			}
			git_buf_dispose(&buf);
		}
		git_patch_free(patch);
	}
	gv_set_int(t, "additions", adds);
	gv_set_int(t, "deletions", dels);
	if (atomic_load(&o->cancelled))
		gop_fail(o, "cancelled", NULL, "cancelled");
out:
	git_diff_free(diff);
	git_tree_free(tree);
	git_object_free(obj);
	git_repository_free(repo);
}

static void destroy_diff(gop *o)
{
	struct op_diff *op = (struct op_diff *)o;
	free(op->gitdir);
	free(op->workdir);
	free(op->rev);
	strv_free(op->paths);
}

static int l_diff(lua_State *L)
{
	const char *what = "git.diff";
	const char *gitdir = opt_str(L, what, "gitdir", 1);
	const char *workdir = opt_str(L, what, "workdir", 1);
	const char *rev = opt_str(L, what, "base", 1);
	lua_Integer context = opt_int(L, what, "context", 3);
	lua_Integer max_bytes = opt_int(L, what, "max_bytes", 1 << 20);
	int patch = opt_bool(L, what, "patch", 1);
	int untracked = opt_bool(L, what, "untracked", 1);
	luaL_argcheck(L, context >= 0 && context < 100000, 1, "context: out of range");
	opt_strv(L, what, "paths", 0);
	fdr_wait *w = gop_wait(L, what);
	struct op_diff *op = (struct op_diff *)gop_new(sizeof *op, what, run_diff, destroy_diff);
	op->gitdir = gx_strdup(gitdir);
	op->workdir = gx_strdup(workdir);
	op->rev = gx_strdup(rev);
	op->paths = opt_strv(L, what, "paths", 1);
	op->context = (int)context;
	op->max_bytes = max_bytes;
	op->patch = patch;
	op->untracked = untracked;
	return gop_start(L, w, &op->base);
}

/* ---- log{gitdir=, rev=, hide=, n=} ---- */

struct op_log {
	gop base;
	char *gitdir, *rev, *hide;
	int64_t n;
};

static gv *sig_gv(const git_signature *s)
{
	gv *t = gv_table();
	gv_set_str(t, "name", s->name);
	gv_set_str(t, "email", s->email);
	gv_set_int(t, "time", s->when.time);
	gv_set_int(t, "offset", s->when.offset);
	return t;
}

static void run_log(gop *o)
{
	struct op_log *op = (struct op_log *)o;
	git_repository *repo = NULL;
	git_revwalk *walk = NULL;
	git_object *obj = NULL;
	if (open_repo(o, &repo, op->gitdir, NULL) < 0)
		return;
	int rc;
	if ((rc = git_revwalk_new(&walk, repo)) < 0) {
		gop_git_fail(o, rc, "log");
		goto out;
	}
	git_revwalk_sorting(walk, GIT_SORT_TOPOLOGICAL | GIT_SORT_TIME);
	if ((rc = git_revparse_single(&obj, repo, op->rev)) < 0 ||
	    (rc = git_revwalk_push(walk, git_object_id(obj))) < 0) {
		if (rc == GIT_ENOTFOUND)
			gop_fail(o, "git.not_found", NULL, "log: unknown revision '%s'", op->rev);
		else
			gop_git_fail(o, rc, "log %s", op->rev);
		goto out;
	}
	if (op->hide) {
		git_object *h = NULL;
		if ((rc = git_revparse_single(&h, repo, op->hide)) < 0 ||
		    (rc = git_revwalk_hide(walk, git_object_id(h))) < 0) {
			git_object_free(h);
			gop_git_fail(o, rc, "log: hide %s", op->hide);
			goto out;
		}
		git_object_free(h);
	}
	gv *t = gv_table();
	o->result = t;
	git_oid id;
	for (int64_t k = 0; k < op->n && (rc = git_revwalk_next(&id, walk)) == 0; k++) {
		git_commit *c = NULL;
		if ((rc = git_commit_lookup(&c, repo, &id)) < 0) {
			gop_git_fail(o, rc, "read commit");
			goto out;
		}
		gv *e = gv_table();
		gv_set(e, "id", gv_oid(&id));
		gv_set_str(e, "summary", git_commit_summary(c));
		gv_set_str(e, "message", git_commit_message(c));
		gv_set(e, "author", sig_gv(git_commit_author(c)));
		gv_set(e, "committer", sig_gv(git_commit_committer(c)));
		gv *parents = gv_table();
		for (unsigned i = 0; i < git_commit_parentcount(c); i++)
			gv_append(parents, gv_oid(git_commit_parent_id(c, i)));
		gv_set(e, "parents", parents);
		gv_append(t, e);
		git_commit_free(c);
	}
	if (rc < 0 && rc != GIT_ITEROVER)
		gop_git_fail(o, rc, "log");
out:
	git_object_free(obj);
	git_revwalk_free(walk);
	git_repository_free(repo);
}

static void destroy_log(gop *o)
{
	struct op_log *op = (struct op_log *)o;
	free(op->gitdir);
	free(op->rev);
	free(op->hide);
}

static int l_log(lua_State *L)
{
	const char *what = "git.log";
	const char *gitdir = opt_str(L, what, "gitdir", 1);
	const char *rev = opt_str(L, what, "rev", 0);
	const char *hide = opt_str(L, what, "hide", 0);
	lua_Integer n = opt_int(L, what, "n", 100);
	fdr_wait *w = gop_wait(L, what);
	struct op_log *op = (struct op_log *)gop_new(sizeof *op, what, run_log, destroy_log);
	op->gitdir = gx_strdup(gitdir);
	op->rev = gx_strdup(rev ? rev : "HEAD");
	op->hide = gx_strdup(hide);
	op->n = n;
	return gop_start(L, w, &op->base);
}

/* ---- setup{workdir=, head=, refs=, alternates=, config=, owner_uid=, owner_gid=}:
 * make the git directory of a workspace (the work tree and index exist already) ---- */

struct op_setup {
	gop base;
	char *workdir, *head, *alternates;
	char **ref_names, **ref_ids, **cfg_keys, **cfg_vals;
	int64_t uid, gid;
};

static void run_setup(gop *o)
{
	struct op_setup *op = (struct op_setup *)o;
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	char path[4096];
	git_repository_init_options io;
	git_repository_init_options_init(&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	io.flags = GIT_REPOSITORY_INIT_NO_REINIT | GIT_REPOSITORY_INIT_MKPATH;
	io.initial_head = op->head;
	int rc = git_repository_init_ext(&repo, op->workdir, &io);
	if (rc < 0) {
		gop_git_fail(o, rc, "init %s", op->workdir);
		return;
	}
	git_repository_free(repo);
	repo = NULL;
	snprintf(path, sizeof path, "%s/.git/objects/info/alternates", op->workdir);
	if (op->alternates && write_file(path, op->alternates, strlen(op->alternates), 0644) < 0) {
		gop_sys_fail(o, "write %s", path);
		return;
	}
	snprintf(path, sizeof path, "%s/.git", op->workdir);
	if ((rc = open_repo(o, &repo, path, op->workdir)) < 0)
		return;
	if ((rc = git_repository_config(&cfg, repo)) < 0) {
		gop_git_fail(o, rc, "configuration");
		goto out;
	}
	git_config *local = NULL;
	if ((rc = git_config_open_level(&local, cfg, GIT_CONFIG_LEVEL_LOCAL)) < 0) {
		gop_git_fail(o, rc, "configuration");
		goto out;
	}
	for (size_t i = 0; op->cfg_keys && op->cfg_keys[i]; i++)
		if ((rc = git_config_set_string(local, op->cfg_keys[i], op->cfg_vals[i])) < 0) {
			gop_git_fail(o, rc, "set %s", op->cfg_keys[i]);
			git_config_free(local);
			goto out;
		}
	git_config_free(local);
	for (size_t i = 0; op->ref_names && op->ref_names[i]; i++) {
		git_oid id;
		git_reference *ref = NULL;
		if ((rc = git_oid_fromstr(&id, op->ref_ids[i])) < 0 ||
		    (rc = git_reference_create(&ref, repo, op->ref_names[i], &id, 0,
					       "foundry: workspace created")) < 0) {
			gop_git_fail(o, rc, "create %s", op->ref_names[i]);
			goto out;
		}
		git_reference_free(ref);
	}
	snprintf(path, sizeof path, "%s/.git", op->workdir);
	if (op->uid >= 0 && chown_tree(path, (uid_t)op->uid, (gid_t)op->gid) < 0)
		gop_sys_fail(o, "chown %s", path);
out:
	git_config_free(cfg);
	git_repository_free(repo);
}

static void destroy_setup(gop *o)
{
	struct op_setup *op = (struct op_setup *)o;
	free(op->workdir);
	free(op->head);
	free(op->alternates);
	strv_free(op->ref_names);
	strv_free(op->ref_ids);
	strv_free(op->cfg_keys);
	strv_free(op->cfg_vals);
}

/* A table {k = v} at key as two parallel NULL-terminated lists (sorted by key). */
static void opt_map(lua_State *L, const char *what, const char *key, char ***keys, char ***vals, int copy)
{
	lua_getfield(L, 1, key);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return;
	}
	luaL_checktype(L, -1, LUA_TTABLE);
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "%s: %s: expected a table of strings", what, key);
		n++;
		lua_pop(L, 1);
	}
	if (!copy) {
		lua_pop(L, 1);
		return;
	}
	*keys = gx_calloc(n + 1, sizeof **keys);
	*vals = gx_calloc(n + 1, sizeof **vals);
	size_t i = 0;
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		(*keys)[i] = gx_strdup(lua_tostring(L, -2));
		(*vals)[i++] = gx_strdup(lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static int l_setup(lua_State *L)
{
	const char *what = "git.setup";
	const char *workdir = opt_str(L, what, "workdir", 1);
	const char *head = opt_str(L, what, "head", 1);
	const char *alternates = opt_str(L, what, "alternates", 0);
	lua_Integer uid = opt_int(L, what, "owner_uid", -1);
	lua_Integer gid = opt_int(L, what, "owner_gid", -1);
	opt_map(L, what, "refs", NULL, NULL, 0);
	opt_map(L, what, "config", NULL, NULL, 0);
	fdr_wait *w = gop_wait(L, what);
	struct op_setup *op = (struct op_setup *)gop_new(sizeof *op, what, run_setup, destroy_setup);
	op->workdir = gx_strdup(workdir);
	op->head = gx_strdup(head);
	op->alternates = gx_strdup(alternates);
	op->uid = uid;
	op->gid = gid;
	opt_map(L, what, "refs", &op->ref_names, &op->ref_ids, 1);
	opt_map(L, what, "config", &op->cfg_keys, &op->cfg_vals, 1);
	return gop_start(L, w, &op->base);
}

/* ---- sync{source=, workspace=, ref=, dest=, force=}: copy a workspace branch and the
 * objects only it has into the source repository ---- */

struct op_sync {
	gop base;
	char *source, *workspace, *ref, *dest;
	int force;
};

struct sync_ctx {
	gop *op;
	git_odb *from, *to;
	git_repository *ws;
	oidset seen;
	size_t copied;
};

/* Copy one object, verifying it hashes to its id (the workspace is written by the
 * agent). */
static int sync_copy(struct sync_ctx *c, const git_oid *id)
{
	git_odb_object *obj = NULL;
	int rc = git_odb_read(&obj, c->from, id);
	if (rc < 0)
		return gop_git_fail(c->op, rc, "read object from the workspace");
	git_oid written;
	rc = git_odb_write(&written, c->to, git_odb_object_data(obj), git_odb_object_size(obj),
			   git_odb_object_type(obj));
	git_odb_object_free(obj);
	if (rc < 0)
		return gop_git_fail(c->op, rc, "write object into the source");
	if (!git_oid_equal(&written, id)) {
		gop_fail(c->op, "git.corrupt", NULL, "workspace object does not match its id");
		return -1;
	}
	c->copied++;
	return 0;
}

static int sync_tree(struct sync_ctx *c, const git_oid *tid)
{
	if (!oidset_add(&c->seen, tid) || git_odb_exists(c->to, tid))
		return 0;
	git_tree *t = NULL;
	int rc = git_tree_lookup(&t, c->ws, tid);
	if (rc < 0)
		return gop_git_fail(c->op, rc, "read tree");
	size_t n = git_tree_entrycount(t);
	for (size_t i = 0; i < n && rc == 0; i++) {
		const git_tree_entry *e = git_tree_entry_byindex(t, i);
		const git_oid *eid = git_tree_entry_id(e);
		switch (git_tree_entry_type(e)) {
		case GIT_OBJECT_TREE:
			rc = sync_tree(c, eid);
			break;
		case GIT_OBJECT_BLOB:
			if (oidset_add(&c->seen, eid) && !git_odb_exists(c->to, eid))
				rc = sync_copy(c, eid);
			break;
		default: /* gitlinks name commits of other repositories */
			break;
		}
	}
	git_tree_free(t);
	return rc < 0 ? rc : sync_copy(c, tid);
}

static void run_sync(gop *o)
{
	struct op_sync *op = (struct op_sync *)o;
	git_repository *src = NULL, *ws = NULL;
	git_reference *wsref = NULL, *cur = NULL, *head = NULL, *out_ref = NULL;
	git_revwalk *walk = NULL;
	struct sync_ctx c = {.op = o};
	int rc;
	if (open_repo(o, &src, op->source, NULL) < 0 || open_repo(o, &ws, op->workspace, NULL) < 0)
		goto out;
	if ((rc = git_reference_lookup(&wsref, ws, op->ref)) < 0 ||
	    git_reference_type(wsref) != GIT_REFERENCE_DIRECT) {
		gop_fail(o, "git.not_found", NULL, "the workspace has no branch %s", op->ref);
		goto out;
	}
	const git_oid *tip = git_reference_target(wsref);
	gv *t = gv_table();
	o->result = t;
	gv_set(t, "id", gv_oid(tip));
	gv_set_str(t, "ref", op->dest);
	rc = git_reference_lookup(&cur, src, op->dest);
	if (rc < 0 && rc != GIT_ENOTFOUND) {
		gop_git_fail(o, rc, "look up %s", op->dest);
		goto out;
	}
	if (cur && git_oid_equal(git_reference_target(cur), tip)) {
		gv_set_bool(t, "updated", 0);
		goto out;
	}
	/* Never move the branch checked out in the user's work tree under their feet. */
	if (!git_repository_is_bare(src) && git_reference_lookup(&head, src, "HEAD") == 0 &&
	    git_reference_type(head) == GIT_REFERENCE_SYMBOLIC &&
	    strcmp(git_reference_symbolic_target(head), op->dest) == 0) {
		gop_fail(o, "git.checked_out", "check out another branch there, then sync",
			 "%s is checked out in %s; not updating it", op->dest,
			 git_repository_workdir(src));
		goto out;
	}
	git_error_clear();
	/* Copy the commits the source lacks, newest first, with their new trees and blobs. */
	if ((rc = git_repository_odb(&c.from, ws)) < 0 || (rc = git_repository_odb(&c.to, src)) < 0 ||
	    (rc = git_revwalk_new(&walk, ws)) < 0 || (rc = git_revwalk_push(walk, tip)) < 0) {
		gop_git_fail(o, rc, "sync");
		goto out;
	}
	c.ws = ws;
	git_oid id;
	size_t commits = 0;
	while ((rc = git_revwalk_next(&id, walk)) == 0) {
		if (atomic_load(&o->cancelled)) {
			gop_fail(o, "cancelled", NULL, "cancelled");
			goto out;
		}
		if (git_odb_exists(c.to, &id)) {
			git_revwalk_hide(walk, &id);
			continue;
		}
		git_commit *cm = NULL;
		if ((rc = git_commit_lookup(&cm, ws, &id)) < 0) {
			gop_git_fail(o, rc, "read commit");
			goto out;
		}
		rc = sync_tree(&c, git_commit_tree_id(cm));
		git_commit_free(cm);
		if (rc < 0 || (rc = sync_copy(&c, &id)) < 0)
			goto out;
		commits++;
	}
	if (rc != GIT_ITEROVER) {
		gop_git_fail(o, rc, "walk history");
		goto out;
	}
	if (cur) {
		const git_oid *old = git_reference_target(cur);
		gv_set(t, "old", gv_oid(old));
		int ff = git_graph_descendant_of(src, tip, old);
		gv_set_bool(t, "forced", ff != 1);
		if (ff != 1 && !op->force) {
			gop_fail(o, "git.not_fast_forward", "pass force=true to overwrite it",
				 "%s in the source has commits the workspace does not: not a "
				 "fast-forward", op->dest);
			goto out;
		}
		rc = git_reference_create_matching(&out_ref, src, op->dest, tip, 1, old,
						   "foundry: sync from workspace");
	} else {
		rc = git_reference_create(&out_ref, src, op->dest, tip, 0,
					  "foundry: sync from workspace");
		gv_set_bool(t, "created", 1);
	}
	if (rc < 0) {
		gop_git_fail(o, rc, "update %s", op->dest);
		goto out;
	}
	gv_set_bool(t, "updated", 1);
	gv_set_int(t, "commits", (int64_t)commits);
	gv_set_int(t, "objects", (int64_t)c.copied);
out:
	oidset_free(&c.seen);
	git_odb_free(c.from);
	git_odb_free(c.to);
	git_revwalk_free(walk);
	git_reference_free(out_ref);
	git_reference_free(head);
	git_reference_free(cur);
	git_reference_free(wsref);
	git_repository_free(ws);
	git_repository_free(src);
}

static void destroy_sync(gop *o)
{
	struct op_sync *op = (struct op_sync *)o;
	free(op->source);
	free(op->workspace);
	free(op->ref);
	free(op->dest);
}

static int l_sync(lua_State *L)
{
	const char *what = "git.sync";
	const char *source = opt_str(L, what, "source", 1);
	const char *workspace = opt_str(L, what, "workspace", 1);
	const char *ref = opt_str(L, what, "ref", 1);
	const char *dest = opt_str(L, what, "dest", 0);
	int force = opt_bool(L, what, "force", 0);
	fdr_wait *w = gop_wait(L, what);
	struct op_sync *op = (struct op_sync *)gop_new(sizeof *op, what, run_sync, destroy_sync);
	op->source = gx_strdup(source);
	op->workspace = gx_strdup(workspace);
	op->ref = gx_strdup(ref);
	op->dest = gx_strdup(dest ? dest : ref);
	op->force = force;
	return gop_start(L, w, &op->base);
}

/* ---- mirror{url=, path=, username=, password=, ssh_key=, ssh_pubkey=, passphrase=}:
 * a bare mirror (every ref of the remote, as is) made or brought up to date by fetching ----
 *
 * Credentials are asked for by the Lua wrapper: a first attempt runs without any; when
 * the server asks, the operation fails with git.auth_required carrying the URL, the
 * user name from the URL and the allowed kinds; the wrapper calls the user's credential
 * function in its task (it may wait, e.g. on the vault) and retries with the answer. A
 * second request in one attempt means the answer was refused: git.auth. */

struct op_mirror {
	gop base;
	char *url, *path, *username, *password, *ssh_key, *ssh_pubkey, *passphrase;
	int asked;
	char want_url[1024], want_user[256];
	unsigned int allowed;
};

static int mirror_cred(git_credential **out, const char *url, const char *user_from_url,
		       unsigned int allowed, void *payload)
{
	struct op_mirror *op = payload;
	if (atomic_load(&op->base.cancelled))
		return GIT_EUSER;
	if (op->asked++ || (!op->password && !op->ssh_key)) {
		snprintf(op->want_url, sizeof op->want_url, "%s", url ? url : "");
		snprintf(op->want_user, sizeof op->want_user, "%s", user_from_url ? user_from_url : "");
		op->allowed = allowed;
		git_error_set_str(GIT_ERROR_NET, op->asked > 1 ? "credentials refused"
							     : "credentials required");
		return GIT_EAUTH;
	}
	const char *user = op->username ? op->username : user_from_url ? user_from_url : "git";
	if (op->ssh_key && (allowed & GIT_CREDENTIAL_SSH_MEMORY))
		return git_credential_ssh_key_memory_new(out, user, op->ssh_pubkey, op->ssh_key,
							 op->passphrase);
	if (op->password && (allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT))
		return git_credential_userpass_plaintext_new(out, user, op->password);
	git_error_set_str(GIT_ERROR_NET, "the credentials given do not fit what the server allows");
	return GIT_EAUTH;
}

static int mirror_progress(const git_indexer_progress *stats, void *payload)
{
	(void)stats;
	struct op_mirror *op = payload;
	return atomic_load(&op->base.cancelled) ? GIT_EUSER : 0;
}

/* An in-memory remote for the mirror's URL. libgit2 1.5 leaks memory (about 20 KiB per
 * configuration entry, in its PCRE2 matching) when it looks up url.*.insteadOf rules,
 * which it does for every remote created with a repository unless told not to; Foundry
 * mirrors the URL it is given, rewritten by nothing. */
static int mirror_remote(git_remote **out, git_repository *repo, const char *url)
{
	git_remote_create_options ro;
	git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	ro.repository = repo;
	ro.fetchspec = "+refs/*:refs/*";
	ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
	return git_remote_create_with_opts(out, url, &ro);
}

static void run_mirror(gop *o)
{
	struct op_mirror *op = (struct op_mirror *)o;
	git_repository *repo = NULL;
	git_remote *remote = NULL;
	git_buf def = GIT_BUF_INIT;
	git_remote_callbacks cb;
	git_remote_init_callbacks(&cb, GIT_REMOTE_CALLBACKS_VERSION);
	cb.credentials = mirror_cred;
	cb.transfer_progress = mirror_progress;
	cb.payload = op;
	int rc, fresh = 0;
	struct stat st;
	if (stat(op->path, &st) < 0) {
		git_repository_init_options io;
		git_repository_init_options_init(&io, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
		io.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH |
			   GIT_REPOSITORY_INIT_NO_REINIT;
		if ((rc = git_repository_init_ext(&repo, op->path, &io)) < 0) {
			gop_git_fail(o, rc, "init %s", op->path);
			goto out;
		}
		/* for people looking at the cache: where it comes from */
		git_config *cfg = NULL;
		if (git_repository_config(&cfg, repo) == 0) {
			git_config_set_string(cfg, "remote.origin.url", op->url);
			git_config_set_string(cfg, "remote.origin.fetch", "+refs/*:refs/*");
			git_config_set_bool(cfg, "remote.origin.mirror", 1);
			git_config_free(cfg);
		}
		fresh = 1;
	} else if ((rc = open_repo(o, &repo, op->path, NULL)) < 0) {
		goto out;
	}
	if ((rc = mirror_remote(&remote, repo, op->url)) < 0) {
		gop_git_fail(o, rc, "remote %s", op->url);
		goto out;
	}
	if ((rc = git_remote_connect(remote, GIT_DIRECTION_FETCH, &cb, NULL, NULL)) < 0)
		goto fail;
	if ((rc = git_remote_download(remote, NULL, NULL)) < 0)
		goto fail;
	if ((rc = git_remote_update_tips(remote, &cb, 0, GIT_REMOTE_DOWNLOAD_TAGS_ALL,
					 "foundry: mirror")) < 0)
		goto fail;
	if ((rc = git_remote_prune(remote, &cb)) < 0)
		goto fail;
	gv *t = gv_table();
	o->result = t;
	gv_set_str(t, "path", op->path);
	gv_set_bool(t, "created", fresh);
	if (git_remote_default_branch(&def, remote) == 0 && def.ptr) {
		git_repository_set_head(repo, def.ptr);
		gv_set_str(t, "default_branch", def.ptr);
	}
	git_error_clear();
	git_remote_disconnect(remote);
	goto out;
fail:
	if (rc == GIT_EAUTH && op->asked) {
		gv *x = gv_table();
		gv_set_str(x, "url", op->want_url);
		if (op->want_user[0])
			gv_set_str(x, "username", op->want_user);
		gv *allowed = gv_table();
		if (op->allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT)
			gv_append(allowed, gv_str("userpass"));
		if (op->allowed & (GIT_CREDENTIAL_SSH_KEY | GIT_CREDENTIAL_SSH_MEMORY))
			gv_append(allowed, gv_str("ssh_key"));
		gv_set(x, "allowed", allowed);
		o->err.extra = x;
		if (op->asked > 1 || op->password || op->ssh_key)
			gop_fail(o, "git.auth", "check the credentials for this remote",
				 "%s: authentication failed", op->url);
		else
			gop_fail(o, "git.auth_required", "give credentials for this remote",
				 "%s: authentication required", op->url);
	} else {
		gop_git_fail(o, rc, "fetch %s", op->url);
	}
	if (fresh) { /* leave nothing behind after a failed first fetch */
		git_remote_free(remote);
		remote = NULL;
		git_repository_free(repo);
		repo = NULL;
		remove_tree(op->path);
	}
out:
	git_buf_dispose(&def);
	git_remote_free(remote);
	git_repository_free(repo);
}

static void wipe_str(char *s)
{
	if (s) {
		fdr_wipe(s, strlen(s));
		free(s);
	}
}

static void destroy_mirror(gop *o)
{
	struct op_mirror *op = (struct op_mirror *)o;
	free(op->url);
	free(op->path);
	free(op->username);
	wipe_str(op->password);
	wipe_str(op->ssh_key);
	free(op->ssh_pubkey);
	wipe_str(op->passphrase);
}

static int l_mirror(lua_State *L)
{
	const char *what = "git.mirror";
	const char *url = opt_str(L, what, "url", 1);
	const char *path = opt_str(L, what, "path", 1);
	const char *username = opt_str(L, what, "username", 0);
	const char *password = opt_str(L, what, "password", 0);
	const char *ssh_key = opt_str(L, what, "ssh_key", 0);
	const char *ssh_pubkey = opt_str(L, what, "ssh_pubkey", 0);
	const char *passphrase = opt_str(L, what, "passphrase", 0);
	fdr_wait *w = gop_wait(L, what);
	struct op_mirror *op = (struct op_mirror *)gop_new(sizeof *op, what, run_mirror, destroy_mirror);
	op->url = gx_strdup(url);
	op->path = gx_strdup(path);
	op->username = gx_strdup(username);
	op->password = gx_strdup(password);
	op->ssh_key = gx_strdup(ssh_key);
	op->ssh_pubkey = gx_strdup(ssh_pubkey);
	op->passphrase = gx_strdup(passphrase);
	return gop_start(L, w, &op->base);
}

/* ---- remove{path=} and chown{path=, uid=, gid=} on the thread pool ---- */

struct op_path {
	gop base;
	char *path;
	int64_t uid, gid;
};

static void run_remove(gop *o)
{
	struct op_path *op = (struct op_path *)o;
	if (remove_tree(op->path) < 0)
		gop_sys_fail(o, "remove %s", op->path);
}

static void run_chown(gop *o)
{
	struct op_path *op = (struct op_path *)o;
	if (chown_tree(op->path, (uid_t)op->uid, (gid_t)op->gid) < 0)
		gop_sys_fail(o, "chown %s", op->path);
}

static void destroy_path(gop *o)
{
	free(((struct op_path *)o)->path);
}

static int l_remove(lua_State *L)
{
	const char *path = opt_str(L, "git.remove", "path", 1);
	luaL_argcheck(L, path[0] == '/' && strcmp(path, "/") != 0, 1, "path: expected an absolute path below /");
	fdr_wait *w = gop_wait(L, "git.remove");
	struct op_path *op = (struct op_path *)gop_new(sizeof *op, "git.remove", run_remove, destroy_path);
	op->path = gx_strdup(path);
	return gop_start(L, w, &op->base);
}

static int l_chown(lua_State *L)
{
	const char *path = opt_str(L, "git.chown", "path", 1);
	lua_Integer uid = opt_int(L, "git.chown", "uid", -1);
	lua_Integer gid = opt_int(L, "git.chown", "gid", -1);
	luaL_argcheck(L, uid >= 0 && gid >= 0, 1, "uid, gid: expected non-negative integers");
	fdr_wait *w = gop_wait(L, "git.chown");
	struct op_path *op = (struct op_path *)gop_new(sizeof *op, "git.chown", run_chown, destroy_path);
	op->path = gx_strdup(path);
	op->uid = uid;
	op->gid = gid;
	return gop_start(L, w, &op->base);
}

/* ---- synchronous helpers ---- */

static int l_valid_branch(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	char full[1024];
	int ok = 0;
	if (strlen(name) < 900 && strcmp(name, "HEAD") != 0 && name[0] != '-') {
		snprintf(full, sizeof full, "refs/heads/%s", name);
		ok = git_reference_is_valid_name(full);
	}
	lua_pushboolean(L, ok);
	return 1;
}

static int l_version(lua_State *L)
{
	int major, minor, rev;
	git_libgit2_version(&major, &minor, &rev);
	lua_pushfstring(L, "%d.%d.%d", major, minor, rev);
	return 1;
}

int luaopen_foundry_git(lua_State *L)
{
	/* Once per process; libgit2 counts, and its global state is never torn down: a
	 * worker may still be running when the host closes. */
	static int initialised;
	if (!initialised) {
		git_libgit2_init();
		/* Foundry opens only repositories it was pointed at or made itself, and
		 * libgit2 runs no hooks, filters or fsmonitor commands; workspaces owned by
		 * the sandbox user (uid 1000) must stay readable by a root host. */
		git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
		/* Like git, do not re-hash every object read: it costs a third of a store
		 * build and of a checkout's CPU. Objects from a workspace (written by the
		 * agent) are hashed where it matters: sync writes them by content and
		 * checks the id. */
		git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0);
		initialised = 1;
	}
	static const luaL_Reg fns[] = {
		{"discover", l_discover}, {"resolve", l_resolve},   {"refs", l_refs},
		{"config", l_config},     {"status", l_status},     {"commit_all", l_commit_all},
		{"diff", l_diff},         {"log", l_log},           {"setup", l_setup},
		{"sync", l_sync},         {"mirror", l_mirror},     {"remove", l_remove},
		{"chown", l_chown},       {"valid_branch", l_valid_branch},
		{"version", l_version},   {"store_acquire", gstore_acquire},
		{"store_release", gstore_release}, {"store_inspect", gstore_inspect},
		{"checkout", gcheckout_run},
		{NULL, NULL}};
	luaL_newlib(L, fns);
	return 1;
}
