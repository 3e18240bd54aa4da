return require "biconnector.connector.cache" -- the public name of that module (docs/architecture.md)
