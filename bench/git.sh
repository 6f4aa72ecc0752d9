#!/usr/bin/env bash
# Workspaces vs git worktrees, side by side in one run (docs/performance.md, "Git workspaces").
#
#   bash bench/git.sh [ROUNDS]          (default 5 rounds per repository)
#
# Generates, once (kept in $BENCH_DIR, default /var/tmp/foundry-bench-git):
#   r10k   10 000 files, 2 000 commits on main (5 files changed per commit), plus
#          feature-a and secret-b branches with objects of their own
#   r100k  100 000 files, 3 commits, plus the same two branches
# then, per repository, creates ROUNDS workspaces with foundry.git.workspace.create and
# ROUNDS worktrees with `git worktree add` (alternating which goes first), then destroys
# them all with workspace:destroy and `git worktree remove`. The first workspace builds
# the shared object store; the others reuse it. Creations and removals are timed in
# separate phases, 40 s apart: ext4 makes new inodes slow for ~30 s after mass deletion.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
DIR=${BENCH_DIR:-/var/tmp/foundry-bench-git}
FOUNDRY=${FOUNDRY:-build/foundry}
[ -x "$FOUNDRY" ] || { echo "bench/git.sh: build first (make)" >&2; exit 1; }
mkdir -p "$DIR"

gen() { # gen NAME FILES COMMITS
  local repo=$DIR/$1
  [ -f "$repo/.git/bench-ok" ] && return 0
  rm -rf "$repo"
  echo "generating $1 ($2 files, $3 commits)..."
  git init -q -b main "$repo"
  python3 - "$2" "$3" <<'EOF' | git -C "$repo" fast-import --quiet
import random, sys
files, commits = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(42)
words = ("alpha beta gamma delta return local function if then end for while struct int char "
         "void static const self value index buffer result error count").split()
out = sys.stdout.buffer
def blob(n):
    return ("".join(" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 10))) + " %d\n" % rnd.randint(0, 1 << 30)
                    for _ in range(n))).encode()
def path(i):
    return "src/a%02d/b%02d/f%06d.c" % (i // 5000, (i // 100) % 50, i)
mark, t = 0, 1700000000
def commit(branch, msg, changes, frm=None):
    global mark, t
    mark += 1; t += 60
    out.write(b"commit refs/heads/%s\nmark :%d\n" % (branch.encode(), mark))
    out.write(b"author Bench <bench@example.com> %d +0000\ncommitter Bench <bench@example.com> %d +0000\n" % (t, t))
    m = msg.encode(); out.write(b"data %d\n%s\n" % (len(m), m))
    if frm: out.write(b"from %s\n" % frm.encode())
    for p, data in changes:
        out.write(b"M 100644 inline %s\ndata %d\n" % (p.encode(), len(data))); out.write(data); out.write(b"\n")
    return mark
mains = [commit("main", "initial", [(path(i), blob(rnd.randint(5, 60))) for i in range(files)])]
for c in range(1, commits):
    mains.append(commit("main", "change %d" % c, [(path(rnd.randrange(files)), blob(rnd.randint(5, 60))) for _ in range(5)]))
commit("feature-a", "feature", [("feature/only-a.txt", b"feature a\n")], frm=":%d" % mains[-1])
for c in range(50):
    commit("secret-b", "secret %d" % c, [(path(rnd.randrange(files)), blob(20)) for _ in range(5)],
           frm=None if c else ":%d" % mains[max(0, len(mains) - 20)])
EOF
  git -C "$repo" config user.name Bench
  git -C "$repo" config user.email bench@example.com
  git -C "$repo" checkout -q -f main
  git -C "$repo" gc -q
  touch "$repo/.git/bench-ok"
}

gen r10k 10000 2000
gen r100k 100000 3
sync
"$FOUNDRY" run bench/git.lua "$DIR" "$ROUNDS"
