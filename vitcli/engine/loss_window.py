"""The training loss as the loop keeps it: summed on the device, read back only when asked.

`add` runs every micro-batch and never leaves the device (no host sync); `read` and
`read_since_log` bring back, in one transfer (one all-reduce under DDP), the sums since
the epoch began, and stop the run when any micro-batch since the last read was not finite.
"""

from __future__ import annotations

import math

import torch

from vitcli.core.errors import UserError
from vitcli.core.runtime import Runtime


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; last.pt still holds the last good state."""


class LossWindow:
    """Epoch loss totals on the device (sum of loss x batch size, non-finite count, last bad value).

    Args:
        runtime: where the totals live, and the all-reduce that makes them global under DDP.
    """

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.reset()

    def reset(self, loss_sum: float = 0.0, seen: int = 0, step: int = 0) -> None:
        """Start an epoch (or continue one from a checkpoint's global totals: rank 0 carries them)."""
        dev = self.runtime.device
        carry = self.runtime.is_main
        self.sum = torch.tensor(loss_sum if carry else 0.0, dtype=torch.float64, device=dev)
        self.bad = torch.zeros(2, dtype=torch.float64, device=dev)  # non-finite count, last non-finite value
        self.seen = seen if carry else 0  # samples this rank added (host count)
        self.logged_sum, self.logged_seen = loss_sum, seen  # global totals at the last log point
        self.totals = (loss_sum, seen)  # global totals at the last read (what a checkpoint records)
        self.checked_step = step  # optimizer step of the last read (names the range of a failure)

    def add(self, loss: torch.Tensor, n: int) -> None:
        """Add one micro-batch's mean loss over `n` samples; stays on the device."""
        loss = loss.detach().double()
        finite = torch.isfinite(loss)
        self.sum += torch.where(finite, loss * n, torch.zeros_like(loss))
        self.bad[0] += (~finite).double()
        self.bad[1] = torch.where(finite, self.bad[1], loss)
        self.seen += n

    def read(self, epoch: int, step: int) -> tuple[float, int]:
        """(loss sum, samples) since the epoch began, over all ranks; raises NonFiniteLoss if any was not finite."""
        totals = torch.cat([self.sum.view(1), self.bad[:1],
                            torch.tensor([float(self.seen)], dtype=torch.float64, device=self.sum.device)])
        totals = self.runtime.all_reduce_sum(totals)
        loss_sum, bad, seen = totals.tolist()
        if bad:
            value = self.bad[1].item()
            raise NonFiniteLoss(
                f"loss became {value if not math.isfinite(value) else 'non-finite'} between optimizer steps "
                f"{self.checked_step + 1} and {step} (epoch {epoch + 1}); the run stopped and checkpoints/last.pt "
                "holds the last good state (lower optimizer.lr, add warmup or clip_grad)")
        self.checked_step = step
        self.totals = (loss_sum, int(seen))
        return self.totals

    def read_since_log(self, epoch: int, step: int) -> float:
        """Mean loss over the samples since the previous read (what a log point reports)."""
        loss_sum, seen = self.read(epoch, step)
        mean = (loss_sum - self.logged_sum) / max(seen - self.logged_seen, 1)
        self.logged_sum, self.logged_seen = loss_sum, seen
        return mean
