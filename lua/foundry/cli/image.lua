--- foundry image bootstrap|build|ls|rm
local docker = require "foundry.docker"
local errors = require "foundry.errors"
local json = require "foundry.json"
local exec = require("foundry.exec").exec
local uv = require "luv"

local DEFAULT_PACKAGES = { "bash", "coreutils", "git", "curl", "ca-certificates", "tmux", "procps",
  "iproute2", "python3", "less", "openssh-client" }

--- The image `bootstrap` makes by default: the base the sandbox image is built on.
local BASE_IMAGE = "foundry/base:bookworm"

local function default_image()
  local ok, sandbox = pcall(require, "foundry.sandbox")
  if ok and type(sandbox) == "table" and sandbox.default_image then return sandbox.default_image() end
  return os.getenv("FOUNDRY_IMAGE") or "foundry/sandbox:latest"
end

local function now() uv.update_time(); return uv.now() end

local function say(opts, t0, fmt, ...)
  if opts.json or opts.quiet then return end
  io.stderr:write(string.format("image: " .. fmt, ...), string.format(" [%.1fs]\n", (now() - t0) / 1000))
end

local function human(n)
  if n >= 1e9 then return string.format("%.1f GB", n / 1e9) end
  if n >= 1e6 then return string.format("%.0f MB", n / 1e6) end
  return string.format("%.0f kB", n / 1e3)
end

