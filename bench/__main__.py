"""`python -m bench [SCENARIO ...] [--quick] [--out DIR]`: run benchmarks, write results."""

import sys

from bench.harness import main

sys.exit(main())
