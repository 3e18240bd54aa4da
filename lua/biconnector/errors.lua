return require "biconnector.connector.errors" -- the public name of that module (docs/architecture.md)
