"""``python -m distinfer``: the :mod:`distinfer.cli` command."""
import sys

from .cli import main

sys.exit(main())
