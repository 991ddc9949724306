"""`python -m firmware`: the firmware's commands without the other faces.

`esignbox serve` starts its worker processes this way (firmware/workers.py), so that they load
neither the admin console nor provisioning: the console runs in the supervising parent only.
"""

import sys

from .cli import parser, run

if __name__ == "__main__":
    sys.exit(run(parser()))
