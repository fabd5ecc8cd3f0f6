#!/usr/bin/env python3
"""MRPC fine-tuning curves of accel and PyTorch from real runs (docs/getting-started.md).

  python3 docs/diagrams/loss_curves.py extract accel43.log torch43.log ... > docs/data/mrpc_curves.json
  python3 docs/diagrams/loss_curves.py plot docs/data/mrpc_curves.json docs/diagrams/mrpc_curves.png

`extract` reads the logs of the quality runs of tests/quality/RESULTS.md: accel-finetune's
`epoch E step S/N loss L ...` progress lines (the loss of that one batch of 32, every 10th
step and the last) and its `epoch E: {...}` dev metrics; the PyTorch reference's JSON line
(dev metrics per epoch) and, where it printed them, its progress lines in the same format.
`plot` draws the training loss per step and the dev accuracy per epoch, accel and PyTorch
in one colour per seed. It draws what the logs hold and nothing else: a run without
progress lines has no loss curve.
"""
import json
import re
import sys

PROGRESS = re.compile(r"^epoch (\d+) step (\d+)/(\d+) loss ([0-9.]+)")
ACCEL_EPOCH = re.compile(r"^epoch (\d+): (\{.*\})$")


def extract(paths):
    runs = []
    for path in paths:
        run = {"log": path.rsplit("/", 1)[-1], "train_loss": [], "dev": []}
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if (m := PROGRESS.match(line)):
                    run["train_loss"].append([int(m.group(2)), float(m.group(4))])
                    run["steps"] = int(m.group(3))
                elif (m := ACCEL_EPOCH.match(line)):
                    metrics = json.loads(m.group(2))
                    run["framework"] = "accel"
                    run["dev"].append({"epoch": metrics["epoch"], "accuracy": metrics["accuracy"],
                                       "f1": metrics["f1"], "eval_loss": metrics["eval_loss"]})
                elif line.startswith('{"framework": "torch"'):
                    result = json.loads(line)
                    run["framework"], run["seed"] = "torch", result["seed"]
                    run["dev"] = [{"epoch": h["epoch"], "accuracy": h["accuracy"], "f1": h["f1"]}
                                  for h in result["history"]]
                elif (m := re.search(r"--seed (\d+)", line)) and "seed" not in run:
                    run["seed"] = int(m.group(1))  # /usr/bin/time's "Command being timed" line
        if "framework" not in run or "seed" not in run:
            sys.exit(f"{path}: neither accel-finetune's epoch lines nor the torch script's JSON line with a seed")
        runs.append(run)
    return {"source": "tests/quality/RESULTS.md: all-MiniLM-L6-v2 fine-tuned on MRPC, 3 epochs, batch 32, "
                      "lr 5e-5, one thread; accel-finetune and tests/quality/finetune_mrpc_torch.py with the "
                      "commands there, extracted by docs/diagrams/loss_curves.py extract",
            "runs": runs}


def plot(data_path, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(data_path) as f:
        runs = json.load(f)["runs"]
    seeds = sorted({r["seed"] for r in runs})
    colors = dict(zip(seeds, ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]))
    styles = {"accel": ("-", "o", "accel"), "torch": ("--", "s", "PyTorch")}
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for run in sorted(runs, key=lambda r: (r["seed"], r["framework"])):
        line, marker, label = styles[run["framework"]]
        color = colors[run["seed"]]
        if run["train_loss"]:
            steps, losses = zip(*run["train_loss"])
            loss_axis.plot(steps, losses, line, marker=marker, markersize=3, color=color,
                           label=f"{label}, seed {run['seed']}")
        epochs = [d["epoch"] for d in run["dev"]]
        accuracy_axis.plot(epochs, [100 * d["accuracy"] for d in run["dev"]], line, marker=marker,
                           color=color, label=f"{label}, seed {run['seed']}")
    steps_per_epoch = [r["steps"] // len(r["dev"]) for r in runs if r.get("steps")]
    for boundary in range(1, len(runs[0]["dev"])):
        if steps_per_epoch:
            loss_axis.axvline(boundary * steps_per_epoch[0], color="#bbbbbb", linewidth=0.8, zorder=0)
    without_loss = sorted({styles[r["framework"]][2] for r in runs if not r["train_loss"]})
    loss_title = "Training loss, every 10th step"
    if without_loss:
        loss_title += f" ({' and '.join(without_loss)}: the logs hold no per-step loss)"
    loss_axis.set(xlabel="optimizer step (epoch boundaries in grey)", ylabel="training loss of that batch",
                  title=loss_title)
    accuracy_axis.set(xlabel="epoch", ylabel="dev accuracy (%)", title="MRPC dev accuracy after each epoch",
                      xticks=sorted({d["epoch"] for r in runs for d in r["dev"]}))
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle("all-MiniLM-L6-v2 fine-tuned on MRPC: accel vs PyTorch + transformers (real runs)")
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "extract":
        json.dump(extract(sys.argv[2:]), sys.stdout, indent=1)
        print()
    elif len(sys.argv) == 4 and sys.argv[1] == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
