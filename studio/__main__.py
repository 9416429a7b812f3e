import sys

from studio.main import main

sys.exit(main())
