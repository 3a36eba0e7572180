"""The pipeline's stages as a library: each is ``run(cfg, accelerator, inputs, out_dir) -> summary``.

``cfg`` is the run's ``RunConfig``, ``inputs`` its ``rkd.stages.inputs.RunInputs`` (data, teacher,
cache, genotype, read lazily from the run directory), ``out_dir`` the stage's own directory, and
the returned dict goes into the stage's ``stage.json``. ``rkd.run.pipeline`` runs them in order and
skips finished ones; nothing here imports the pipeline or the command line.
"""
