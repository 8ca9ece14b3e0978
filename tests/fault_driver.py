"""Runs `scripts/train.py` with a fault injected, for tests/test_reliability_training.py.

    GLIPV2_KILL_DURING_SAVE_AT=8 python tests/fault_driver.py --config recipe.yaml ...

SIGKILLs the process in the middle of writing checkpoint 8: after Accelerate has written the model, optimizer and
RNG states into `checkpoint-8.tmp` and before the trainer state that completes it.
"""

from __future__ import annotations

import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(REPO, "tests")]
sys.path.insert(0, REPO)

from tasks import trainer  # noqa: E402

KILL_AT = int(os.environ["GLIPV2_KILL_DURING_SAVE_AT"])
_trainer_state = trainer.MultitaskTrainer.trainer_state


def _killing_trainer_state(self: trainer.MultitaskTrainer) -> dict:
    if self.step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _trainer_state(self)


trainer.MultitaskTrainer.trainer_state = _killing_trainer_state

if __name__ == "__main__":
    from scripts.train import main

    sys.exit(main(sys.argv[1:]))
