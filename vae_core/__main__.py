"""``python -m vae_core train|evaluate|export|compare ...``"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vae_core"))
