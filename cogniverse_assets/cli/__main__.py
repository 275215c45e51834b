"""``python -m cogniverse_assets.cli``: the same as the ``cogniverse`` command."""

import sys

from cogniverse_assets.cli import main

sys.exit(main())
