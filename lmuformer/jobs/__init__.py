"""Jobs: the workflows that load a checkpoint or a data set and call the stages (one per ``lmuf``
command that needs more than one stage); the CLI is a thin layer over them.
"""
