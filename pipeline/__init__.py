"""The pipeline core, used by every stage (``sim``, ``recon``, ``models``) and importing none:
configuration (schema, validation, per-job specs), the stages' command-line runner, HDF5
provenance and atomic writes, number checks, resource estimates and the Snakemake launcher."""
