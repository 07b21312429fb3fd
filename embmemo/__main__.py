"""``python -m embmemo``: the same as the ``embmemo`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
