"""python -m gateway.pgwire --config FILE [--host H] [--port N]"""

import argparse
import sys

from gateway.pgwire.server import _handler, add_arguments

parser = argparse.ArgumentParser(prog="python -m gateway.pgwire")
add_arguments(parser)
sys.exit(_handler(parser.parse_args()))
