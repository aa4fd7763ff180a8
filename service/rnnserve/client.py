"""`rnnserve.client` is the client distribution's package, rnnserve_client, under the server's
name: the same objects. Importing it loads no server module (rnnserve/__init__.py imports
nothing), so a program that only calls a server pays for numpy, httpx and websockets alone."""

from rnnserve_client import *  # noqa: F403
from rnnserve_client import __all__  # noqa: F401
