"""``python -m toolkit`` runs the ``tritonrec`` command."""

from toolkit.cli.app import main

main()
