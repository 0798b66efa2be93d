"""pq-cosine trial entry point: ``python -m targets.pq_cosine.run_experiment [--kernel F] [--against F]``.

pq-l2's trial (same ops, oracle and checks) over unit-norm embedding inputs. Immutable during a run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from targets.harness import runner
from targets.pq_cosine import inputs
from targets.pq_l2.run_experiment import make_plan

KERNEL = Path(__file__).with_name("kernels.py")
PLAN = make_plan("pq-cosine", inputs)

if __name__ == "__main__":
    sys.exit(runner.main(PLAN, sys.argv[1:], KERNEL))
