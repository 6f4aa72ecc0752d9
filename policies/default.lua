-- The default network policy: the AI providers' APIs through their gateways, and GitHub
-- (the API and git over HTTPS) inspected, with the token added by the proxy. Everything
-- else is refused: package registries and other hosts are added by a preset or the user
-- (allow = { ... } in the preset, or a policy that says extends = "default").
return {
  description = "AI provider gateways; GitHub inspected with the sandbox's token",
  mode = "allowlist",
  gateways = {
    anthropic = true,   -- ANTHROPIC_BASE_URL=http://127.0.0.1:3128/_gw/anthropic
    openai = true,      -- OPENAI_BASE_URL=http://127.0.0.1:3128/_gw/openai/v1
    gemini = true,      -- GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:3128/_gw/gemini
    github = true,      -- http://127.0.0.1:3128/_gw/github/... reaches api.github.com
  },
  allow = {
    "github.com",
    "api.github.com",
    "codeload.github.com",
    "objects.githubusercontent.com",
    "raw.githubusercontent.com",
  },
  credentials = {
    -- gh and the REST API: the placeholder in "Authorization: token|Bearer ..." is swapped.
    { host = "api.github.com", header = "authorization", secret = "GITHUB_TOKEN" },
    -- git over HTTPS: Basic x-access-token:TOKEN, added even before a 401 challenge.
    { host = "github.com", basic = "x-access-token", secret = "GITHUB_TOKEN", inject = true,
      paths = { "/*/*/info/refs", "/*/*/git-upload-pack", "/*/*/git-receive-pack" } },
  },
}
