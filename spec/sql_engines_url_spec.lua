-- The URL forms of the PostgreSQL and MySQL engines (lua/biconnector/sql/
-- server_url.lua and the engine modules): no server needed.
local pg = require "biconnector.sql.postgresql"
local my = require "biconnector.sql.mysql"
local url_lib = require "biconnector.sql.server_url"

describe("database server URLs", function()
  it("reads every part, %-escaped, and passes the engine's own options through", function()
    local o = assert(pg.parse_url("postgresql://us%40er:p%3Ass@db.example.com:6543/sh%20op?sslmode=verify-full&sslrootcert=/etc/ca.pem&statement_timeout=5000&connect_timeout=3&schemas=a,%20b"))
    assert.same({ "us@er", "p:ss", "db.example.com", 6543, "sh op", 5000, 3 },
      { o.user, o.password, o.host, o.port, o.database, o.statement_timeout_ms, o.connect_timeout_s })
    assert.same({ "a", "b" }, o.schemas)
    assert.equal("sslmode=verify-full&sslrootcert=/etc/ca.pem", o.params)
    o = assert(pg.parse_url("postgres://[::1]/db"))
    assert.same({ "::1", nil, "db" }, { o.host, o.port, o.database })
    o = assert(my.parse_url("mariadb://reader@localhost/shop?socket=/run/mysqld/mysqld.sock&ssl-mode=REQUIRED"))
    assert.same({ "reader", "localhost", "shop", "/run/mysqld/mysqld.sock", "ssl-mode=REQUIRED" },
      { o.user, o.host, o.database, o.socket, o.params })
    o = assert(my.parse_url("mysql://u:pw@127.0.0.1:3307/d"))
    assert.same({ "u", "pw", 3307 }, { o.user, o.password, o.port })
  end)

  it("reads the scheme in any case, as RFC 3986 has it (SQLITE:, PostgreSQL:)", function()
    local sql = require "biconnector.sql"
    assert.is_true(sql.is_url("SQLITE:///tmp/x.db"))
    local engine, o = sql.parse_url("SQLITE:///tmp/x.db")
    assert(engine, o)
    assert.equal("sqlite", engine.engine)
    assert.equal("/tmp/x.db", o.path)
    engine, o = sql.parse_url("PostgreSQL://u@db.example.com/shop")
    assert(engine, o)
    assert.same({ "postgresql", "u", "db.example.com", "shop" }, { engine.engine, o.user, o.host, o.database })
  end)

  -- docs/database.md, "MySQL and MariaDB": any option but those named is an error naming it.
  -- The driver's refusal listed only its TLS options, as if socket or schemas were unknown too.
  it("refuses an unknown MySQL option naming every option it takes", function()
    local o, err = my.parse_url("mysql://u:Secret-1@127.0.0.1:1/d?bogus=1")
    assert.is_nil(o)
    assert.matches('mysql URL: unknown option "bogus" (known: schemas, statement_timeout, connect_timeout, '
      .. 'pool_size, socket, ssl, ssl-mode, ssl-ca, ssl-capath, ssl-cert, ssl-key, ssl-cipher, ssl-crl, '
      .. 'ssl-crlpath, ssl-verify-server-cert, tls-version)', err, 1, true)
    assert.is_nil(err:find("Secret-1", 1, true))
    o = assert(my.parse_url("mysql://u@h/d?ssl=true&ssl-ca=/etc/ca.pem&tls-version=TLSv1.3&socket=/s&schemas=a"))
    assert.same({ "ssl=true&ssl-ca=/etc/ca.pem&tls-version=TLSv1.3", "/s" }, { o.params, o.socket })
  end)

  it("refuses what it cannot read, saying what, without the password", function()
    local _, err = pg.parse_url("postgresql://u:Secret-1@h:99999/db")
    assert.matches('bad port "99999"', err, 1, true)
    assert.is_nil(err:find("Secret-1", 1, true))
    _, err = my.parse_url("mysql://u:Secret-1@h:3306")
    assert.matches("no database", err, 1, true)
    _, err = pg.parse_url("postgresql://u@h/db?statement_timeout=soon")
    assert.matches("statement_timeout expects a whole number", err, 1, true)
    _, err = pg.parse_url("postgresql://u@h/db?password=x")
    assert.matches("give password in the URL itself", err, 1, true)
  end)

  it("takes the password from BICONNECTOR_DB_PASSWORD, then from BICONNECTOR_DB_PASSWORD_FILE", function()
    local env = { BICONNECTOR_DB_PASSWORD = "from-env" }
    local getenv = function(k) return env[k] end
    assert.equal("from-env", url_lib.password_from_env(getenv))
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("from-file\n")
    f:close()
    env = { BICONNECTOR_DB_PASSWORD_FILE = path }
    assert.equal("from-file", url_lib.password_from_env(getenv))
    os.remove(path)
    local p, err = url_lib.password_from_env(getenv)
    assert.is_nil(p)
    assert.matches("BICONNECTOR_DB_PASSWORD_FILE: cannot read", err, 1, true)
    env = {}
    assert.is_nil((url_lib.password_from_env(getenv)))
  end)

  it("shows the source without the password", function()
    local o = assert(pg.parse_url("postgresql://reader:Secret-2@db:5432/shop"))
    assert.equal("postgresql://reader@db:5432/shop", pg.display(o))
    o = assert(my.parse_url("mysql://reader:Secret-2@db/shop?socket=/s.sock"))
    assert.equal("mysql://reader@[/s.sock]/shop", my.display(o))
  end)

  it("masks the password of a URL as output shows it (banner, log, dev page), nothing else", function()
    local masked = url_lib.masked
    assert.equal("postgresql://reader:***@db:5432/shop", masked("postgresql://reader:Secret-1@db:5432/shop"))
    assert.equal("mysql://reader:***@db/shop", masked("mysql://reader:p@ss@db/shop")) -- up to the last @
    assert.equal("postgresql://reader@db/shop", masked("postgresql://reader@db/shop"))
    assert.equal("sqlite:///srv/a@b.db", masked("sqlite:///srv/a@b.db")) -- an @ in the path is no password
    assert.equal("connectors/shop.lua", masked("connectors/shop.lua"))
  end)
end)
