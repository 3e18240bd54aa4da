return require "biconnector.connector.request" -- the public name of that module (docs/architecture.md)
