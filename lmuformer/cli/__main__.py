"""``python -m lmuformer.cli``: the ``lmuf`` command (what ``torchrun -m`` needs)."""

from lmuformer.cli import main

if __name__ == "__main__":
    main()
