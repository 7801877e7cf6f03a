"""mixweave.trainer: a PyTorch trainer that reads mixture.json and the pack directly.

Modules: ``plan`` (window targets per source from the mixture and the pack; numpy only, also used
by the exporters), ``sampler`` (deterministic, resumable, rank-sharded order), ``dataset``
(windows in memory + batch loader), ``model`` (compact GPT sized by ``depth``), ``train`` (the
loop: ``train(pack, mixture, out, ...)``), ``evaluate`` (loss per source and per benchmark),
``ablation`` (per-source ablations -> utility table), ``sample_data`` (small real inputs for
tests and benchmarks), ``cli`` (``train_command``). Importing this package loads nothing heavy.
"""
