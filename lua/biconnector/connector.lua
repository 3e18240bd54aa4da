return require "biconnector.connector.core" -- the public name of that module (docs/architecture.md)
