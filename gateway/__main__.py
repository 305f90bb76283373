"""python -m gateway: the same as the `yidi` command."""
from .cli import main

main()
