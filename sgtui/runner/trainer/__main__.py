"""Entry point of one torchrun rank: `python -m torch.distributed.run ... -m sgtui.runner.trainer --job job.json`."""

import sys

from sgtui.runner.trainer.worker import main

if __name__ == "__main__":
    sys.exit(main())
