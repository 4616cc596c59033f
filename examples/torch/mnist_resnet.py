"""A ResNet-style CNN with BatchNorm, trained with plain PyTorch on the shipped 10k MNIST
(8,000 images; 2,000 held out), then scanned by Ridgeline through a PyTorch evaluator:
the surface of the held-out loss around the trained weights, its Hessian spectrum and a
curvature map. Runs unchanged on a GPU worker (the evaluator moves model and data to the
slot's device).

    pip install ./python torch                  # once, from the repository root
    ridgeline run examples/torch/mnist-resnet-landscape.toml

The first evaluator to start trains the model (two epochs, ~12 s on two CPU cores) and
saves it as ``mnist_resnet.pt`` beside this file (``MNIST_RESNET_CHECKPOINT`` to put it
elsewhere); the others wait for it and load it.
"""

import fcntl
import gzip
import os

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")


def checkpoint_path() -> str:
    return os.environ.get("MNIST_RESNET_CHECKPOINT", os.path.join(HERE, "mnist_resnet.pt"))


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Block(16, 16, 1),
        Block(16, 32, 2),
        Block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def mnist():
    """(images [10000, 1, 28, 28] in [0, 1], labels [10000])."""
    with gzip.open(os.path.join(DATA, "mnist10k-images-idx3-ubyte.gz")) as f:
        images = f.read()
    with gzip.open(os.path.join(DATA, "mnist10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read()
    x = torch.frombuffer(bytearray(images[16:]), dtype=torch.uint8).view(-1, 1, 28, 28)
    y = torch.frombuffer(bytearray(labels[8:]), dtype=torch.uint8).long()
    return x.float() / 255.0, y


def train(path: str, epochs: int = 2) -> None:
    """SGD with momentum, the step decaying linearly (so that the last steps, and the
    BatchNorm statistics they leave, settle)."""
    x, y = mnist()
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    steps = epochs * 125
    decay = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.02, total_iters=steps)
    g = torch.Generator().manual_seed(1)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(8000, generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            decay.step()
    torch.save(net.state_dict(), path + ".tmp")
    os.replace(path + ".tmp", path)


def trained() -> nn.Module:
    """The trained model, training it first if no process has yet (one at a time)."""
    path = checkpoint_path()
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            print(f"training the ResNet once, to {path}")
            train(path)
    net = model()
    net.load_state_dict(torch.load(path, weights_only=True))
    return net


def build():
    """What the evaluator calls: the trained model, its loss, the held-out batches."""
    x, y = mnist()
    held_out = [(x[i : i + 500], y[i : i + 500]) for i in range(8000, 10000, 500)]
    return trained(), nn.functional.cross_entropy, held_out


if __name__ == "__main__":
    train(checkpoint_path())
    print("saved", checkpoint_path())
