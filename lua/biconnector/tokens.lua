return require "biconnector.rest.tokens" -- the public name of that module (docs/architecture.md)
