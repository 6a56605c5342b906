"""`python -m lookalike.cli`."""

from . import main

main()
