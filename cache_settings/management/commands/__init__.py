"""``manage.py cache_nodes``."""
