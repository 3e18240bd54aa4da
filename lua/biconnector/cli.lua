return require "biconnector.cli.main" -- the public name of that module (docs/architecture.md)
