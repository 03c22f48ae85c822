"""Entry point: python -m competition --help"""

from competition.cli import main

main()
