-- A Node.js project with Claude Code: dependencies installed while the sandbox is made,
-- the npm registry allowed through the proxy, an MCP server for the agent, and a stage
-- of our own that seeds a database after the dependencies.
--
--   foundry new -p presets/examples/node-app.lua
return {
  description = "Node.js app with Claude Code, deps preinstalled",
  extends = "claude",
  -- your npm registry's host (`npm config get registry` shows it); none is written here
  allow = { "npm-registry.example.internal" },
  env = { NODE_ENV = "development" },
  memory = "6g",
  deps = { "npm ci --no-audit --no-fund" },
  mcp = {
    filesystem = { command = { "npx", "-y", "@modelcontextprotocol/server-filesystem", "/workspace" } },
  },
  stages = {
    add = {
      {
        name = "seed",
        after = "deps",
        run = function(sb, ctx)
          if not sb:exec{ "test", "-f", "scripts/seed.js" }.ok then return ctx.skip("no scripts/seed.js") end
          sb:sh("node scripts/seed.js", { what = "seeding" })
        end,
      },
    },
  },
}
