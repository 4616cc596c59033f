"""The usual per-point landscape loop, in numpy, for `cargo bench --bench landscape`.

For each grid point: set every parameter of a 784-256-256-10 ReLU MLP to
theta + a*d1 + b*d2, evaluate the mean cross-entropy over the 10,000 MNIST samples
(in batches of 128 as the reference tool's data loader does, and in one batch), restore
theta. Also times numpy's f32 GEMM of the first layer's shape. Prints one JSON line.

    python3 benches/landscape/numpy_baseline.py MNIST_IMAGES_IDX_GZ [POINTS]
"""

import gzip
import json
import sys
import time

import numpy as np


def mnist(path):
    b = gzip.open(path).read()
    n, rows, cols = (int.from_bytes(b[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(b[16:], dtype=np.uint8).reshape(n, rows * cols).astype(np.float32) / 255.0


def layers(rng, dims):
    out = []
    for i, o in zip(dims, dims[1:]):
        bound = np.sqrt(6.0 / i)
        out.append([rng.uniform(-bound, bound, (o, i)).astype(np.float32), np.zeros(o, np.float32)])
    return out


def loss(params, x, y, batch):
    total = 0.0
    for s in range(0, len(x), batch):
        h = x[s : s + batch]
        for k, (w, b) in enumerate(params):
            h = h @ w.T + b
            if k + 1 < len(params):
                h = np.maximum(h, 0.0)
        m = h.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(h - m).sum(axis=1))
        total += float((lse - h[np.arange(len(h)), y[s : s + batch]]).sum())
    return total / len(x)


def per_point(theta, d1, d2, points, x, y, batch):
    params = [[w.copy(), b.copy()] for w, b in theta]
    values = []
    for a, b_ in points:
        for p, t, u, v in zip(params, theta, d1, d2):
            for k in range(2):
                p[k][...] = t[k] + a * u[k] + b_ * v[k]
        values.append(loss(params, x, y, batch))
    for p, t in zip(params, theta):
        p[0][...], p[1][...] = t[0], t[1]
    return values


def main():
    x = mnist(sys.argv[1])
    points_n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    y = np.random.default_rng(0).integers(0, 10, len(x))
    rng = np.random.default_rng(1)
    dims = [784, 256, 256, 10]
    theta, d1, d2 = layers(rng, dims), layers(rng, dims), layers(rng, dims)
    points = [(i / points_n - 0.5, 0.25) for i in range(points_n)]
    out = {"numpy": np.__version__, "samples": len(x), "points": points_n}
    for batch in (128, len(x)):
        per_point(theta, d1, d2, points[:1], x, y, batch)  # warm-up
        t = time.perf_counter()
        per_point(theta, d1, d2, points, x, y, batch)
        out[f"points_per_s_batch_{batch}"] = points_n / (time.perf_counter() - t)
    w = theta[0][0].T.copy()
    x @ w
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        x @ w
    dt = (time.perf_counter() - t) / reps
    out["gemm_10000x784x256_gflops"] = 2 * len(x) * 784 * 256 / dt / 1e9
    print(json.dumps(out))


if __name__ == "__main__":
    main()
