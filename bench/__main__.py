"""`python -m tidings.bench [SCENARIO ...] [--quick] [--out DIR]`: run benchmarks, write results."""

import sys

from tidings.bench.harness import main

sys.exit(main())
