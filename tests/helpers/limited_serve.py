"""`python -m tests.helpers.limited_serve`: the service's own entry point, in a process that
may open at most DESCRIPTOR_LIMIT files, so that running out of them takes a few hundred
connections instead of tens of thousands."""

import resource

from src.serve import main

DESCRIPTOR_LIMIT = 512

if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))
    main()
