-- codex: OpenAI's Codex CLI. The key stays on the host: the proxy's gateway adds it to
-- requests sent to OPENAI_BASE_URL.
--   foundry vault set openai
--   foundry new -p codex
return {
  description = "OpenAI Codex CLI; its key is held by the host proxy (vault:openai)",
  extends = "shell",
  agent = { name = "codex", command = { "codex" }, providers = { "openai" } },
  credentials = { openai = "vault:openai" },
  env = { CODEX_DISABLE_UPDATE_CHECK = "1" },
  hooks = { post_tool_use = "commit", debounce_ms = 5000 },
}
