-- `biconnector call METHOD [JSON] [--all] [--raw]`: one REST call from the
-- shell, auth from the environment, the answer printed as JSON.
local json = require "biconnector.json"
local rest = require "biconnector.rest.client"
local tokens = require "biconnector.rest.tokens"
local progress_lib = require "biconnector.cli.progress"

local _M = {}

_M.USAGE = [[
Usage: biconnector call METHOD [JSON] [--all] [--raw]
  METHOD   a REST method, e.g. profile or biconnector.connector.list
  JSON     its parameters as a JSON object, e.g. '{"id": 5}'
  --all    iterate every page of a list method and print one array
  --raw    print the whole answer (result, total, next, time)
Exit status: 0 success, 1 the call failed (for batch: a command failed; the
answer is still printed and stderr names the failed keys), 2 usage.
Environment:
  BITRIX24_WEBHOOK=https://PORTAL/rest/USER_ID/CODE/         an incoming webhook, or
  BITRIX24_PORTAL, BITRIX24_ACCESS_TOKEN                      an application's token, with
  BITRIX24_REFRESH_TOKEN, BITRIX24_CLIENT_ID, BITRIX24_CLIENT_SECRET to renew it,
  BITRIX24_OAUTH_URL, BITRIX24_TOKENS_FILE or BITRIX24_TOKENS_REDIS (keeps renewed tokens:
  without one a renewal spends BITRIX24_REFRESH_TOKEN and is told on stderr;
  its key BITRIX24_TOKENS_KEY, default biconnector:tokens), BITRIX24_CA_FILE
]]

-- The tokens the environment gives when no store is named: the run renews an
-- expired access token as any client does (the call goes through), but
-- nothing keeps the new pair, and the renewal spent BITRIX24_REFRESH_TOKEN
-- (single-use): the next run with the same environment gets invalid_grant.
-- So a renewal is told on stderr, with how to keep the pair.
_M.UNKEPT_RENEWAL = "warning: the access token was renewed, and no token store keeps the new pair:"
  .. " BITRIX24_REFRESH_TOKEN is now spent (single-use), and the next run with it will fail (invalid_grant);"
  .. " set BITRIX24_TOKENS_FILE=PATH (or BITRIX24_TOKENS_REDIS) to keep renewed tokens"
local function unkept_store(refresh_token, warn)
  local store = tokens.memory()
  local told = false
  local set = store.set
  function store.set(self, t)
    if not told and type(t) == "table" and t.refresh_token ~= nil and t.refresh_token ~= refresh_token then
      told = true
      warn("biconnector: " .. _M.UNKEPT_RENEWAL .. "\n")
    end
    return set(self, t)
  end
  return store
end

