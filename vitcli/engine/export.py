"""Export trained weights as model.safetensors, loadable by plain timm."""

from __future__ import annotations

from pathlib import Path

import torch


def export_safetensors(state_dict: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from vitcli.io import atomic_write

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = Path(path).with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    data = tmp.read_bytes()
    tmp.unlink()
    atomic_write(Path(path), lambda f: f.write(data))
