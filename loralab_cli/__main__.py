"""`python -m loralab_cli ...`"""
from .main import main

raise SystemExit(main())
