-- No network at all, a read-only dataset, tight limits: for running untrusted code.
--
--   foundry new -p presets/examples/offline.lua -d
return {
  description = "no network, small limits, a read-only dataset",
  extends = "shell",
  network = "none",
  cpus = 1,
  memory = "1g",
  pids = 256,
  mounts = { "/srv/datasets:/data:ro" },
  health = { "test -d /data" },
}
