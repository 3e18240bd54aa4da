-- A connector that reads Bitrix24 through its REST API with OAuth tokens kept
-- in Redis, so that every worker of every machine behind the load balancer
-- shares one set of tokens and renews them once (docs/deploy.md).
--
-- Configured by the environment (systemd: EnvironmentFile):
--   BICONNECTOR_TOKEN     what Bitrix24 must send in the connector setting `token`
--   BIC_PORTAL            https://your.bitrix24.example
--   BIC_CLIENT_ID, BIC_CLIENT_SECRET   the local application's credentials
--   BIC_OAUTH_URL         renewal endpoint (default https://oauth.bitrix.info/oauth/token/)
--   BIC_REDIS_HOST, BIC_REDIS_PORT, BIC_REDIS_PASSWORD   (default 127.0.0.1:6379)
--   BIC_TOKENS_KEY        Redis key of the tokens (default biconnector:tokens)
--   BIC_REST_RATE, BIC_REST_BURST   the client's leaky bucket (default 2 and 50)
-- The tokens must be in Redis before the first request (store:set{...} once,
-- e.g. from the application's install handler).
local biconnector = require "biconnector"
local rest = require "biconnector.rest"
local tokens = require "biconnector.tokens"

local env = os.getenv
local TOKEN = env("BICONNECTOR_TOKEN")

-- One client per process, made on first use: after `serve` forked its workers,
-- so that no two processes share a libcurl or Redis connection.
local client, client_pid
local function rest_client()
  local pid = require("biconnector.core").process.getpid()
  if client and client_pid == pid then return client end
  local store = tokens.redis {
    host = env("BIC_REDIS_HOST") or "127.0.0.1", port = tonumber(env("BIC_REDIS_PORT") or "6379"),
    password = env("BIC_REDIS_PASSWORD"), key = env("BIC_TOKENS_KEY") or "biconnector:tokens",
  }
  client = assert(rest.new {
    portal = assert(env("BIC_PORTAL"), "BIC_PORTAL is not set"),
    client_id = env("BIC_CLIENT_ID"), client_secret = env("BIC_CLIENT_SECRET"),
    oauth_url = env("BIC_OAUTH_URL"), store = store,
    rate = tonumber(env("BIC_REST_RATE") or "2"), burst = tonumber(env("BIC_REST_BURST") or "50"),
  })
  client_pid = pid
  return client
end

return biconnector.connector {
  title = "Bitrix24 profile (REST, tokens in Redis)",
  settings = { { code = "token", name = "Access token", type = "STRING" } },
  secrets = function() -- masked in every error message and log line
    local list = {}
    for _, v in ipairs({ TOKEN or "", env("BIC_CLIENT_SECRET") or "", env("BIC_REDIS_PASSWORD") or "" }) do
      if v ~= "" then list[#list + 1] = v end
    end
    return list
  end,

  check = function(connection)
    if TOKEN == nil or TOKEN == "" then return false, "BICONNECTOR_TOKEN is not set on the server" end
    return connection.token == TOKEN, "wrong token"
  end,

  tables = { { code = "profile", title = "The application's user" } },
  describe = {
    profile = {
      { code = "id", name = "ID", type = "int" },
      { code = "name", name = "Name", type = "string" },
      { code = "last_name", name = "Last name", type = "string" },
    },
  },
  cache = { ttl = 300 },

  data = function()
    local user = assert(rest_client():call("profile"))
    return { { id = tonumber(user.ID), name = user.NAME, last_name = user.LAST_NAME } }
  end,
}
