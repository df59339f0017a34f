"""``python3 -m jobs.bootstrap run | test | setup | package``: see the package's docstring."""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
