"""``python -m jouleledger``: the same as the ``jouleledger`` command."""

import sys

from jouleledger.cli import main

sys.exit(main())
