"""Command line: ``python -m balancing.engine < problem.json`` prints the result JSON.

Exit status 2 with a one-line error on stderr when the input is not JSON or not a valid problem.
"""

from __future__ import annotations

import json
import sys

from balancing.engine.model import ProblemError
from balancing.engine.solver import solve


def main() -> int:
    """Read a problem from stdin, write the result to stdout; 0 on success, 2 on bad input."""
    try:
        problem = json.load(sys.stdin, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ProblemError) as exc:
        print(f"error: input is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        result = solve(problem)
    except ProblemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _reject_constant(name: str) -> float:
    raise ProblemError("input", f"{name} is not a number JSON allows")


if __name__ == "__main__":
    sys.exit(main())
