return require "biconnector.host.ngx" -- the public name of that module (docs/architecture.md)
