"""Jobs: the workflows that load a checkpoint or a data set and call the stages (the layer above
``analysis``, below the CLI; one module per ``lmuf`` command that needs one):

- :mod:`lmuformer.jobs.export`: a checkpoint or a seeded preset -> NIR file (and its accuracies);
- :mod:`lmuformer.jobs.simulate`: a NIR file on a data set's first test samples or random input;
- :mod:`lmuformer.jobs.report`: the energy report of a run; the two LMU forms side by side;
- :mod:`lmuformer.jobs.stream`: accuracy against frames seen of a checkpoint or a NIR file;
- :mod:`lmuformer.jobs.map`: placement of a NIR file, with spike rates from a run;
- :mod:`lmuformer.jobs.finetune`: fine-tune a checkpoint through its export's integer arithmetic
  (the stage: :mod:`backends.finetune`).

``lmuf train`` calls :func:`lmuformer.training.train` (core) directly.
"""
