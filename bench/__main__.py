"""``python -m bench [run options] | compare OLD.json NEW.json | plan --profile ... --traffic ...``"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        from bench.compare import main as compare_main
        return compare_main(argv[1:])
    if argv and argv[0] == "plan":
        from bench.plan import main as plan_main
        return plan_main(argv[1:])
    from bench.runner import main as run_main
    return run_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
