return require "biconnector.rest.client" -- the public name of that module (docs/architecture.md)
