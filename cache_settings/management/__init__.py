"""Django management commands of cache_settings."""
