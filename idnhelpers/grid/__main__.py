import sys

from idnhelpers.grid.cli import main  # the importable module, so submitit pickles its functions by name

sys.exit(main())
