"""An example site whose CACHES come from cache_settings."""
