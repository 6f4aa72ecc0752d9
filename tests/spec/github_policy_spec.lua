-- policies/github.lua through foundry.github: every GitHub REST and GraphQL rule of the
-- default policy, attacks first, then what stays allowed, per-preset overrides, and
-- ownership learnt from responses.
local github = require "foundry.github"
local json = require "foundry.json"

local R = "/repos/acme/app"
local judge

before_each(function()
  judge = github.judge{ branch = "sandbox/t1", repos = { "https://github.com/acme/app.git" } }
end)

local function rest(method, path, body)
  return judge:check{ method = method, path = path, body = body and json.encode(body) or "" }
end

local function gql(query, variables)
  return judge:check{ method = "POST", path = "/graphql", body = json.encode({ query = query, variables = variables }) }
end

local function denied(v, pattern)
  expect(v.allow):equals(false)
  if pattern then expect(v.reason):matches(pattern) end
  expect(v.rule):matches("^github")
end

describe("REST: refused", function()
  it("merging pull requests and branches", function()
    denied(rest("PUT", R .. "/pulls/7/merge", { merge_method = "squash" }), "merging pull requests")
    denied(rest("POST", R .. "/merges", { base = "main", head = "sandbox/t1" }), "merging branches")
    denied(rest("POST", R .. "/merge-upstream", { branch = "main" }))
    denied(rest("PUT", R .. "/pulls/7/update-branch"))
  end)

  it("approving and dismissing reviews", function()
    denied(rest("POST", R .. "/pulls/7/reviews", { event = "APPROVE" }), "approving")
    denied(rest("POST", R .. "/pulls/7/reviews", { event = "approve" }), "approving")
    denied(rest("POST", R .. "/pulls/7/reviews/3/events", { event = "APPROVE" }), "approving")
    denied(rest("PUT", R .. "/pulls/7/reviews/3/dismissals", { message = "x" }), "dismissing")
    -- a body that does not decode is not given the benefit of the doubt
    denied(judge:check{ method = "POST", path = R .. "/pulls/7/reviews", body = "{not json" })
  end)

  it("closing or reopening pull requests and issues it did not open", function()
    denied(rest("PATCH", R .. "/pulls/7", { state = "closed" }), "closing or reopening others' pull requests")
    denied(rest("PATCH", R .. "/pulls/7", { state = "open" }))
    denied(rest("PATCH", R .. "/issues/9", { state = "closed", state_reason = "completed" }), "others' issues")
    -- a PR is an issue too: the issues endpoint cannot close someone else's PR
    denied(rest("PATCH", R .. "/issues/7", { state = "closed" }))
  end)

  it("releases", function()
    denied(rest("POST", R .. "/releases", { tag_name = "v2" }), "releases")
    denied(rest("PATCH", R .. "/releases/5", { draft = false }))
    denied(rest("DELETE", R .. "/releases/5"))
    denied(rest("DELETE", R .. "/releases/assets/8"))
  end)

  it("creating, moving and deleting refs through the Git Data API", function()
    denied(rest("POST", R .. "/git/refs", { ref = "refs/heads/main", sha = string.rep("a", 40) }), "moving refs by API")
    denied(rest("PATCH", R .. "/git/refs/heads/main", { sha = string.rep("a", 40), force = true }), "moving refs")
    denied(rest("PATCH", R .. "/git/refs/heads/sandbox/t1", { sha = string.rep("a", 40) }), "moving refs")
    denied(rest("DELETE", R .. "/git/refs/heads/feature"))
    denied(rest("POST", R .. "/git/tags", { tag = "v1" }))
  end)

  it("Contents API writes to another branch (or the default one), and to restricted paths", function()
    denied(rest("PUT", R .. "/contents/README.md", { message = "m", content = "eA==", branch = "main" }), "branch other than its own")
    denied(rest("PUT", R .. "/contents/README.md", { message = "m", content = "eA==" }), "branch other than its own")
    denied(rest("DELETE", R .. "/contents/README.md", { message = "m", sha = "x", branch = "feature" }))
    denied(rest("PUT", R .. "/contents/.github/workflows/x.yml", { message = "m", content = "eA==", branch = "sandbox/t1" }),
      "restricted paths")
    denied(rest("PUT", R .. "/contents/docs/CODEOWNERS", { message = "m", content = "eA==", branch = "sandbox/t1" }))
  end)

  it("repository deletion, settings, transfer", function()
    denied(rest("DELETE", R), "deleting the repository")
    denied(rest("PATCH", R, { default_branch = "sandbox/t1" }), "settings")
    denied(rest("POST", R .. "/transfer", { new_owner = "evil" }))
    denied(rest("PUT", R .. "/topics", { names = { "x" } }))
  end)

  it("webhooks, deploy keys, secrets, variables, environments", function()
    denied(rest("POST", R .. "/hooks", { config = { url = "https://evil.example" } }), "webhooks")
    denied(rest("PATCH", R .. "/hooks/1", { active = true }))
    denied(rest("POST", R .. "/keys", { key = "ssh-ed25519 AAA" }), "deploy keys")
    denied(rest("DELETE", R .. "/keys/1"))
    denied(rest("PUT", R .. "/actions/secrets/TOKEN", { encrypted_value = "x" }), "secrets")
    denied(rest("GET", R .. "/actions/secrets/public-key"), "secrets")
    denied(rest("PUT", R .. "/dependabot/secrets/X", {}))
    denied(rest("POST", R .. "/actions/variables", { name = "X", value = "1" }), "variables")
    denied(rest("PATCH", R .. "/actions/variables/X", { value = "2" }))
    denied(rest("PUT", R .. "/environments/prod", {}))
    denied(rest("PUT", R .. "/actions/permissions", { enabled = true }))
  end)

  it("branch protection and rulesets", function()
    denied(rest("PUT", R .. "/branches/main/protection", {}), "branch protection")
    denied(rest("DELETE", R .. "/branches/main/protection"))
    denied(rest("DELETE", R .. "/branches/main/protection/required_pull_request_reviews"))
    denied(rest("POST", R .. "/rulesets", { name = "x" }), "rulesets")
    denied(rest("PUT", R .. "/rulesets/4", {}))
    denied(rest("POST", R .. "/branches/main/rename", { new_name = "old" }))
  end)

  it("triggering workflows, collaborators, the account, organisations, gists", function()
    denied(rest("POST", R .. "/dispatches", { event_type = "x" }), "triggering")
    denied(rest("POST", R .. "/actions/workflows/ci.yml/dispatches", { ref = "main" }))
    denied(rest("PUT", R .. "/collaborators/evil", { permission = "admin" }))
    denied(rest("POST", "/user/keys", { key = "ssh-ed25519 AAA" }), "account")
    denied(rest("POST", "/user/repos", { name = "exfil" }))
    denied(rest("PATCH", "/orgs/acme", { default_repository_permission = "admin" }))
    denied(rest("POST", "/gists", { files = { a = { content = "x" } } }), "gists")
  end)

  it("writes to repositories the sandbox was not made for", function()
    denied(rest("POST", "/repos/other/lib/issues", { title = "spam" }), "not made for")
    denied(rest("POST", "/repos/other/lib/pulls", { head = "sandbox/t1", base = "main" }))
  end)

  it("pull requests from a branch other than its own, and all of them with allow_pr = false", function()
    denied(rest("POST", R .. "/pulls", { head = "feature", base = "main", title = "x" }), "other than its own")
    denied(rest("POST", R .. "/pulls", { head = "evil:sandbox/t1x", base = "main", title = "x" }))
    denied(rest("POST", R .. "/pulls", { base = "main", title = "x" }))
    judge = github.judge{ branch = "sandbox/t1", repos = { "github.com/acme/app" }, options = { allow_pr = false } }
    denied(rest("POST", R .. "/pulls", { head = "sandbox/t1", base = "main", title = "x" }), "opening pull requests")
  end)

  it("tricks: encoded or dotted paths, method override, case", function()
    denied(rest("PUT", R .. "/pulls/7/%6derge"), "merging")
    denied(rest("PUT", "/REPOS/acme/app/PULLS/7/MERGE"), "merging")
    denied(rest("PUT", R .. "/pulls/7/merge/"), "merging")
    denied(rest("PUT", "/api/v3" .. R .. "/pulls/7/merge"), "merging")
    denied(rest("PUT", R .. "/pulls/7/x/../merge"), "unusual path")
    denied(rest("PUT", R .. "%2Fpulls%2F7%2Fmerge"), "unusual path")
    denied(rest("PUT", R .. "//pulls/7/merge"), "unusual path")
    denied(judge:check{ method = "POST", path = R .. "/pulls/7", headers = { ["x-http-method-override"] = "PUT" } }, "Override")
  end)
end)

