"""`python -m helpers.studies.scale`: see `helpers.studies.scale.cli`."""

from helpers.studies.scale.cli import main
from helpers.utils import run_cli

if __name__ == "__main__":
    run_cli(main)
