"""The benchmark suite's parts: `harness` (sizes, the shared data, timing
and profiler traces), `memory` (peak memory of a program run) and `cases`
(the seven benchmarks). `e2s_tf.bench_lib` runs them and reports.
"""