-- The first mirror apt uses for `suite` (not -updates/-security), from one-line .list
-- files or deb822 .sources files.
local function find_mirror(suite)
  local fs = require "foundry.fs"
  local files = { "/etc/apt/sources.list" }
  local ok, list = pcall(fs.list, "/etc/apt/sources.list.d")
  if ok then
    table.sort(list, function(a, b) return a.name < b.name end)
    for _, e in ipairs(list) do
      if e.name:match("%.list$") or e.name:match("%.sources$") then
        files[#files + 1] = "/etc/apt/sources.list.d/" .. e.name
      end
    end
  end
  for _, path in ipairs(files) do
    local rok, text = pcall(fs.read, path)
    if rok then
      if path:match("%.sources$") then
        for stanza in (text .. "\n\n"):gmatch("(.-)\n%s*\n") do
          local types = stanza:match("\nTypes:%s*([^\n]*)") or stanza:match("^Types:%s*([^\n]*)") or ""
          local uris = stanza:match("URIs:%s*([^\n]*)")
          local suites = stanza:match("Suites:%s*([^\n]*)") or ""
          local enabled = stanza:match("Enabled:%s*(%a+)")
          if uris and enabled ~= "no" and (" " .. types .. " "):find(" deb ", 1, true)
              and (" " .. suites .. " "):find(" " .. suite .. " ", 1, true) then
            return (uris:match("%S+"))
          end
        end
      else
        for line in text:gmatch("[^\n]+") do
          local rest = line:match("^%s*deb%s+(.*)$")
          if rest then
            rest = rest:gsub("^%[[^%]]*%]%s*", "")
            local uri, s = rest:match("^(%S+)%s+(%S+)")
            if s == suite then return uri end
          end
        end
      end
    end
  end
  return nil
end

local function run(argv, what)
  local r = exec(argv)
  if r.status ~= 0 then
    local last = (r.stderr .. r.stdout):match("([^\n]+)\n?$") or ""
    errors.raise("image.failed", what .. " failed (exit " .. r.status .. "): " .. last)
  end
  return r
end

--- Bootstrap `name` from a debootstrap root filesystem (cached under the cache dir).
local function bootstrap(opts, name)
  local t0 = now()
  if not opts.force and docker.image_exists(name) then
    if opts.json then io.stdout:write(json.encode({ image = name, built = false }), "\n")
    else say(opts, t0, "%s exists (--force rebuilds)", name) end
    return 0
  end
  local suite = opts.suite or "bookworm"
  local packages = {}
  for _, p in ipairs(DEFAULT_PACKAGES) do packages[#packages + 1] = p end
  for _, spec in ipairs(opts.packages or {}) do
    for p in spec:gmatch("[^,%s]+") do packages[#packages + 1] = p end
  end
  local recipe = require("foundry.util").split(table.concat(packages, ","), ",")
  table.sort(recipe)
  local key = suite .. ":" .. table.concat(recipe, ",")
  -- a short, stable name for this recipe's cached root filesystem
  local h = 5381
  for i = 1, #key do h = (h * 33 + key:byte(i)) % 4294967296 end
  local fs = require "foundry.fs"
  local cache = require("foundry.paths").cache() .. "/images"
  require("foundry.paths").ensure(cache)
  local tarball = string.format("%s/rootfs-%s-%08x.tar", cache, suite, h)
  if opts.force or not fs.exists(tarball) then
    if exec{ "id", "-u" }.stdout ~= "0\n" then
      errors.raise("image.root", "debootstrap needs root", "run it as root: sudo foundry image bootstrap")
    end
    if not exec{ "sh", "-c", "command -v debootstrap" }.ok then
      errors.raise("image.debootstrap", "debootstrap is not installed", "apt-get install debootstrap (or: make deps)")
    end
    local mirror = opts.mirror or find_mirror(suite)
    if not mirror then
      errors.raise("image.mirror", "no apt mirror for '" .. suite .. "' in /etc/apt/sources.list{,.d/*}",
        "pass --mirror URL")
    end
    local root = fs.mkdtemp("/tmp/foundry-rootfs-XXXXXX")
    local ok, err = pcall(function()
      say(opts, t0, "debootstrap %s (minbase, %d packages) from %s", suite, #packages, mirror)
      run({ "debootstrap", "--variant=minbase", "--include=" .. table.concat(packages, ","),
        "--cache-dir=" .. cache, suite, root, mirror }, "debootstrap")
      say(opts, t0, "debootstrap done")
      run({ "chroot", root, "/usr/sbin/useradd", "--uid", "1000", "--user-group", "--create-home",
        "--home-dir", "/home/agent", "--shell", "/bin/bash", "agent" }, "useradd")
      run({ "sh", "-c", 'cd "$1" && rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* ' ..
        'var/log/* tmp/* var/tmp/* && : > etc/machine-id', "sh", root }, "cleanup")
      run({ "tar", "-C", root, "--numeric-owner", "--xattrs", "-cf", tarball .. ".part", "." }, "tar")
      fs.rename(tarball .. ".part", tarball)
    end)
    exec{ "rm", "-rf", root }
    if not ok then pcall(fs.rm, tarball .. ".part"); error(err, 0) end
    say(opts, t0, "root filesystem cached: %s (%s)", tarball, human(fs.stat(tarball).size))
  else
    say(opts, t0, "using the cached root filesystem %s", tarball)
  end
  local repo, tag = name:match("^(.+):([^:/]+)$")
  local id = docker.image_import{
    file = tarball, repo = repo or name, tag = tag or "latest",
    changes = { 'CMD ["/bin/bash"]', "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "ENV LANG=C.UTF-8", "WORKDIR /", "LABEL dev.foundry.image=" .. suite },
  }
  if opts.json then
    io.stdout:write(json.encode({ image = name, id = id, built = true, rootfs = tarball }), "\n")
  else
    say(opts, t0, "imported %s (%s)", name, id and id:sub(1, 19) or "?")
  end
  return 0
end

-- The directory of the default sandbox image's Dockerfile (presets/images in the source
-- tree): $FOUNDRY_IMAGES_DIR, else next to the binary (build/ or bin/ in PREFIX), else
-- next to FOUNDRY_LUA_PATH.
local function default_context()
  local fs = require "foundry.fs"
  local candidates = {}
  local env = os.getenv("FOUNDRY_IMAGES_DIR")
  if env and env ~= "" then candidates[#candidates + 1] = env end
  local exe = (uv.exepath() or ""):gsub(" %(deleted%)$", "")
  local bindir = exe:match("^(.*)/[^/]+$")
  if bindir then
    candidates[#candidates + 1] = bindir .. "/../presets/images"
    candidates[#candidates + 1] = bindir .. "/../share/foundry/images"
  end
  local lua = os.getenv("FOUNDRY_LUA_PATH")
  if lua and lua ~= "" then candidates[#candidates + 1] = lua .. "/../presets/images" end
  for _, dir in ipairs(candidates) do
    if fs.exists(dir .. "/Dockerfile") then return dir end
  end
  errors.raise("image.no_dockerfile", "cannot find the sandbox image's Dockerfile (presets/images/Dockerfile)",
    "set FOUNDRY_IMAGES_DIR to its directory, or build another: foundry image build DIR -t NAME")
end

-- A context tarball of `dir` (a temporary file; caller removes it).
local function context_tar(dir)
  local fs = require "foundry.fs"
  if not fs.is_dir(dir) then errors.raise("not_found", "no such directory: " .. dir) end
  local tmp = fs.mkdtemp("/tmp/foundry-context-XXXXXX")
  local path = tmp .. "/context.tar"
  local exclude = {}
  if fs.exists(dir .. "/.dockerignore") then exclude = { "--exclude-from=" .. dir .. "/.dockerignore" } end
  local argv = { "tar", "-C", dir, "-cf", path }
  for _, e in ipairs(exclude) do argv[#argv + 1] = e end
  argv[#argv + 1] = "."
  run(argv, "tar " .. dir)
  return path, tmp
end

local sub = {}

function sub.bootstrap(opts, args)
  return bootstrap(opts, args[2] or opts.tag or BASE_IMAGE)
end

function sub.build(opts, args)
  local dir = args[2]
  local t0 = now()
  local buildargs
  if not dir then
    -- the default sandbox image, from presets/images on a bootstrapped base: nothing is
    -- pulled (its RUN steps reach Debian's archive and the npm registry)
    dir = default_context()
    local base = opts.base or BASE_IMAGE
    if not docker.image_exists(base) then
      if opts.base then errors.raise("image.not_found", "no such base image: " .. base,
        "make it: sudo foundry image bootstrap " .. base) end
      bootstrap({ quiet = opts.quiet, json = false, packages = opts.packages, suite = opts.suite,
        mirror = opts.mirror }, base)
    end
    buildargs = { BASE = base }
    opts.tag = opts.tag or default_image()
  elseif opts.base then
    buildargs = { BASE = opts.base }
  end
  local path, tmp = context_tar(dir)
  for _, kv in ipairs(opts["build-arg"] or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if not k then errors.raise("usage", "--build-arg: expected NAME=VALUE, got '" .. kv .. "'") end
    buildargs = buildargs or {}
    buildargs[k] = v
  end
  local ok, id = pcall(docker.image_build, {
    context_file = path, tag = opts.tag, dockerfile = opts.file, buildargs = buildargs,
    nocache = opts["no-cache"], network = opts.network, labels = { ["dev.foundry.image"] = "built" },
    on_progress = function(m)
      if opts.json then
        io.stdout:write(json.encode(m), "\n")
      elseif not opts.quiet and m.stream then
        io.stderr:write(m.stream)
      elseif not opts.quiet and m.status then
        io.stderr:write(m.status, "\n")
      end
    end,
  })
  exec{ "rm", "-rf", tmp }
  if not ok then error(id, 0) end
  if opts.json then
    io.stdout:write(json.encode({ image = opts.tag, id = id }), "\n")
  else
    say(opts, t0, "built %s%s", id or "?", opts.tag and (" as " .. opts.tag) or "")
  end
  return 0
end

function sub.ls(opts)
  local list = docker.images(opts.all and {} or { labels = { "dev.foundry.image" } })
  table.sort(list, function(a, b) return (a.created or 0) > (b.created or 0) end)
  if opts.json then
    local out = json.array{}
    for i, im in ipairs(list) do
      out[i] = { id = im.id, tags = json.array(im.tags), size = im.size, created = im.created,
        kind = im.labels["dev.foundry.image"] }
    end
    io.stdout:write(json.encode(out), "\n")
    return 0
  end
  local rows = {}
  for _, im in ipairs(list) do
    local tags = #im.tags > 0 and im.tags or { "<none>" }
    for _, t in ipairs(tags) do
      rows[#rows + 1] = { name = t, id = im.id:gsub("^sha256:", ""):sub(1, 12), size = human(im.size or 0),
        created = os.date("%Y-%m-%d %H:%M", im.created or 0), kind = im.labels["dev.foundry.image"] or "" }
    end
  end
  if #rows == 0 then
    io.stderr:write("no Foundry images (foundry image bootstrap makes one; --all lists every image)\n")
    return 0
  end
  require("foundry.cli._common").table(rows, { { "IMAGE", "name" }, { "ID", "id" }, { "SIZE", "size" },
    { "CREATED", "created" }, { "KIND", "kind" } })
  return 0
end

function sub.rm(opts, args)
  if not args[2] then
    errors.raise("usage", "missing IMAGE: foundry image rm IMAGE...", "see 'foundry image --help'")
  end
  local removed = {}
  for i = 2, #args do
    local r = docker.image_remove(args[i], { force = opts.force })
    removed[#removed + 1] = { image = args[i], result = r }
    if not opts.json then io.stdout:write("removed ", args[i], "\n") end
  end
  if opts.json then io.stdout:write(json.encode(removed), "\n") end
  return 0
end

return {
  summary = "Make and manage sandbox images: bootstrap, build, ls, rm",
  usage = "foundry image bootstrap [NAME] | build [DIR] [-t NAME] [--base IMAGE] | ls [--all] | rm NAME... [--json]",
  description = [[
Images are made locally: nothing is pulled from a registry.

  bootstrap [NAME]   a minimal Debian root filesystem made with debootstrap (root needed),
                     with bash, coreutils, git, curl, ca-certificates, tmux, procps,
                     iproute2, python3, less, openssh-client (add more with --packages) and
                     the user 'agent' (uid 1000, home /home/agent), imported as NAME
                     (default foundry/base:bookworm).
                     Does nothing when NAME exists (unless --force); the root filesystem is
                     cached under the cache directory, so a rebuild takes seconds. The apt
                     mirror is the one /etc/apt/sources.list{,.d/*} names, or --mirror.
  build [DIR]        without DIR: the default sandbox image ($FOUNDRY_IMAGE, else
                     foundry/sandbox:latest) from presets/images/Dockerfile on --base
                     (default foundry/base:bookworm, bootstrapped first when missing); its
                     RUN steps fetch from Debian's archive and the npm registry. With DIR:
                     build DIR's Dockerfile (-f another), progress streamed; -t names the
                     result; --base sets the BASE build argument. FROM must name a local
                     image (nothing can be pulled).
  ls                 Foundry's images (labelled dev.foundry.image); --all for every image
  rm NAME...         remove images (--force even when containers use them)]],
  flags = {
    { "json", help = "print results (and build progress) as JSON" },
    { "tag", short = "t", type = "string", arg = "NAME", help = "bootstrap/build: the image name (repo:tag)" },
    { "file", short = "f", type = "string", arg = "PATH", help = "build: the Dockerfile, relative to DIR" },
    { "build-arg", type = "list", arg = "NAME=VALUE", help = "build: a build argument (repeatable)" },
    { "no-cache", help = "build: do not use the engine's layer cache" },
    { "base", type = "string", arg = "IMAGE", help = "build: the BASE build argument (default " .. BASE_IMAGE .. ")" },
    { "network", type = "string", arg = "MODE", help = "build: network for RUN steps (e.g. none)" },
    { "force", help = "bootstrap: rebuild even when the image exists; rm: remove even when in use" },
    { "suite", type = "string", arg = "SUITE", help = "bootstrap: the Debian suite (default bookworm)" },
    { "mirror", type = "string", arg = "URL", help = "bootstrap: the Debian mirror (default: apt's)" },
    { "packages", type = "list", arg = "A,B", help = "bootstrap: more packages (repeatable)" },
    { "all", short = "a", help = "ls: every image, not only Foundry's" },
    { "quiet", short = "q", help = "no progress output" },
  },
  min_args = 1, max_args = 20,
  order = 60,
  examples = {
    "sudo foundry image bootstrap",
    "sudo foundry image build",
    "sudo foundry image bootstrap foundry-test:base",
    "foundry image build ./my-image -t my/agent:1",
    "foundry image ls",
    "foundry image rm my/agent:1",
  },
  run = function(opts, args)
    local name = args[1]
    local fn = sub[name]
    if not fn then
      local near = require("foundry.util").did_you_mean(name, { "bootstrap", "build", "ls", "rm" })
      errors.raise("usage", "unknown subcommand '" .. name .. "'"
        .. (near and (" — did you mean '" .. near .. "'?") or ""), "see 'foundry image --help'")
    end
    return fn(opts, args)
  end,
}
