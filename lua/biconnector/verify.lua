return require "biconnector.cli.verify" -- the public name of that module (docs/architecture.md)
