"""Events into functions: pub/sub messages delivered to subscribed functions (host/events/delivery.py)."""
