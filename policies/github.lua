-- GitHub: the default network policy, plus what a sandbox may do with git and GitHub's
-- API. These rules apply to every sandbox whose policy does not give its own `git` and
-- `github` tables (see docs/policies.md "Git and GitHub rules"); a preset changes them
-- with `policy = { extends = "github", github = { options = { allow_pr = false } } }`.
--
-- An agent may read, commit and push its own branch, open a pull request from it and
-- comment. It may not merge, approve, close what others opened, cut releases, move refs
-- behind git's back, or touch the repository's settings, secrets or protections.
return {
  extends = "default",
  description = "default, with git and the GitHub API limited to the sandbox's own branch",

  -- git over HTTPS (smart HTTP), checked in the proxy: see foundry.gitsafety
  git = {
    protected = { "main", "master", "release/*", "production" }, -- and the upstream's default branch
    allow = {},                                                   -- other branches it may push
    read = {},                                                    -- other branches it may fetch
    tags = true,                                                  -- tags are visible (never pushable)
    restricted = { ".github/workflows/", ".github/actions/", "CODEOWNERS" },
    warn = {},                                                    -- allowed, but reported
    max_bytes = 100 * 1024 * 1024,
    read_other_repos = true,                                      -- fetching other repositories
  },

  github = {
    -- switches a preset may turn off (or on)
    options = { allow_pr = true, allow_comment = true, allow_issue = true },
    -- a request no rule names: allowed (reads, comments, labels, issues...)
    default = "allow",

    -- REST: { METHOD, path, deny|allow = "what", when = "condition", unless = "option" }.
    -- ":x" is one path segment, "**" the rest (none included: "/hooks/**" covers "/hooks").
    -- The first rule that applies decides.
    rest = {
      { "PUT",    "/repos/:owner/:repo/pulls/:number/merge",                deny = "merging pull requests" },
      { "POST",   "/repos/:owner/:repo/merges",                             deny = "merging branches" },
      { "POST",   "/repos/:owner/:repo/merge-upstream",                     deny = "merging branches" },
      { "PUT",    "/repos/:owner/:repo/pulls/:number/update-branch",        deny = "merging into a pull request's branch" },
      { "POST",   "/repos/:owner/:repo/pulls/:number/reviews",              deny = "approving pull requests", when = "approves" },
      { "POST",   "/repos/:owner/:repo/pulls/:number/reviews/:id/events",   deny = "approving pull requests", when = "approves" },
      { "PUT",    "/repos/:owner/:repo/pulls/:number/reviews/:id/dismissals", deny = "dismissing reviews" },
      { "PATCH",  "/repos/:owner/:repo/pulls/:number",                      deny = "closing or reopening others' pull requests", when = "state_of_others" },
      { "PATCH",  "/repos/:owner/:repo/issues/:number",                     deny = "closing or reopening others' issues", when = "state_of_others" },
      { "POST",   "/repos/:owner/:repo/pulls",                              deny = "opening pull requests", unless = "allow_pr" },
      { "POST",   "/repos/:owner/:repo/pulls",                              deny = "pull requests from a branch other than its own", when = "head_not_own" },
      { "POST",   "/repos/:owner/:repo/issues",                             deny = "opening issues", unless = "allow_issue" },
      { "POST",   "/repos/:owner/:repo/issues/:number/comments",            deny = "commenting", unless = "allow_comment" },
      { "POST",   "/repos/:owner/:repo/pulls/:number/comments",             deny = "commenting", unless = "allow_comment" },
      { "*",      "/repos/:owner/:repo/releases/**",                        deny = "creating, changing or deleting releases", when = "write" },
      { "*",      "/repos/:owner/:repo/git/refs/**",                        deny = "moving refs by API (push with git)", when = "write" },
      { "POST",   "/repos/:owner/:repo/git/tags",                           deny = "creating tags" },
      { "PUT",    "/repos/:owner/:repo/contents/**",                        deny = "writing files on a branch other than its own", when = "contents_not_own" },
      { "DELETE", "/repos/:owner/:repo/contents/**",                        deny = "deleting files on a branch other than its own", when = "contents_not_own" },
      { "*",      "/repos/:owner/:repo/contents/**",                        deny = "changing restricted paths", when = "contents_restricted" },
      { "POST",   "/repos/:owner/:repo/branches/:branch/rename",            deny = "renaming branches" },
      { "*",      "/repos/:owner/:repo/branches/:branch/protection/**",     deny = "changing branch protection", when = "write" },
      { "*",      "/repos/:owner/:repo/rulesets/**",                        deny = "changing rulesets", when = "write" },
      { "*",      "/repos/:owner/:repo/hooks/**",                           deny = "managing webhooks", when = "write" },
      { "*",      "/repos/:owner/:repo/keys/**",                            deny = "managing deploy keys", when = "write" },
      { "*",      "/repos/:owner/:repo/actions/secrets/**",                 deny = "reading or writing Actions secrets" },
      { "*",      "/repos/:owner/:repo/dependabot/secrets/**",              deny = "reading or writing Dependabot secrets" },
      { "*",      "/repos/:owner/:repo/codespaces/secrets/**",              deny = "reading or writing Codespaces secrets" },
      { "*",      "/repos/:owner/:repo/actions/variables/**",               deny = "changing Actions variables", when = "write" },
      { "*",      "/repos/:owner/:repo/environments/**",                    deny = "changing environments", when = "write" },
      { "*",      "/repos/:owner/:repo/actions/permissions/**",             deny = "changing Actions permissions", when = "write" },
      { "POST",   "/repos/:owner/:repo/dispatches",                         deny = "triggering workflows" },
      { "POST",   "/repos/:owner/:repo/actions/workflows/:id/dispatches",   deny = "triggering workflows" },
      { "*",      "/repos/:owner/:repo/collaborators/**",                   deny = "changing collaborators", when = "write" },
      { "*",      "/repos/:owner/:repo/invitations/**",                     deny = "changing invitations", when = "write" },
      { "*",      "/repos/:owner/:repo/teams/**",                           deny = "changing team access", when = "write" },
      { "*",      "/repos/:owner/:repo/pages/**",                           deny = "changing Pages settings", when = "write" },
      { "*",      "/repos/:owner/:repo/topics",                             deny = "changing settings", when = "write" },
      { "*",      "/repos/:owner/:repo/vulnerability-alerts",               deny = "changing settings", when = "write" },
      { "*",      "/repos/:owner/:repo/automated-security-fixes",           deny = "changing settings", when = "write" },
      { "*",      "/repos/:owner/:repo/private-vulnerability-reporting",    deny = "changing settings", when = "write" },
      { "POST",   "/repos/:owner/:repo/transfer",                           deny = "transferring the repository" },
      { "PATCH",  "/repos/:owner/:repo",                                    deny = "changing repository settings" },
      { "DELETE", "/repos/:owner/:repo",                                    deny = "deleting the repository" },
      { "*",      "/repos/:owner/:repo/**",                                 deny = "writing to a repository it was not made for", when = "other_repo" },
      { "*",      "/orgs/**",                                               deny = "changing organisation settings", when = "write" },
      { "*",      "/user/**",                                               deny = "changing the account (keys, emails, repositories)", when = "write" },
      { "*",      "/gists/**",                                              deny = "writing gists (they publish code outside the repository)", when = "write" },
      { "*",      "/admin/**",                                              deny = "site administration" },
    },

    -- GraphQL: { mutation, deny = "what", when = "condition", unless = "option" }, judged
    -- per mutation field of the parsed operation (aliases and fragments included).
    graphql = {
      { "mergePullRequest",            deny = "merging pull requests" },
      { "enablePullRequestAutoMerge",  deny = "enabling auto-merge" },
      { "enqueuePullRequest",          deny = "adding pull requests to the merge queue" },
      { "mergeBranch",                 deny = "merging branches" },
      { "updatePullRequestBranch",     deny = "merging into a pull request's branch" },
      { "addPullRequestReview",        deny = "approving pull requests", when = "approves" },
      { "submitPullRequestReview",     deny = "approving pull requests", when = "approves" },
      { "dismissPullRequestReview",    deny = "dismissing reviews" },
      { "closePullRequest",            deny = "closing pull requests it did not open", when = "node_not_own" },
      { "reopenPullRequest",           deny = "reopening pull requests it did not open", when = "node_not_own" },
      { "closeIssue",                  deny = "closing issues it did not open", when = "node_not_own" },
      { "reopenIssue",                 deny = "reopening issues it did not open", when = "node_not_own" },
      { "updatePullRequest",           deny = "closing or reopening others' pull requests", when = "state_of_others" },
      { "updateIssue",                 deny = "closing or reopening others' issues", when = "state_of_others" },
      { "createPullRequest",           deny = "opening pull requests", unless = "allow_pr" },
      { "createPullRequest",           deny = "pull requests from a branch other than its own", when = "head_not_own" },
      { "createIssue",                 deny = "opening issues", unless = "allow_issue" },
      { "addComment",                  deny = "commenting", unless = "allow_comment" },
      { "createRef",                   deny = "creating refs (push its branch with git)" },
      { "updateRef",                   deny = "moving refs (push its branch with git)" },
      { "updateRefs",                  deny = "moving refs (push its branch with git)" },
      { "deleteRef",                   deny = "deleting refs" },
      { "createCommitOnBranch",        deny = "committing to a branch other than its own", when = "commit_not_own" },
      { "createCommitOnBranch",        deny = "changing restricted paths", when = "commit_restricted" },
      { "createRelease",               deny = "creating releases" },
      { "updateRelease",               deny = "changing releases" },
      { "deleteRelease",               deny = "deleting releases" },
      { "createBranchProtectionRule",  deny = "changing branch protection" },
      { "updateBranchProtectionRule",  deny = "changing branch protection" },
      { "deleteBranchProtectionRule",  deny = "changing branch protection" },
      { "createRepositoryRuleset",     deny = "changing rulesets" },
      { "updateRepositoryRuleset",     deny = "changing rulesets" },
      { "deleteRepositoryRuleset",     deny = "changing rulesets" },
      { "updateRepository",            deny = "changing repository settings" },
      { "archiveRepository",           deny = "archiving the repository" },
      { "unarchiveRepository",         deny = "changing repository settings" },
      { "transferRepository",          deny = "transferring the repository" },
      { "deleteRepository",            deny = "deleting the repository" },
      { "createEnvironment",           deny = "changing environments" },
      { "updateEnvironment",           deny = "changing environments" },
      { "deleteEnvironment",           deny = "changing environments" },
      { "updateTeamsRepository",       deny = "changing team access" },
      { "addDeployKey",                deny = "adding deploy keys" },
      { "createDeployment",            deny = "creating deployments" },
      { "setRepositoryInteractionLimit", deny = "changing repository settings" },
      { "createGist",                  deny = "creating gists" },
    },
  },
}
