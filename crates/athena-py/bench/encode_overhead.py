"""Times OLMoEModel.encode of 1 and of 64 short texts from Python, the same calls
crates/athena-py/examples/encode_timing.rs times from Rust (docs/BENCHMARKS.md).

    python crates/athena-py/bench/encode_overhead.py fixtures/models/base 200
"""

import statistics
import sys
import time

import athena


def texts(n):
    """The texts both timings encode: n short facts."""
    return [f"The user mentioned fact number {i} today." for i in range(n)]


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "fixtures/models/base"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    model = athena.OLMoEModel(athena.OLMoEConfig(model_dir, use_mlx=False))
    assert model.load()
    for n in (1, 64):
        batch = texts(n)
        for _ in range(5):
            model.encode(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            model.encode(batch)
            times.append((time.perf_counter_ns() - start) / 1e3)
        print(f"python encode n={n}: median {statistics.median(times):.1f} us over {repeats} calls")


if __name__ == "__main__":
    main()
