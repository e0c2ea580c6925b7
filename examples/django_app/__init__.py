"""A minimal Django project whose ASGI application is wrapped by the gateway (see `asgi.py`)."""
