"""`python -m training.adapters.gguf ...`: the export from the copy of training/ that install.py puts beside
the webui extension (it has no training/__main__.py)."""

import sys

from training.adapters.gguf.export import main

if __name__ == "__main__":
    sys.exit(main())