describe("REST: allowed", function()
  it("reading anything", function()
    for _, p in ipairs({ R, R .. "/pulls", R .. "/pulls/7", R .. "/contents/README.md", R .. "/git/refs/heads/main",
                         "/user", "/repos/other/lib/issues", R .. "/hooks", "/graphql" }) do
      local v = rest("GET", p)
      if not v.allow then error(p .. ": " .. tostring(v.reason)) end
    end
  end)

  it("opening a pull request from its own branch, commenting, reviewing without approving", function()
    expect(rest("POST", R .. "/pulls", { head = "sandbox/t1", base = "main", title = "x" }).allow):equals(true)
    expect(rest("POST", R .. "/pulls", { head = "acme:sandbox/t1", base = "main", title = "x" }).allow):equals(true)
    expect(rest("POST", R .. "/issues/7/comments", { body = "done" }).allow):equals(true)
    expect(rest("POST", R .. "/pulls/7/comments", { body = "x", commit_id = "a", path = "f", line = 1 }).allow):equals(true)
    expect(rest("POST", R .. "/pulls/7/reviews", { event = "COMMENT", body = "x" }).allow):equals(true)
    expect(rest("POST", R .. "/pulls/7/reviews", { event = "REQUEST_CHANGES", body = "x" }).allow):equals(true)
    expect(rest("POST", R .. "/issues", { title = "bug" }).allow):equals(true)
    expect(rest("PATCH", R .. "/pulls/7", { title = "better title" }).allow):equals(true)
    expect(rest("POST", R .. "/issues/7/labels", { labels = { "x" } }).allow):equals(true)
  end)

  it("Contents API writes to its own branch", function()
    expect(rest("PUT", R .. "/contents/src/a.c", { message = "m", content = "eA==", branch = "sandbox/t1" }).allow):equals(true)
  end)

  it("closing and reopening what it opened (learnt from the responses)", function()
    local req = { method = "POST", path = R .. "/pulls", body = json.encode({ head = "sandbox/t1", base = "main" }) }
    expect(judge:check(req).allow):equals(true)
    judge:observe(req, { status = 201, body = json.encode({ number = 42, node_id = "PR_kw42" }) })
    expect(rest("PATCH", R .. "/pulls/42", { state = "closed" }).allow):equals(true)
    expect(rest("PATCH", R .. "/issues/42", { state = "open" }).allow):equals(true)
    denied(rest("PATCH", R .. "/pulls/43", { state = "closed" }))
    -- the same number in another repository is not its own
    denied(rest("PATCH", "/repos/acme/other/pulls/42", { state = "closed" }))
    expect(gql("mutation { closePullRequest(input: {pullRequestId: \"PR_kw42\"}) { clientMutationId } }").allow):equals(true)
    -- a failed creation teaches nothing
    judge:observe({ method = "POST", path = R .. "/issues", body = "{}" }, { status = 422, body = json.encode({ number = 50 }) })
    denied(rest("PATCH", R .. "/issues/50", { state = "closed" }))
  end)
end)

