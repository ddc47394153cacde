"""Studies that drive the core, one module (or package) each:

- `transfer`: encoders pretrained on ML-1M, reused on Wiki1000;
- `pretrain`: notebook 02's pretraining plan;
- `short_histories`: which block form and dropouts suit short histories;
- `unknown_user`: how well a user without a known user vector is served;
- `candidates`: the best-run candidates of a GPU session and the quality target;
- `bench`: training and evaluation speed on ML-1M;
- `timed_run` and `agreement`: the record of a timed GPU run, and whether two runs agree;
- `large_catalogs`: peak memory of the large-catalogue paths;
- `scale`: how the cost grows with the data (a package: plans, measurement, benchmark, report);
- `loss_compare`: the ML-1M loss comparison;
- `serving`: what serving costs: ONNX against torch, request latency per engine, the batch job.

What their records share lives in `records` (memory, load, time stamps), their synthetic data in `synthetic`.
"""
