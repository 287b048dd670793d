"""``python -m pyrovae.cli`` runs the CLI."""

import sys

from pyrovae.cli import main

sys.exit(main())
