"""Live reduction: `hklflow watch` follows an experiment while its scans are being collected
and runs the same workflow again whenever a block of complete frames has landed; `hklflow
status` shows where every scan stands.

How it fits Snakemake (which cannot follow growing inputs within one run): the watcher
writes ``live/scans.tsv``, the scans landed so far, each with the frames to reduce now
(``nframes``) and, while a scan is in progress, the frames it will have
(``planned_frames``); and ``live/landed/S/T/E.json`` per scan in progress, the input of its
ingest job in place of raw files that change with every frame.  It then runs the workflow
with ``--configfile live/config.yaml`` (which names that table), so every preview is made
by the batch rules, and a completed scan's row is exactly the batch table's: its final
results are the batch results.

Modules: ``state`` (what the watcher knows, kept across restarts), ``table`` (the live
scans table and the landed markers), ``watch`` (the loop and the command), ``status``
(the screen and results/status.html).
"""
