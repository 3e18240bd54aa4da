return require "biconnector.host.async" -- the public name of that module (docs/architecture.md)
