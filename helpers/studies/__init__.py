"""Studies that drive the core: `transfer` (Wiki1000), `short_histories`, `pretrain` (notebook 02's
plan), `bench` (speed) and `timed_run` (the GPU speed record). They import the core and notebook support."""
