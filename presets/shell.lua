-- shell: bash in a sandbox, no agent. The base of the other shipped presets.
return {
  description = "bash in a locked-down sandbox (no agent)",
  agent = { name = "bash", command = { "bash", "-l" } },
  network = "allowlist",
  env = { TERM = "xterm-256color", EDITOR = "vi" },
  tmux = true,
}
