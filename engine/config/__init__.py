"""Loading config.toml and channels/*.toml, option schemas and lenient loading."""
