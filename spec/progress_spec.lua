-- Long CLI runs show progress on a terminal: verify's requests, register's
-- steps, call --all's pages, as one status line on stderr rewritten in place
-- and erased at the end. On a pseudo-terminal (util-linux `script`) the line
-- is there; with stderr not a terminal, or with --json, not one byte of it,
-- and stdout is the same either way.
local helpers = require "helpers"
local S = require "serve_helpers"
local control = require "portal.control"
local json = require "biconnector.json"

local ESC_LINE = "\r\27[K"

local function have_script()
  local p = io.popen("script --version 2>/dev/null")
  local v = p:read("*a")
  p:close()
  return v:find("util%-linux") ~= nil
end

-- A file's text ("" when it is not there), the file removed.
local function read(path)
  local s = helpers.read_file(path) or ""
  os.remove(path)
  return s
end

local function command(env, args)
  local parts = { env, "BIC_BUILD=" .. S.shell_quote(helpers.build), helpers.runtime, "bin/biconnector" }
  for _, a in ipairs(args) do parts[#parts + 1] = S.shell_quote(a) end
  return table.concat(parts, " ")
end

-- Runs with stderr on a pseudo-terminal and stdout to a file: -> exit code, stdout, terminal text.
local function on_terminal(env, args)
  local outfile, ttyfile = os.tmpname(), os.tmpname()
  local inner = command(env, args) .. " >" .. S.shell_quote(outfile)
  local ok, _, code = os.execute(("script -qec %s /dev/null </dev/null >%s 2>&1")
    :format(S.shell_quote(inner), S.shell_quote(ttyfile)))
  if type(ok) == "number" then code = ok / 256 end -- Lua 5.1 / LuaJIT
  return code, read(outfile), read(ttyfile)
end

-- Runs with stdout and stderr to files: -> exit code, stdout, stderr.
local function off_terminal(env, args)
  return helpers.run3(command(env, args))
end

-- The status lines written, in order (each starts with ESC_LINE).
local function status_lines(tty)
  local lines = {}
  for text in tty:gmatch("\r\27%[K([^\r]*)") do
    if text ~= "" then lines[#lines + 1] = text end
  end
  return lines
end

local function without_timings(text) return (text:gsub("%d+%.%d+ s", "T s")) end

describe("progress on a terminal", function()
  if not have_script() then
    it("needs util-linux script", function() pending("SKIPPED: no util-linux `script` to open a pseudo-terminal") end)
    io.stderr:write("\n*** SKIPPED: spec/progress_spec.lua needs util-linux `script`\n")
    return
  end

  local served, portal, url
  setup(function()
    served = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }))
    url = "http://127.0.0.1:" .. served.port
    portal = control.start({ rate = 1000, burst = 1000, url_check = false })
  end)
  teardown(function()
    S.stop(served)
    portal:stop()
  end)

  it("verify: one line per request on the terminal, erased at the end; none off it or with --json", function()
    local args = { "verify", url, "--setting", "token=demo-token" }
    local code, out, tty = on_terminal("", args)
    assert.equal(0, code, tty)
    local lines = status_lines(tty)
    assert.equal(24, #lines, tty) -- every request of the run, numbered
    assert.equal("verify " .. url .. ": request 1: check", lines[1])
    assert.equal("verify " .. url .. ": request 2: table_list", lines[2])
    assert.matches("^verify .*: request 22: check$", lines[22]) -- wrong credentials: check, then table_list and data
    assert.matches("^verify .*: request 24: data deals$", lines[24])
    assert.equal(ESC_LINE, tty:sub(-#ESC_LINE)) -- erased
    assert.is_nil(out:find("\27", 1, true))
    local code2, out2, err2 = off_terminal("", args)
    assert.equal(0, code2)
    assert.equal("", err2)
    assert.equal(without_timings(out2), without_timings(out))
    -- --json on a terminal: the report alone
    code, out, tty = on_terminal("", { "verify", url, "--setting", "token=demo-token", "--json" })
    assert.equal(0, code)
    assert.equal("", tty)
    assert.is_true(json.decode(out).ok)
  end)

  it("verify: the status line shows a URL's user:password@ as user:***@", function()
    local secret_url = url:gsub("^http://", "http://alice:s3cr3t-pw@")
    local code, out, tty = on_terminal("", { "verify", secret_url, "--setting", "token=demo-token", "--table", "deals" })
    assert.equal(0, code, tty)
    assert.equal("verify " .. url:gsub("^http://", "http://alice:***@") .. ": request 1: check", status_lines(tty)[1])
    assert.is_nil(tty:find("s3cr3t-pw", 1, true), tty)
    assert.is_nil(out:find("s3cr3t-pw", 1, true), out)
  end)

  describe("against a connector whose table code holds ESC", function()
    local F = require("verify_report").fixture("spec/verify_fixture_server.lua")
    it("verify: the status line shows it as \\x1b", function()
      local code, out, tty = on_terminal("", { "verify", F.base .. "esc_code", "--setting", "token=s3cret", "--allow-local" })
      assert.equal(0, code, tty)
      local text = table.concat(status_lines(tty), "\n")
      assert.matches("request %d+: data red\\x1b%[31m", text)
      assert.is_nil(text:find("\27[31m", 1, true), text)
      assert.is_nil(out:find("\27", 1, true), out)
    end)
  end)

  it("register: its steps on the terminal, cleared before each printed line; none off it or with --json", function()
    portal:reset({ rate = 1000, burst = 1000, url_check = false })
    local env = ("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access"):format(S.shell_quote(portal.base))
    local args = { "register", "examples/demo/connector.lua", "--base-url", "https://bi.example.com", "--setting", "token=demo-token",
      "--table", "deals", "--table", "contacts" }
    local code, out, tty = on_terminal(env, args)
    assert.equal(0, code, tty)
    local lines = status_lines(tty)
    assert.equal("register: asking the connector file for table deals (1 of 2)", lines[1])
    assert.equal("register: asking the connector file for table contacts (2 of 2)", lines[2])
    local text = table.concat(status_lines(tty), "\n")
    assert.matches('register: looking up the connector "biconnector demo', text)
    assert.matches('register: creating the connector', text)
    assert.matches('register: source "biconnector demo', text)
    assert.matches("register: table deals %(1 of 2%)", text)
    assert.matches("register: table contacts %(2 of 2%)", text)
    assert.equal(ESC_LINE, tty:sub(-#ESC_LINE))
    assert.matches("table 2 contacts: created", out)
    -- off the terminal (the second run updates what the first created)
    local code2, out2, err2 = off_terminal(env, args)
    assert.equal(0, code2)
    assert.equal("", err2)
    assert.matches("table 2 contacts: unchanged", out2)
    code, out, tty = on_terminal(env, { "register", "examples/demo/connector.lua", "--base-url", "https://bi.example.com", "--json" })
    assert.equal(0, code)
    assert.equal("", tty)
    assert.equal("unchanged", json.decode(out).connector.action)
  end)

  it("call --all: the pages on the terminal; none off it", function()
    portal:reset({ rate = 1000, burst = 1000 })
    portal:control({ action = "seed", items = 120 })
    local env = ("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access"):format(S.shell_quote(portal.base))
    local code, out, tty = on_terminal(env, { "call", "test.items.list", "--all" })
    assert.equal(0, code, tty)
    assert.same({ "call test.items.list: page 1, 50 item(s) of 120", "call test.items.list: page 2, 100 item(s) of 120",
      "call test.items.list: page 3, 120 item(s) of 120" }, status_lines(tty))
    assert.equal(ESC_LINE, tty:sub(-#ESC_LINE))
    assert.equal(120, #json.decode(out))
    local code2, out2, err2 = off_terminal(env, { "call", "test.items.list", "--all" })
    assert.equal(0, code2)
    assert.equal("", err2)
    assert.same(json.decode(out), json.decode(out2)) -- key order is the hash's
  end)
end)
