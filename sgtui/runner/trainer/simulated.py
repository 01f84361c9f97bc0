"""The simulated trainer of inference mode: real memory pressure, no learning.

It holds a configured amount of memory on the training devices for a
configured time, so that an engine that did not really give its memory back
at offload makes training fail or slow down, as a real trainer would. Its
"new adapter" is a fresh copy of the initial PEFT adapter under a new path,
so the weight sync that follows is a real adapter load.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

from sgtui.events import Train
from sgtui.runner.trainer.base import Rollout, Trainer, TrainerError


class SimulatedTrainer(Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The hold runs in a worker thread; a cancelled run must not wait it out (asyncio.run joins
        # its worker threads before the runner process can exit).
        self._stop = threading.Event()

    def _wait(self) -> None:
        self._stop.wait(self.cfg.sim_train_seconds)

    def _hold(self) -> list[float]:
        mib = self.cfg.sim_train_mib
        peaks: list[float] = []
        if mib <= 0:
            self._wait()
            return peaks
        if self.cfg.device == "cuda":
            import torch  # lazily: the runner only needs torch on GPU machines

            blocks = []
            try:
                for dev in range(torch.cuda.device_count()):
                    blocks.append(torch.empty(mib * 1024 * 1024, dtype=torch.uint8, device=f"cuda:{dev}"))
                    peaks.append(torch.cuda.max_memory_allocated(dev) / 2**20)
            except torch.OutOfMemoryError as e:
                raise TrainerError("OOM", f"simulated trainer could not allocate {mib} MiB: {e}",
                                   advice="the engine did not free enough memory at offload") from None
            torch.cuda.synchronize()
            self._wait()
            del blocks
            torch.cuda.empty_cache()
        else:
            try:
                block = bytearray(mib * 1024 * 1024)  # calloc'd zero pages: not resident until written
            except MemoryError:
                raise TrainerError("OOM", f"simulated trainer could not allocate {mib} MiB of host memory",
                                   advice="lower --sim-train-mib") from None
            block[::4096] = b"\x01" * len(range(0, len(block), 4096))  # one byte per page: really resident
            peaks.append(float(mib))
            self._wait()
            del block
        return peaks

    async def train(self, step: int, rollouts: list[Rollout]) -> str:
        t0 = time.perf_counter()
        self._stop.clear()
        try:
            peaks = await asyncio.to_thread(self._hold)
        except asyncio.CancelledError:
            self._stop.set()
            raise
        out = ""
        if self.cfg.initial_adapter:
            dest = self.workdir / "adapters" / f"step-{step}"
            await asyncio.to_thread(shutil.copytree, self.cfg.initial_adapter, dest, dirs_exist_ok=True)
            out = str(dest)
        rewards = [r.reward for r in rollouts]
        self.emit(Train(t=time.time(), run=self.cfg.label, step=step, loss=0.0,
                        tokens=sum(r.output_tokens for r in rollouts), seconds=time.perf_counter() - t0,
                        adapter_path=out, peak_mib=peaks,
                        reward_mean=sum(rewards) / len(rewards) if rewards else 0.0, simulated=True))
        return out

    def stop_now(self) -> None:
        self._stop.set()
