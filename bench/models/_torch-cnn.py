# Baseline for bench/models/models-cnn.ts: the same CNN, Adam, soft-label cross-entropy, one timed epoch.
import json, sys, time
import torch
import torch.nn as nn

rows, batch, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads > 0:
    torch.set_num_threads(threads)
torch.manual_seed(1)
model = nn.Sequential(
    nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 5 * 5, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.rand(rows, 1, 28, 28)
y = torch.nn.functional.one_hot(torch.randint(0, 10, (rows,)), 10).float()

def epoch(n):
    perm = torch.randperm(n)
    for s in range(0, n, batch):
        idx = perm[s:s + batch]
        opt.zero_grad()
        loss = -(y[idx] * torch.log_softmax(model(x[idx]), 1)).sum(1).mean()
        loss.backward()
        opt.step()

epoch(min(rows, 256))
t, c = time.perf_counter(), time.process_time()
epoch(rows)
sec, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"imagesPerSecond": rows / sec, "imagesPerCpuSecond": rows / cpu, "threads": torch.get_num_threads(), "version": torch.__version__}))
