"""How the cost grows: synthetic data at scale and a benchmark of one point per process
(`python -m helpers.studies.scale SUBCOMMAND`; docs/scale.md reads what it records).

- `plans`: one configuration (`Point`: shape, loss, negatives, maxlen, processes, threads) and the plans of them;
- `measure`: one point in this process: timed training batches (through a `RecordingSampler` that keeps each
  batch's lengths) or a timed full-ranking evaluation, with the process's peak memory (under torchrun, per rank);
- `memory`: full CE's memory, predicted from the same point's BCE peak, and the points skipped for it;
- `runner`: `bench`, every point of a plan in fresh processes, into one JSON file rewritten after each point;
- `accept`: a whole command's wall time, peak memory and printed result;
- `report`: the Markdown tables and the figure;
- `cli`: the subcommands `make` (a synthetic `user item` file, `helpers.studies.synthetic`), `point`, `bench`,
  `accept`, `markdown` and `figure`.

It is a benchmark, never a test: timings are noisy. `scripts/scale.sh` runs what it records; the ML-1M loss
comparison is its own study (`helpers.studies.loss_compare`).
"""
