return require "biconnector.connector.names" -- the public name of that module (docs/architecture.md)
