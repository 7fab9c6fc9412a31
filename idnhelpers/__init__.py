"""idnhelpers: instance-dependent label noise (IDN) research tools, after Chen et al., AAAI 2021.

Where each part of the paper lives:

- ``stats``        Section 2, Theorem 1 (CCN hypothesis test); transition matrices; Eq. 9-10
- ``noise``        Section 3.1: Algorithm 1's selection (Eq. 3); exact-rate CCN (Definition 1);
                   Xia et al.'s and PMD noise (the label maths)
- ``families``     the registry of noise families and published label sets (``FAMILIES``,
                   ``register_family``, ``noisy_labels``)
- ``published``    published label sets (this paper's IDN, CAL's IDN, CIFAR-N) and the CSV format
- ``sample``       the rows of one experiment (training, noisy validation, test), one value
- ``experiments``  Algorithm 1 end to end, any family's labels for a sample (``family_labels``),
                   Theorem 1's CCN experiment, what the chapters record of memorisation
- ``labels``       the ``idn-labels`` command: label files with a checksummed manifest
- ``csr``          Section 3.2, Eq. 4: critical sample ratio (Langevin adversarial sample search)
- ``methods``      Section 4: SEAL (Algorithm 2) and the baselines of Tables 1-3, a registry;
                   beyond the paper, ELR, PLC, DivideMix, ELR+, SOP and SOP+
- ``dividemix``, ``elr_plus``, ``sop``  beyond the paper: DivideMix (Li et al. 2020), ELR+ (Liu et al.
                   2020), SOP and SOP+ (Liu et al. 2022), each as its authors run it
- ``losses``       the objectives: cross-entropy / L_SEAL, Forward, GCE (and truncated), DAC, DMI,
                   ELR, PLC
- ``lossparts``    what the objectives share: cross-entropy per row over K stacked runs, the
                   index of a batch's rows into per-run state, the hash of an objective's code; what
                   the steps that run their own epochs share (forward pass, SGD step, mixup, ramps)
- ``noisy``        Eq. 10 beyond Fig. 6: noisy instances ranked (cleanlab's conventions), ``idn-noisy``
- ``paper``        Section 4.3: what each table runs, the per-data-set settings, the published numbers
- ``study``        an experiment's settings as one value (``Study``), checked once; settings files
- ``grid``         Tables 1-3 as grids of cells: cells, plan, executors (local, Slurm), ``idn-grid``
- ``results``      what a study's runs give (``Results``: tables, per-seed values, stages)
- ``clothing1m``   Table 3: Clothing1M's files and images streamed from disk
- ``datasets``     Appendix A's data sets and protocols, tabular feature sets, your own arrays
                   (``register_arrays``), a registry; ``protocol``: its dataclass
- ``models``       Appendix A's networks
- ``hardware``     the machine: precision ``auto``, fingerprint, matrix-product rate

How a run flows through the engine:

1. A ``runs.Run`` describes one training run as a value (data, targets, protocol, objective,
   step, seed, precision, what to record, starting weights); it is checked when built and
   ``run.key()`` hashes everything that changes its result.
2. ``engine.train(run)`` / ``engine.train_many(runs, backend=...)`` load each run's result from
   ``cache`` (safe format, checksummed, locked per key) or train it: ``training.fit`` is the one
   epoch loop, with a step from ``steps`` (one network, Co-teaching's peers; one run's modules or
   K runs stacked with ``torch.func``; a step may run its epoch itself, ``train_epoch``) and batches
   from ``sources`` (device-resident tensors) or ``clothing1m`` (images streamed from disk).
3. The result is a ``runs.RunResult`` (averaged softmax ``S``, history, snapshots, weights, ...);
   a method (``methods``) chains runs into stages and returns a ``runs.MethodResult``.

``checks`` holds the input checks every module shares and ``commands`` what the command lines
share; ``environment`` reads the ``IDNHELPERS_*`` variables; ``checkpoint`` lets a killed run resume
after its last epoch; ``progress`` draws bars on a terminal and writes lines to a log; ``optim``
holds the protocols' optimisers. The speed benchmark, the bf16 check and the GPU check are scripts
of the clone (``benchmarks/``). The book's own helpers (chapter set-up, figures, its profile folder)
are the separate package ``idnbook`` (``book/idnbook``), which this library never imports.
"""

__version__ = "0.4.0"
