"""A plain PyTorch-style training loop that packs every checkpoint it saves
into a tdelta store and tags the best one by eval loss, then an evaluation
step that loads one tensor of the tagged version.

numpy stands in for torch so that it runs anywhere:
``python examples/train_loop.py /tmp/run``. With torch, save the
``model.state_dict()`` with ``safetensors.torch.save_file`` instead.
"""

import os
import sys

import numpy as np
from safetensors.numpy import save_file

import tdelta
from tdelta.integrations import TrainerCallback


def main(workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    store_path = os.path.join(workdir, "store")
    store = tdelta.Store(store_path) if os.path.exists(store_path) else tdelta.Store.init(store_path)
    callback = TrainerCallback(store, metric="eval_loss")

    rng = np.random.default_rng(0)
    model = {"layer.0.weight": rng.standard_normal((256, 256)).astype(np.float32),
             "layer.0.bias": np.zeros(256, np.float32)}
    target = rng.standard_normal((256, 256)).astype(np.float32)
    for step in range(1, 501):
        grad = model["layer.0.weight"] - target  # "loss.backward()"
        model["layer.0.weight"] -= 0.002 * grad  # "optimizer.step()"
        if step % 100 == 0:
            eval_loss = float(np.mean((model["layer.0.weight"] - target) ** 2))
            ckpt = os.path.join(workdir, f"checkpoint-{step}")
            os.makedirs(ckpt, exist_ok=True)
            save_file(model, os.path.join(ckpt, "model.safetensors"), metadata={"format": "np"})
            v = callback.pack_checkpoint(ckpt, step, {"eval_loss": eval_loss})
            print(f"step {step}: eval_loss {eval_loss:.4f} -> version {v.id[:8]}, stored {v.stored_bytes} bytes")

    # Evaluation: one tensor of the best version, reading only its blocks.
    with store.open("best") as f:
        w = f.get_tensor("layer.0.weight")
        print(f"best: {f.id[:8]} layer.0.weight {w.shape} mean {w.mean():.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tdelta-example")
