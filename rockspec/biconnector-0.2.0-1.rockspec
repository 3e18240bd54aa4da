rockspec_format = "3.0"
package = "biconnector"
version = "0.2.0-1"
source = {
  url = "git+https://example.invalid/biconnector.git",
  tag = "v0.2.0",
}
description = {
  summary = "Bitrix24 BI Builder connectors and REST scripting in Lua, with a C core",
  detailed = [[
    Write a Bitrix24 BI Builder connector as a Lua file and serve it from a
    built-in HTTP server (libmicrohttpd) or OpenResty; script Bitrix24's REST
    API (libcurl) with OAuth renewal, batches, paging, rate limits and retries.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
}
-- The C core is built by CMake, which finds libcurl and libmicrohttpd through
-- pkg-config (so Debian's multiarch include directory needs no flags) and the
-- Lua headers through LUA_INCDIR. System packages: see README.md.
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBDIR = "$(LIBDIR)",
    LUADIR = "$(LUADIR)",
  },
  install = {
    bin = { biconnector = "bin/biconnector" },
  },
}
