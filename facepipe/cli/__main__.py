"""`python -m facepipe.cli` (used by torchrun and the tests) runs the `facepipe` command."""
from facepipe.cli import main

main()
