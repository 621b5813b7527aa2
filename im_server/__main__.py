"""``python -m im_server api|gateway``."""

from __future__ import annotations

import sys

from .runner import main

sys.exit(main())
