#!/usr/bin/env python3
"""Reads the event files under DIR with TensorBoard's own EventAccumulator and prints every
scalar (tag, step, value) and text summary: proof that accel's hand-written event files load
in TensorBoard. Needs `python3 -m pip install tensorboard`; not part of the C++ test suite.

    ACCEL_KEEP_TRACKER_FILES=1 build/bin/test_trackers --gtest_filter='*TensorBoard*'
    python3 tests/accelerate/read_tensorboard_events.py /tmp/accel_trackers_XXXXXX
"""
import argparse
import pathlib
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=pathlib.Path, help="a run folder, or a folder of run folders")
    args = parser.parse_args()

    run_dirs = sorted({path.parent for path in args.dir.rglob("events.out.tfevents.*")})
    if not run_dirs:
        print(f"no events.out.tfevents.* files under {args.dir}", file=sys.stderr)
        return 1
    for run_dir in run_dirs:
        accumulator = EventAccumulator(str(run_dir))
        accumulator.Reload()
        tags = accumulator.Tags()
        print(f"run {run_dir}")
        for tag in tags["scalars"]:
            for event in accumulator.Scalars(tag):
                print(f"  scalar {tag} step {event.step} value {event.value:.6g}")
        for tag in tags["tensors"]:
            for event in accumulator.Tensors(tag):
                for text in event.tensor_proto.string_val:
                    print(f"  text {tag} step {event.step}:")
                    print("    " + text.decode().rstrip("\n").replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
