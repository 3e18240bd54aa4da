-- examples/deploy/biconnector.service (docs/deploy.md, "systemd"): no systemd runs it in
-- the specs, so its parts are checked here: ExecStart is a `biconnector serve` command
-- line serve accepts, stop and reload send what docs/deploy.md says, TimeoutStopSec
-- exceeds --grace, and `systemd-analyze verify` (when installed) finds nothing wrong
-- with the unit once ExecStart names this tree's command.
local helpers = require "helpers"
local serve = require "biconnector.serve"

local UNIT = helpers.top .. "/examples/deploy/biconnector.service"

local function read(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  return text
end

-- the unit's [Service] keys (a key given twice keeps the last, as systemd does for these)
local function keys(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do
    local k, v = line:match("^(%w+)=(.*)$")
    if k then t[k] = v end
  end
  return t
end

local function words(s)
  local list = {}
  for w in s:gmatch("%S+") do list[#list + 1] = w end
  return list
end

describe("examples/deploy/biconnector.service", function()
  local text = read(UNIT)
  local unit = keys(text)

  it("starts a `biconnector serve` whose options serve accepts", function()
    local argv = words(unit.ExecStart)
    assert.matches("/biconnector$", argv[1])
    assert.equals("serve", argv[2])
    local args = {}
    for i = 3, #argv do args[#args + 1] = argv[i] end
    local o = assert(serve.parse_args(args))
    assert.is_true(o.metrics)
    assert.equals(4, o.workers)
    assert.equals("0.0.0.0", o.host)
    assert.equals(8081, o.port)
    -- docs/deploy.md: systemd kills what is left after TimeoutStopSec, which must exceed --grace
    -- (and the master's own SIGKILL comes at grace + 5 s)
    assert.is_true(tonumber(unit.TimeoutStopSec) > o.grace + 5, "TimeoutStopSec " .. unit.TimeoutStopSec)
  end)

  it("reloads with SIGHUP and stops with SIGTERM to the master (KillMode=mixed)", function()
    assert.equals("/bin/kill -HUP $MAINPID", unit.ExecReload)
    assert.equals("SIGTERM", unit.KillSignal)
    assert.equals("mixed", unit.KillMode)
    assert.matches("^%-?/etc/biconnector/env$", unit.EnvironmentFile)
  end)

  it("lets serve --app write its token store where docs/app.md puts it, under ProtectSystem=strict", function()
    -- docs/app.md: BITRIX24_TOKENS_FILE=/var/lib/biconnector/tokens.json (and its lock files beside it)
    local app_doc = read(helpers.top .. "/docs/app.md")
    local store = app_doc:match("BITRIX24_TOKENS_FILE=(/%S-)/tokens%.json")
    assert.equals("/var/lib/biconnector", store)
    if unit.ProtectSystem == "strict" or unit.ProtectSystem == "full" then
      -- strict: the whole file system is read-only but for what the unit names
      local writable = unit.StateDirectory and ("/var/lib/" .. unit.StateDirectory) == store
      for path in (unit.ReadWritePaths or ""):gmatch("%S+") do
        if path:gsub("^[-+]", "") == store then writable = true end
      end
      assert.is_true(writable, "the token store " .. store .. " is read-only under ProtectSystem=" .. unit.ProtectSystem)
      -- owned by the unit's user, not readable by others (the tokens)
      if unit.StateDirectory then assert.equals("0700", unit.StateDirectoryMode) end
    end
  end)

  it("passes systemd-analyze verify with ExecStart naming this tree's command", function()
    if not os.execute("command -v systemd-analyze >/dev/null 2>&1") then
      pending("systemd-analyze is not installed (Debian: systemd)")
      return
    end
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    finally(function() os.execute("rm -rf " .. dir) end)
    local top = helpers.top:match("^/") and helpers.top or (os.getenv("PWD") .. "/" .. helpers.top)
    local exec = unit.ExecStart:gsub("^%S+", top .. "/bin/biconnector", 1)
    local f = assert(io.open(dir .. "/biconnector.service", "w"))
    f:write((text:gsub("\nExecStart=[^\n]*", function() return "\nExecStart=" .. exec end)))
    f:close()
    local p = io.popen("cd " .. dir .. " && systemd-analyze verify ./biconnector.service 2>&1; echo rc=$?")
    local out = p:read("*a")
    p:close()
    assert.matches("rc=0\n$", out)
    -- it reports problems on stderr without failing for some: none may be about the unit
    assert.is_nil(out:find("biconnector.service:", 1, true), out)
  end)
end)
