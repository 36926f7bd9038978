"""`python -m loralab_cli ...`: `train` runs kohya configs in this process; anything else queues on a server."""
import sys

if sys.argv[1:2] == ["train"]:
    from .train_command import main as train

    raise SystemExit(train(sys.argv[2:]))

try:
    import websocket  # noqa: F401  (the one package beyond the standard library, for talking to a server)
except ImportError:
    raise SystemExit("python -m loralab_cli needs the websocket-client package: pip install websocket-client") from None

from .main import main

raise SystemExit(main())
