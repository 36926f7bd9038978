"""`python -m loralab_cli ...`"""
try:
    import websocket  # noqa: F401  (the one package beyond the standard library)
except ImportError:
    raise SystemExit("python -m loralab_cli needs the websocket-client package: pip install websocket-client") from None

from .main import main

raise SystemExit(main())
