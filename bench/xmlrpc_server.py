"""The standard library's XML-RPC server doing the divide, for the benchmark.

    python bench/xmlrpc_server.py [--port 0] [--http11]

Prints ``Serving xmlrpc on http://HOST:PORT/ (Ctrl-C to stop)`` once it
listens, like ``python -m cosmic serve``. ``SimpleXMLRPCServer`` with
``socketserver.ThreadingMixIn``, stock settings (HTTP/1.0: one request per
connection, one log line per request on stderr). ``--http11`` switches the
handler to HTTP/1.1 so connections are kept alive (a context row only).
"""

import argparse
import signal
import socketserver
import sys
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer


class ThreadedXMLRPCServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    request_queue_size = 128


class KeepAliveHandler(SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"


def divide(numerator, denominator):
    return numerator // denominator


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--http11", action="store_true")
    args = parser.parse_args(argv)
    handler = KeepAliveHandler if args.http11 else SimpleXMLRPCRequestHandler
    server = ThreadedXMLRPCServer(("127.0.0.1", args.port),
                                  requestHandler=handler, allow_none=False)
    server.register_function(divide, "divide")

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print("Serving xmlrpc on http://%s:%d/ (Ctrl-C to stop)" % (host, port),
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
