"""Speed targets of the issue "the fastest correct CPU path for each machine", measured side by
side with a baseline in the same run: `make bench` (all, writes results/benchmarks.md) or
`python -m benchmarks.bench_train` / `bench_infer` / `bench_data` / `bench_prepare` alone."""
