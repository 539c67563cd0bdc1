"""The nemesis bench: random, seeded faults while drains and returns run, with the
invariants checked from outside evac (libvirt on every host, the process table, the lab
power switch's log).

    .venv/bin/python -m bench.nemesis [--minutes N] [--seed S] [--guests N]

Modules: ``faults`` (the kinds and the seeded schedule), ``inject`` (doing and undoing
them on a lab), ``workload`` (drains and returns through the CLI and the REST API),
``sampler`` (what virsh sees, every 0.25 s), ``invariants`` (pure checks on the
samples), ``report`` (the table and the JSON), ``run`` (one run, start to settle).
"""
