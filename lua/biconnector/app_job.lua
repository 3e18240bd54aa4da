return require "biconnector.app.job" -- the public name of that module (docs/architecture.md)
