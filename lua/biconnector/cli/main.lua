-- The biconnector command line: parses the first word and hands the rest to
-- the module that owns the command. Every command returns an exit code.
local core = require "biconnector.core"

local _M = {}

local USAGE = [==[
Usage: biconnector COMMAND [ARGS...]

Commands:
  serve FILE [--listen HOST:PORT] [--prefix PATH] [--workers N] [--max-body BYTES]
                      serve a connector file on the built-in HTTP server
                      (default 127.0.0.1:8080)
  serve sqlite:///PATH.db [--tables GLOBS] [--token-file FILE | --no-auth] [...]
                      serve a database with no Lua (token from BICONNECTOR_TOKEN)
  serve TARGET --app --public-url https://HOST [--tls-cert FILE --tls-key FILE]
                      also be the portal's local application: installed from the portal,
                      it registers the connector, source and tables itself (docs/app.md)
  login [--portal NAME] [--listen HOST:PORT]
                      obtain the application's tokens through OAuth (docs/app.md)
  verify URL [--setting CODE=VALUE]... [--body form|json|both] [--json]
                      play Bitrix24 against a connector and report every deviation
  register FILE --base-url URL [--setting CODE=VALUE]... [--table CODE[=NAME]]... [--prune] [--dry-run]
                      create or update the connector (and a source, tables) in a portal
  call METHOD [JSON]  call a Bitrix24 REST method
                      (auth for call and register comes from the environment: see docs/rest.md)

Options:
  -h, --help          show this help
  -v, --version       print the version

Documentation: README.md and docs/ in the source tree.
]==]

-- Command name -> module that provides main(args) -> exit code.
local commands = {
  serve = "biconnector.host.serve",
  call = "biconnector.cli.call",
  verify = "biconnector.cli.verify",
  register = "biconnector.cli.register",
  login = "biconnector.app.login",
}

local function module_exists(name)
  for _, searcher in ipairs(package.searchers or package.loaders) do
    local loader = searcher(name)
    if type(loader) == "function" then return true end
  end
  return false
end

-- For a command's main(args, out): nil after writing usage to out when args ask
-- for help (-h, --help anywhere), else a copy of args the parser may edit.
function _M.arguments(args, out, usage)
  local copy = {}
  for i, a in ipairs(args or {}) do
    if a == "-h" or a == "--help" then out:write(usage) return nil end
    copy[i] = a
  end
  return copy
end

function _M.main(argv)
  argv = argv or {}
  local command = argv[1]
  if command == nil or command == "-h" or command == "--help" or command == "help" then
    io.stdout:write(USAGE)
    return command == nil and 2 or 0
  end
  if command == "-v" or command == "--version" or command == "version" then
    io.stdout:write("biconnector ", core.version, "\n")
    return 0
  end
  local module = commands[command]
  if module == nil then
    io.stderr:write("biconnector: unknown command '", tostring(command),
      "' (see biconnector --help)\n")
    return 2
  end
  if not module_exists(module) then
    io.stderr:write("biconnector: the '", command, "' command is not available in this version\n")
    return 2
  end
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  -- lazy: only the command asked for is loaded (and a missing one is reported above)
  local ok, code = pcall(function() return require(module).main(args) end)
  if not ok then
    io.stderr:write("biconnector ", command, ": ", tostring(code), "\n")
    return 1
  end
  return tonumber(code) or 0
end

return _M
