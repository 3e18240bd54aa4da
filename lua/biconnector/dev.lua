return require "biconnector.host.dev" -- the public name of that module (docs/architecture.md)
