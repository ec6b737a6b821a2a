import sys

from lsap.cli.main import main

sys.exit(main())
