"""``python -m producers.cli``: the waveshield command line."""

from . import main

main(prog_name="waveshield")
