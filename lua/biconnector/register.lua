return require "biconnector.cli.register" -- the public name of that module (docs/architecture.md)