describe("GraphQL: refused", function()
  local M = "mutation($id: ID!) { %s(input: {pullRequestId: $id%s}) { clientMutationId } }"

  it("merging, auto-merge, the merge queue, merging branches", function()
    denied(gql(M:format("mergePullRequest", ""), { id = "PR_1" }), "merging pull requests")
    denied(gql(M:format("enablePullRequestAutoMerge", ", mergeMethod: SQUASH"), { id = "PR_1" }), "auto%-merge")
    denied(gql(M:format("enqueuePullRequest", ""), { id = "PR_1" }), "merge queue")
    denied(gql('mutation { mergeBranch(input: {repositoryId: "R", base: "main", head: "x"}) { clientMutationId } }'))
  end)

  it("under aliases, fragments, inline fragments and beside allowed fields", function()
    denied(gql('mutation { ok: addComment(input: {subjectId: "I", body: "x"}) { clientMutationId } ' ..
      'sneaky: mergePullRequest(input: {pullRequestId: "PR_1"}) { clientMutationId } }'), "merging")
    denied(gql('mutation { ...F } fragment F on Mutation { mergePullRequest(input: {pullRequestId: "P"}) { clientMutationId } }'))
    denied(gql('mutation { ... on Mutation { mergePullRequest(input: {pullRequestId: "P"}) { clientMutationId } } }'))
    -- a second operation in the document, whatever operationName says
    denied(judge:check{ method = "POST", path = "/graphql", body = json.encode({ operationName = "A",
      query = 'query A { viewer { login } } mutation B { mergePullRequest(input: {pullRequestId: "P"}) { clientMutationId } }' }) })
    -- a batch
    denied(judge:check{ method = "POST", path = "/graphql", body = json.encode({ { query = "{ viewer { login } }" },
      { query = 'mutation { deleteRef(input: {refId: "R"}) { clientMutationId } }' } }) })
  end)

  it("approving, with the event inline, in a variable, or as a variable's default", function()
    denied(gql(M:format("addPullRequestReview", ", event: APPROVE"), { id = "P" }), "approving")
    denied(gql("mutation($id: ID!, $e: PullRequestReviewEvent) { addPullRequestReview(input: {pullRequestId: $id, event: $e}) { clientMutationId } }",
      { id = "P", e = "APPROVE" }), "approving")
    denied(gql("mutation($e: PullRequestReviewEvent = APPROVE) { " ..
      "submitPullRequestReview(input: {pullRequestReviewId: \"R\", event: $e}) { clientMutationId } }"))
    denied(gql("mutation($in: AddPullRequestReviewInput!) { addPullRequestReview(input: $in) { clientMutationId } }",
      { ["in"] = { pullRequestId = "P", event = "APPROVE" } }), "approving")
    denied(gql('mutation { dismissPullRequestReview(input: {pullRequestReviewId: "R", message: "m"}) { clientMutationId } }'), "dismissing")
  end)

  it("closing or reopening what it did not open", function()
    denied(gql(M:format("closePullRequest", ""), { id = "PR_other" }), "closing pull requests")
    denied(gql(M:format("reopenPullRequest", ""), { id = "PR_other" }))
    denied(gql('mutation { closeIssue(input: {issueId: "I_other"}) { clientMutationId } }'), "closing issues")
    denied(gql('mutation { reopenIssue(input: {issueId: "I_other"}) { clientMutationId } }'))
    denied(gql('mutation { updatePullRequest(input: {pullRequestId: "PR_o", state: CLOSED}) { clientMutationId } }'))
    denied(gql('mutation { updateIssue(input: {id: "I_o", state: CLOSED}) { clientMutationId } }'))
  end)

  it("refs, commits to other branches or restricted paths, releases, protections, settings", function()
    for _, m in ipairs({ "createRef", "updateRef", "updateRefs", "deleteRef", "createRelease", "deleteRelease",
                         "createBranchProtectionRule", "updateBranchProtectionRule", "deleteBranchProtectionRule",
                         "createRepositoryRuleset", "updateRepository", "archiveRepository", "updateEnvironment",
                         "updatePullRequestBranch" }) do
      denied(gql("mutation { " .. m .. "(input: {}) { clientMutationId } }"))
    end
    local commit = "mutation($in: CreateCommitOnBranchInput!) { createCommitOnBranch(input: $in) { commit { oid } } }"
    denied(gql(commit, { ["in"] = { branch = { repositoryNameWithOwner = "acme/app", branchName = "main" },
      message = { headline = "x" }, expectedHeadOid = "a", fileChanges = { additions = { { path = "a", contents = "" } } } } }),
      "branch other than its own")
    denied(gql(commit, { ["in"] = { branch = { id = "REF_1" }, message = { headline = "x" }, expectedHeadOid = "a" } }))
    denied(gql(commit, { ["in"] = { branch = { repositoryNameWithOwner = "other/lib", branchName = "sandbox/t1" },
      message = { headline = "x" }, expectedHeadOid = "a" } }))
    denied(gql(commit, { ["in"] = { branch = { repositoryNameWithOwner = "acme/app", branchName = "sandbox/t1" },
      message = { headline = "x" }, expectedHeadOid = "a",
      fileChanges = { additions = { { path = ".github/workflows/x.yml", contents = "" } } } } }), "restricted")
  end)

  it("pull requests from another branch; all of them with allow_pr = false", function()
    denied(gql('mutation { createPullRequest(input: {repositoryId: "R", baseRefName: "main", headRefName: "feature", title: "x"}) { pullRequest { id } } }'),
      "other than its own")
    judge = github.judge{ branch = "sandbox/t1", repos = { "github.com/acme/app" }, options = { allow_pr = false } }
    denied(gql('mutation { createPullRequest(input: {repositoryId: "R", baseRefName: "main", headRefName: "sandbox/t1", title: "x"}) { pullRequest { id } } }'),
      "opening pull requests")
  end)

  it("what does not parse, and mutations over GET", function()
    denied(judge:check{ method = "POST", path = "/graphql", body = json.encode({ query = "mutation { mergePullRequest(" }) }, "does not parse")
    denied(judge:check{ method = "POST", path = "/graphql", body = "not json" })
    denied(judge:check{ method = "POST", path = "/graphql", body = json.encode({ variables = {} }) })
    denied(judge:check{ method = "GET", path = "/graphql", query = "query=mutation%20%7B%20deleteRef(input%3A%20%7B%7D)%20%7B%20x%20%7D%20%7D" })
  end)
end)

