"""``python -m lab`` entry point."""
import sys

from lab.cli import main

sys.exit(main())
