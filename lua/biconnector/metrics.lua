return require "biconnector.host.metrics" -- the public name of that module (docs/architecture.md)
