#!/usr/bin/env python
"""Run every check of the toolkit: ``python paper_checks.py --all`` (see --help)."""

import sys

try:
    from dpo_rlhf_checks.cli import main  # imports numpy and friends: a second in which a Ctrl-C may land
except KeyboardInterrupt:
    print("paper_checks.py: interrupted while starting (SIGINT)", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
