return require "biconnector.rest.tokens_redis" -- the public name of that module (docs/architecture.md)