describe("GraphQL: allowed", function()
  it("queries, comments, issues, pull requests from its own branch, pending and commenting reviews", function()
    expect(gql("query { viewer { login } repository(owner: \"acme\", name: \"app\") { pullRequests(first: 5) { nodes { title } } } }").allow):equals(true)
    expect(gql("{ search(query: \"mutation { mergePullRequest }\", type: ISSUE, first: 1) { issueCount } }").allow):equals(true)
    expect(gql('mutation { addComment(input: {subjectId: "I_1", body: "x"}) { clientMutationId } }').allow):equals(true)
    expect(gql('mutation { createIssue(input: {repositoryId: "R", title: "x"}) { issue { id } } }').allow):equals(true)
    expect(gql('mutation { createPullRequest(input: {repositoryId: "R", baseRefName: "main", ' ..
      'headRefName: "sandbox/t1", title: "x"}) { pullRequest { id } } }').allow):equals(true)
    expect(gql('mutation { addPullRequestReview(input: {pullRequestId: "P", event: COMMENT, body: "x"}) { clientMutationId } }').allow):equals(true)
    expect(gql('mutation { addPullRequestReview(input: {pullRequestId: "P"}) { clientMutationId } }').allow):equals(true)
    expect(gql('mutation { updatePullRequest(input: {pullRequestId: "PR_o", title: "t"}) { clientMutationId } }').allow):equals(true)
    local commit = "mutation($in: CreateCommitOnBranchInput!) { createCommitOnBranch(input: $in) { commit { oid } } }"
    expect(gql(commit, { ["in"] = { branch = { repositoryNameWithOwner = "acme/app", branchName = "sandbox/t1" },
      message = { headline = "x" }, expectedHeadOid = "a", fileChanges = { additions = { { path = "src/a.c", contents = "" } } } } }).allow):equals(true)
  end)

  it("closing what it opened through GraphQL (learnt from the response, under an alias)", function()
    local req = { method = "POST", path = "/graphql", body = json.encode({ query =
      'mutation { pr: createPullRequest(input: {repositoryId: "R", baseRefName: "main", headRefName: "sandbox/t1", title: "x"}) { pullRequest { id } } }' }) }
    judge:observe(req, { status = 200, body = json.encode({ data = { pr = { pullRequest = { id = "PR_new" } } } }) })
    expect(gql('mutation { closePullRequest(input: {pullRequestId: "PR_new"}) { clientMutationId } }').allow):equals(true)
    denied(gql('mutation { closePullRequest(input: {pullRequestId: "PR_kw1"}) { clientMutationId } }'))
  end)
end)

