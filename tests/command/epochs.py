#!/usr/bin/env python3
"""A resumable trial program for tests: trains "epochs" from a checkpoint in its trial
folder, prints one report per epoch, and keeps a ledger of its own (own.jsonl) that the
tests read: when each attempt started and ended, and whether it ever found another
attempt running in the same folder at the same time.

    epochs.py EPOCHS PER_ATTEMPT SECONDS_PER_EPOCH [X [DAEMON]]

PER_ATTEMPT > 0 makes every attempt stop with exit status 3 after that many epochs (a
preempted job); 0 runs to the end. X (default 0) shifts the loss: (X - 0.3)^2 + 1/epoch.
DAEMON = 1 leaves a daemon behind on every attempt (double fork, own session), whose
pid goes to daemons.txt.
"""
import json
import os
import sys
import time

epochs, per_attempt, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
x = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
daemon = len(sys.argv) > 5 and sys.argv[5] == "1"
d = os.environ["RIDGELINE_TRIAL_DIR"]
attempt = int(os.environ["RIDGELINE_ATTEMPT"])


def note(**kw):
    kw.update(attempt=attempt, pid=os.getpid(), t=time.time())
    with open(os.path.join(d, "own.jsonl"), "a") as f:
        f.write(json.dumps(kw) + "\n")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


active = os.path.join(d, "active")
if os.path.exists(active):
    with open(active) as f:
        other = int(f.read() or 0)
    # A pid left by an attempt that was killed is not an overlap.
    if other and alive(other):
        note(event="overlap", other=other)
with open(active, "w") as f:
    f.write(str(os.getpid()))
note(event="start")
if daemon:
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            with open(os.path.join(d, "daemons.txt"), "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(300)
        os._exit(0)
    os.waitpid(first, 0)

ckpt = os.path.join(d, "ckpt.json")
start = json.load(open(ckpt))["epoch"] if os.path.exists(ckpt) else 0
print(f"resuming from epoch {start} of {epochs}", file=sys.stderr)
ran = 0
for e in range(start + 1, epochs + 1):
    time.sleep(pause)
    loss = 1.0 / e if x == 0.0 else (x - 0.3) ** 2 + 1.0 / e
    print("ridgeline: " + json.dumps({"step": e, "val_loss": loss}), flush=True)
    note(event="epoch", epoch=e)
    with open(ckpt + ".tmp", "w") as f:
        json.dump({"epoch": e}, f)
    os.replace(ckpt + ".tmp", ckpt)
    ran += 1
    if per_attempt and ran >= per_attempt and e < epochs:
        note(event="preempted", epoch=e)
        os.remove(active)
        sys.exit(3)
note(event="end")
os.remove(active)
open(os.path.join(d, f"exited-{attempt}"), "w").close()
