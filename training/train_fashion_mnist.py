"""Train a binary CNN (or its float twin) on Fashion-MNIST and export it to the model store.

The binary network keeps the first convolution and the classifier in float; every other
convolution is a :class:`service.kernel.BinaryConv2d` (sign activations and weights, trained
through the project's straight-through autograd Function) followed by BatchNorm, with a
Bi-Real-style real-valued shortcut around it and a PReLU after the add.

    .venv/bin/python -m training.train_fashion_mnist                 # binary, exports model_store/fashion-mnist-bnn
    .venv/bin/python -m training.train_fashion_mnist --float --no-export   # float twin, for comparison

Data: the Debian package ``dataset-fashion-mnist`` (IDX gzip files in /usr/share/datasets/fashion-mnist/),
or ``--data DIR`` / ``$FASHION_MNIST_DIR``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from service.kernel import BinaryConv2d, set_num_threads

DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # training-set pixel statistics (after /255)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# ---- data --------------------------------------------------------------------------------


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("FASHION_MNIST_DIR") or DEFAULT_DATA)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: expected {math.prod(shape)} values for shape {shape}, found {data.size}")
    return data.reshape(shape)


def load_split(split: str, directory: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 28, 28] and int64 labels [N] for 'train' or 'test'."""
    d = data_dir(directory)
    images, labels = (_read_idx(d / name) for name in FILES[split])
    if len(images) != len(labels):
        raise ValueError(f"{d}: {len(images)} images but {len(labels)} labels in the {split} split")
    return images, labels.astype(np.int64)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalised float32 [N, 1, 28, 28] (exactly what the model's preprocess does)."""
    return ((torch.from_numpy(images).float() / 255.0 - MEAN) / STD).unsqueeze(1)


# ---- model -------------------------------------------------------------------------------


class Block(nn.Module):
    """conv3x3 -> BN, plus a shortcut (identity, or 1x1 float conv + BN when channels change), then PReLU."""

    def __init__(self, cin: int, cout: int, binary: bool) -> None:
        super().__init__()
        if binary:
            self.conv = BinaryConv2d(cin, cout, 3, padding=1)
        else:
            self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.PReLU(cout, init=0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class FashionNet(nn.Module):
    """28x28x1 -> float conv 1->w -> [binary w->w, w->2w] @14x14 -> [2w->2w, 2w->4w] @7x7 -> avgpool -> linear."""

    def __init__(self, binary: bool = True, width: int = 32) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.PReLU(w))
        self.pool1 = nn.MaxPool2d(2)
        self.block1 = Block(w, w, binary)
        self.block2 = Block(w, 2 * w, binary)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = Block(2 * w, 2 * w, binary)
        self.block4 = Block(2 * w, 4 * w, binary)
        self.pool3 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(4 * w * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.stem(x))
        x = self.block2(self.block1(x))
        x = self.pool2(x)
        x = self.block4(self.block3(x))
        x = self.flatten(self.pool3(x))
        return self.fc(self.dropout(x))


# ---- training ----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def augment(xb: torch.Tensor, gen: torch.Generator, shift: int = 0) -> torch.Tensor:
    """Random horizontal flips, and shifts of up to ``shift`` pixels (padding with the background value)."""
    n = xb.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
    if shift:
        padded = F.pad(xb, (shift,) * 4, value=(0.0 - MEAN) / STD)
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()  # one shift per batch
        xb = padded[:, :, dy : dy + 28, dx : dx + 28]
    return xb


def train(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    from tqdm import tqdm

    train_x, train_y = load_split("train", args.data)
    test_x, test_y = load_split("test", args.data)
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]
    xtr, ytr = to_tensor(train_x), torch.from_numpy(train_y)
    xte, yte = to_tensor(test_x), torch.from_numpy(test_y)

    model = FashionNet(binary=not args.float, width=args.width)
    if args.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(args.init))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    kind = "float" if args.float else "bnn"
    log = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total_loss, seen, correct = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{kind} epoch {epoch}/{args.epochs}", leave=False, mininterval=2.0)
        for step in bar:
            idx = perm[step * args.batch : (step + 1) * args.batch]
            xb, yb = augment(xtr[idx], gen, args.shift), ytr[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        bar.close()
        test_acc = evaluate(model, xte, yte)
        entry = {"epoch": epoch, "loss": round(total_loss / seen, 4), "train_acc": round(correct / seen, 4),
                 "test_acc": round(test_acc, 4), "lr": round(sched.get_last_lr()[0], 6),
                 "elapsed_s": round(time.perf_counter() - start, 1)}
        log.append(entry)
        print(json.dumps(entry), flush=True)
    elapsed = time.perf_counter() - start
    result = {"kind": kind, "test_acc": log[-1]["test_acc"], "train_time_s": round(elapsed, 1), "epochs": args.epochs,
              "seed": args.seed, "batch": args.batch, "lr": args.lr, "width": args.width, "threads": args.threads,
              "params": sum(p.numel() for p in model.parameters()), "log": log}

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(runs / f"{kind}.safetensors"))
    (runs / f"{kind}.json").write_text(json.dumps(result, indent=2) + "\n")

    if not args.float and not args.no_export:
        result["export"] = export(model, args.export_dir, xte, yte)
    print(json.dumps({k: v for k, v in result.items() if k != "log"}), flush=True)
    return result


def input_spec() -> dict:
    return {"channels": 1, "height": 28, "width": 28, "resize": "stretch", "mean": [MEAN], "std": [STD], "invert": False}


def export(model: nn.Module, folder: str, xte: torch.Tensor, yte: torch.Tensor) -> dict:
    """Write the packed model and check the loaded copy's accuracy on the test set."""
    from service.export import export_model
    from service.model import ModelStore

    model.eval()
    export_model(model, folder, name=Path(folder).name, version="1.0.0", input_spec=input_spec(), labels=LABELS,
                 description="Fashion-MNIST binary CNN: float 3x3 stem and classifier, four binary 3x3 convolutions "
                             "with BatchNorm, real-valued shortcuts and PReLU (training/train_fashion_mnist.py)")
    store = ModelStore.load(Path(folder).parent)
    loaded = store.models[Path(folder).name]
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xte), 500):
            correct += (loaded.predict(xte[i : i + 500]).argmax(1) == yte[i : i + 500]).sum().item()
    summary = loaded.summary()
    info = {"folder": folder, "packed_test_acc": correct / len(xte), "sizes": summary["sizes"]}
    print(json.dumps(info), flush=True)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--float", action="store_true", help="train the float twin (nn.Conv2d instead of BinaryConv2d)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--shift", type=int, default=0, help="random shift augmentation, pixels")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0, help="use only the first N training images (smoke tests)")
    p.add_argument("--data", default=None, help=f"IDX directory (default $FASHION_MNIST_DIR or {DEFAULT_DATA})")
    p.add_argument("--runs", default="training/runs", help="checkpoints and logs (safetensors + json)")
    p.add_argument("--export-dir", default="model_store/fashion-mnist-bnn")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--init", default=None, help="start from this safetensors state_dict (fine-tuning)")
    p.add_argument("--from-checkpoint", default=None, help="skip training: export this safetensors state_dict")
    args = p.parse_args(argv)
    if args.from_checkpoint:
        from safetensors.torch import load_file

        torch.set_num_threads(args.threads)
        model = FashionNet(binary=True, width=args.width)
        model.load_state_dict(load_file(args.from_checkpoint))
        test_x, test_y = load_split("test", args.data)
        export(model, args.export_dir, to_tensor(test_x), torch.from_numpy(test_y))
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