-- What to do when the OAuth server refuses a renewal (the error's code): said
-- after the error by `call` and `register` (and serve --app's helper).
_M.RENEWAL_HINTS = {
  invalid_grant = "the refresh token is no longer valid (used by another process, older than 180 days, or the"
    .. " application was uninstalled): reinstall the application, or run `biconnector login` (docs/app.md)",
  invalid_client = "the OAuth server refused the client_id/client_secret: copy them again from the application's form",
}

-- The line to print after an error, or nil.
function _M.hint(failure)
  local code = type(failure) == "table" and failure.code
  return code and _M.RENEWAL_HINTS[code] or nil
end

-- The client options the environment describes, or nil, message.
-- warn(text): where a renewal nothing keeps is told (default: stderr).
function _M.options_from_env(getenv, warn)
  local raw = getenv or os.getenv
  -- a variable set empty (VAR= in an environment file, `export VAR=` to clear it) is unset:
  -- BITRIX24_WEBHOOK= made "webhook must be an http(s) URL", BITRIX24_PORTAL= a portal named ""
  getenv = function(name)
    local v = raw(name)
    if v == "" then return nil end
    return v
  end
  local o = { ca_file = getenv("BITRIX24_CA_FILE") }
  if getenv("BITRIX24_WEBHOOK") then
    o.webhook = getenv("BITRIX24_WEBHOOK")
    return o
  end
  local store, serr = tokens.from_env(getenv)
  if serr and not store then return nil, serr end
  local held, herr
  if store then held, herr = store:get() end
  held = type(held) == "table" and held or {}
  o.portal = getenv("BITRIX24_PORTAL")
  -- an application installed through `serve --app` keeps its portal beside the tokens
  if not o.portal and held.access_token and type(held.client_endpoint) == "string" then o.client_endpoint = held.client_endpoint end
  if not o.portal and not o.client_endpoint then
    local how = "set BITRIX24_WEBHOOK, or BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN"
    if not store then
      return nil, how .. " (or BITRIX24_TOKENS_FILE / BITRIX24_TOKENS_REDIS holding an installed application's tokens)"
    end
    -- the store is named: say what it holds instead of the tokens
    local what = "the token store (" .. tostring(serr) .. ")"
    if herr then return nil, what .. " cannot be read: " .. tostring(herr) end
    if held.uninstalled_at then
      return nil, ("%s holds no tokens: the application was uninstalled from %s at %s; reinstall it (or run"
        .. " `biconnector login`), or %s"):format(what, tostring(held.portal or "?"),
        os.date("!%Y-%m-%d %H:%M UTC", tonumber(held.uninstalled_at) or 0), how)
    end
    return nil, what .. " holds no tokens (the application's installation or `biconnector login` stores them); or " .. how
  end
  o.access_token = getenv("BITRIX24_ACCESS_TOKEN")
  o.refresh_token = getenv("BITRIX24_REFRESH_TOKEN")
  o.client_id, o.client_secret = getenv("BITRIX24_CLIENT_ID"), getenv("BITRIX24_CLIENT_SECRET")
  local oerr
  o.oauth_url, oerr = rest.oauth_url(getenv("BITRIX24_OAUTH_URL"), "BITRIX24_OAUTH_URL")
  if not o.oauth_url then return nil, oerr end
  o.store = store
  if not store and o.refresh_token and o.client_id and o.client_secret then
    o.store = unkept_store(o.refresh_token, warn or function(text) io.stderr:write(text) end)
  end
  if not o.access_token and not held.access_token then
    return nil, "BITRIX24_PORTAL needs BITRIX24_ACCESS_TOKEN (or BITRIX24_TOKENS_FILE / BITRIX24_TOKENS_REDIS holding tokens)"
  end
  return o
end

-- The commands of a batch answer (`result` of method batch: result,
-- result_error, ...) that failed: those in result_error, and the biconnector.*
-- ones whose result holds an error (the portal's success; client:batch counts
-- them as failed too). cmd: the commands sent. -> "KEY CODE, ..." and how many, or nil
function _M.batch_failures(cmd, answer)
  if type(answer) ~= "table" then return nil end
  cmd = type(cmd) == "table" and cmd or {}
  local list = getmetatable(cmd) == json.array_mt
  local failed = {}
  -- a part keyed 0..n-1 comes as a JSON list (PHP's encoding), any other as an object
  local function each(part, fn)
    if type(part) ~= "table" then return end
    if getmetatable(part) == json.array_mt then
      for i, v in ipairs(part) do fn(tostring(i - 1), v) end
    else
      for k, v in pairs(part) do fn(tostring(k), v) end
    end
  end
  local function line_of(key)
    if list then return cmd[(tonumber(key) or -1) + 1] end
    return cmd[key]
  end
  each(answer.result_error, function(key, v)
    failed[key] = type(v) == "table" and tostring(v.error) or tostring(v)
  end)
  each(answer.result, function(key, v)
    local line = line_of(key)
    local inner = type(line) == "string" and failed[key] == nil and rest.error_in_result(rest.command_method(line), v)
    if inner then failed[key] = tostring(inner.error) end
  end)
  local keys = {}
  for k in pairs(failed) do keys[#keys + 1] = k end
  if #keys == 0 then return nil end
  table.sort(keys, function(a, b)
    local na, nb = tonumber(a), tonumber(b)
    if na and nb then return na < nb end
    if (na ~= nil) ~= (nb ~= nil) then return na ~= nil end
    return a < b
  end)
  for i, k in ipairs(keys) do keys[i] = k .. " " .. failed[k] end
  return table.concat(keys, ", "), #keys
end

function _M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local method, params_text, all, raw
  for _, a in ipairs(args or {}) do
    if a == "--all" then all = true
    elseif a == "--raw" then raw = true
    elseif a == "-h" or a == "--help" then out:write(_M.USAGE) return 0
    elseif a:match("^%-") then -- neither a method nor a JSON object starts so
      err:write("biconnector call: unknown option '", a, "'\n", _M.USAGE) return 2
    elseif method == nil then method = a
    elseif params_text == nil then params_text = a
    else err:write("biconnector call: unexpected argument ", a, "\n", _M.USAGE) return 2 end
  end
  if not method then err:write(_M.USAGE) return 2 end
  local params = {}
  if params_text then
    local perr
    params, perr = json.decode(params_text)
    if type(params) ~= "table" or (getmetatable(params) == json.array_mt and next(params) ~= nil) then
      err:write("biconnector call: JSON parameters: ", tostring(perr or "must be an object, e.g. '{\"id\": 5}'"), "\n")
      return 2
    end
    if getmetatable(params) == json.array_mt then params = {} end
  end
  local opts, oerr = _M.options_from_env(nil, function(text) err:write(text) end)
  if not opts then err:write("biconnector call: ", oerr, "\n") return 2 end
  local client, cerr = rest.new(opts)
  if not client then err:write("biconnector call: ", tostring(cerr), "\n") return 2 end
  local value, failure
  local batch_text = not all and rest.method_name(method) == "batch" and params_text and next(params) ~= nil and params_text
  if all then
    local progress = progress_lib.new("call " .. method)
    value, failure = client:list(method, params, { on_page = progress.enabled and function(pages, items, total)
      progress.update(("page %d, %d item(s)%s"):format(pages, items, total and (" of " .. total) or ""))
    end or nil })
    progress.clear()
  elseif batch_text then
    -- the JSON as given: a cmd object decoded into a Lua table loses its order,
    -- and the portal runs the commands in the order sent (halt, $result references)
    value, failure = client:request(method, params, batch_text)
    if value ~= nil and not raw then value = value.result end
  elseif raw then
    value, failure = client:call_raw(method, params)
  else
    value, failure = client:call(method, params)
  end
  client:close()
  if value == nil and failure ~= nil then
    err:write("biconnector call: ", tostring(failure), "\n")
    local hint = _M.hint(failure)
    if hint then err:write("biconnector call: ", hint, "\n") end
    if type(failure) == "table" and failure.code == "ACCESS_DENIED" and opts.webhook
      and method:lower():find("^biconnector%.") then
      err:write("biconnector call: the biconnector methods refuse incoming webhooks (all but *.fields);",
        " use an application's token (BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN, or BITRIX24_TOKENS_FILE: docs/app.md)\n")
    end
    return 1
  end
  local text, eerr = json.encode(value, { indent = 2 })
  if not text then err:write("biconnector call: cannot print the answer: ", tostring(eerr), "\n") return 1 end
  out:write(text, "\n")
  -- a batch answers 200 whatever its commands did: failed ones make the exit 1 as a failed call
  if not all and rest.method_name(method) == "batch" then
    local failures, n = _M.batch_failures(params.cmd, raw and type(value) == "table" and value.result or value)
    if failures then
      err:write(("biconnector call: batch: %d command(s) failed: %s\n"):format(n, failures))
      return 1
    end
  end
  return 0
end

return _M
