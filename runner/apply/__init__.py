"""The apply layer: the executor (engine.py, host.py, ladder.py) and the apply use case
(usecase.py). Imports nothing above it: no cli, no llm (the fixer is handed in).
"""

from runner.apply.engine import Executor

__all__ = ["Executor"]
