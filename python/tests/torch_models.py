"""PyTorch models the evaluator tests scan (imported by evaluator processes)."""

import torch
from torch import nn


def _data(seed: int, n: int, shape, classes: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def cnn():
    """A small CNN with BatchNorm whose running statistics are not the defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )
    x, y = _data(1, 96, (1, 8, 8), 10)
    model.train()
    with torch.no_grad():
        model(x)  # BatchNorm statistics from the data
    batches = [(x[:48], y[:48]), (x[48:], y[48:])]
    print("cnn built (this line goes to stderr, not the protocol)")
    return model, nn.functional.cross_entropy, batches


def broken():
    raise RuntimeError("no such checkpoint: /nowhere/model.pt")


class _Stuck(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x):
        import time

        time.sleep(3600)
        return self.layer(x)


def hangs():
    """Builds at once, then never answers a tile."""
    return _Stuck(), nn.functional.mse_loss, [(torch.zeros(2, 3), torch.zeros(2, 3))]


def slow_cnn():
    """cnn() whose every forward pass takes 50 ms longer: the same values, slowly."""
    import time

    model, loss_fn, batches = cnn()
    model.register_forward_hook(lambda *_: time.sleep(0.05))
    return model, loss_fn, batches


def small():
    """A 1,402-parameter MLP with BatchNorm and tanh (a Hessian with curvature of both
    signs), whose dense Hessian the test computes itself; eight batches for shards."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 48), nn.BatchNorm1d(48), nn.Tanh(), nn.Linear(48, 10))
    x, y = _data(4, 160, (16,), 10)
    model.train()
    with torch.no_grad():
        model(x)
    return (
        model,
        nn.functional.cross_entropy,
        [(x[i : i + 20], y[i : i + 20]) for i in range(0, 160, 20)],
    )


class TinyLM(nn.Module):
    """A two-layer causal transformer language model (pre-norm, 4 heads)."""

    def __init__(self, vocab: int = 32, width: int = 32, context: int = 16) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.02 * torch.randn(context, width))
        layer = nn.TransformerEncoderLayer(
            width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        # Not persistent: a mask is not a weight, and its -inf entries are no direction.
        mask = nn.Transformer.generate_square_subsequent_mask(context)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos[:t]
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


def _lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def transformer():
    """TinyLM on sequences of a noisy counting pattern (next token = this one + 1)."""
    torch.manual_seed(6)
    model = TinyLM()
    g = torch.Generator().manual_seed(7)
    start = torch.randint(0, 32, (64, 1), generator=g)
    seq = (start + torch.arange(17)) % 32
    noise = torch.rand(seq.shape, generator=g) < 0.1
    seq = torch.where(noise, torch.randint(0, 32, seq.shape, generator=g), seq)
    x, y = seq[:, :-1], seq[:, 1:]
    return model, _lm_loss, [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
