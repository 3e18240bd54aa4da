return require "biconnector.host.serve" -- the public name of that module (docs/architecture.md)
