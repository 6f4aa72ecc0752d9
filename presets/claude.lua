-- claude: Claude Code. The API key stays on the host: the proxy's gateway adds it to
-- requests sent to ANTHROPIC_BASE_URL (set inside the sandbox when the proxy runs).
--   foundry vault set anthropic      # once: your key, from `claude setup-token` or the console
--   foundry new -p claude
return {
  description = "Claude Code; its key is held by the host proxy (vault:anthropic)",
  extends = "shell",
  agent = { name = "claude", command = { "claude" }, providers = { "anthropic" } },
  credentials = { anthropic = "vault:anthropic" },
  env = {
    DISABLE_AUTOUPDATER = "1",
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = "1",
  },
  hooks = { post_tool_use = "commit", debounce_ms = 5000 },
}
