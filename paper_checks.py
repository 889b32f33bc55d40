#!/usr/bin/env python
"""Run every check of the toolkit: ``python paper_checks.py --all`` (see --help)."""

import sys

from dpo_rlhf_checks.cli import main

if __name__ == "__main__":
    sys.exit(main())
