return require "biconnector.connector.filter" -- the public name of that module (docs/architecture.md)
