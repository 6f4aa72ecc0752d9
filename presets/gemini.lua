-- gemini: Google's Gemini CLI. The key stays on the host: the proxy's gateway adds it to
-- requests sent to the Gemini API base URL.
--   foundry vault set gemini
--   foundry new -p gemini
return {
  description = "Google Gemini CLI; its key is held by the host proxy (vault:gemini)",
  extends = "shell",
  agent = { name = "gemini", command = { "gemini" }, providers = { "google" } },
  credentials = { google = "vault:gemini" },
  hooks = { post_tool_use = "commit", debounce_ms = 5000 },
}