describe("the rules file", function()
  it("is shipped, compiles, and its rules read as lines", function()
    local data = github.shipped()
    local c = github.compile(data.github)
    expect(#c.rest):gt(40)
    expect(#c.graphql):gt(30)
    expect(data.git.restricted[1]):equals(".github/workflows/")
  end)

  it("names the key path of a mistake, with a suggestion", function()
    expect(function() github.compile({ rest = { { "PUT", "/x", deny = "x", when = "aproves" } } }) end)
      :fails("github.rest%[1%]%.when: unknown condition 'aproves' — did you mean 'approves'")
    expect(function() github.compile({ rest = { { "PUT", "x", deny = "x" } } }) end):fails("path starting with")
    expect(function() github.compile({ graphql = { { "mergePullRequest" } } }) end):fails("exactly one of")
    expect(function() github.compile({ rest = {}, grapql = {} }) end):fails("did you mean 'graphql'")
    expect(function() github.compile({ graphql = { { "x", deny = "y", unless = "allow_prs" } } }) end):fails("unknown option")
  end)

  it("default = deny refuses what no rule names", function()
    judge = github.judge{ branch = "sandbox/t1", repos = { "github.com/acme/app" },
                          github = { default = "deny", rest = { { "POST", "/repos/:o/:r/issues/:n/comments", allow = "comments" } },
                                     graphql = { { "addComment", allow = "comments" } } } }
    expect(rest("POST", R .. "/issues/1/comments", { body = "x" }).allow):equals(true)
    denied(rest("POST", R .. "/issues", { title = "x" }), "allowed list")
    expect(rest("GET", R .. "/issues").allow):equals(true)
    expect(gql('mutation { addComment(input: {subjectId: "I", body: "x"}) { clientMutationId } }').allow):equals(true)
    denied(gql('mutation { addReaction(input: {subjectId: "I", content: HOORAY}) { clientMutationId } }'))
  end)

  it("answers a refusal as GitHub's errors read", function()
    local r = github.refusal(rest("PUT", R .. "/pulls/7/merge"))
    expect(r.status):equals(403)
    local body = json.decode(r.body)
    expect(body.message):matches("^foundry: merging pull requests is not allowed")
    expect(body.rule):equals("github.rest[1]")
    expect(body.how_to_allow):matches("github%.rest%[1%]")
  end)
end)
