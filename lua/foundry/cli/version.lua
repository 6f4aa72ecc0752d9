--- foundry version
return {
  summary = "Print the versions of Foundry and the libraries it runs on",
  usage = "foundry version [--json]",
  flags = { { "json", help = "print as a JSON object" } },
  max_args = 0,
  order = 90,
  run = function(opts)
    local host = require "foundry._host"
    local luv = require "luv"
    local v = {
      foundry = foundry.version,
      lua = host.lua_version,
      libuv = host.uv_version,
      luv = luv.version_string and luv.version_string() or nil,
      libgit2 = select(2, pcall(host.libgit2_version)),
      openssl = host.openssl_version,
      sqlite = host.sqlite_version,
      lpeg = require("lpeg").version,
    }
    if type(v.lpeg) == "function" then v.lpeg = v.lpeg() end
    if opts.json then
      io.stdout:write(require("foundry.json").encode(v), "\n")
      return 0
    end
    io.stdout:write("foundry ", v.foundry, "\n")
    for _, k in ipairs { "lua", "libuv", "libgit2", "openssl", "sqlite", "lpeg" } do
      io.stdout:write(string.format("  %-8s %s\n", k, tostring(v[k])))
    end
    return 0
  end,
}
