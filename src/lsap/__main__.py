import sys

from lsap.cli import main

sys.exit(main())
