# tiny echo backend: returns the Cookie headers it got; sets cookies given via ?set=NAME=VALUE
import sys, socket, json
from http.server import HTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        body = json.dumps({"server": sys.argv[2], "cookie": self.headers.get_all("Cookie") or []}).encode()
        self.send_response(200)
        for v in q.get("set", []):
            self.send_header("Set-Cookie", v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(HTTPServer):
    pass
host, port = sys.argv[1], int(sys.argv[3])
if ":" in host:
    S.address_family = socket.AF_INET6
S((host, port), H).serve_forever()
