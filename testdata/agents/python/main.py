"""A test agent that follows the AgentCore HTTP contract with Python's standard
library only. JSON bodies carry an "op" that makes it probe its sandbox;
application/octet-stream bodies are sent back as they came."""

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
state = {"count": 0, "busy_until": 0.0}
HEADERS = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, a reply written as headers then body waits for a
    # delayed ACK on keep-alive connections: 40 ms per call.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        sys.stderr.write("agent: " + (fmt % args) + "\n")

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/ping":
            return self.send_json(404, {"error": "not found"})
        if os.environ.get("AGENT_NEVER_HEALTHY"):
            return self.send_json(503, {"status": "Unhealthy"})
        busy = time.time() < state["busy_until"]
        self.send_json(200, {"status": "HealthyBusy" if busy else "Healthy",
                             "time_of_last_update": int(time.time())})

    def do_POST(self):
        if self.path != "/invocations":
            return self.send_json(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Content-Type") == "application/octet-stream":
            return self.mirror(length)
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.send_json(400, {"error": "Invalid JSON"})
        op = req.get("op", "echo")
        with lock:
            state["count"] += 1
            count = state["count"]
        if op == "stream":
            return self.stream(int(req.get("n", 3)), float(req.get("delay", 0.1)))
        global HEADERS
        HEADERS = dict(self.headers)
        try:
            result = run(op, req)
        except Exception as e:  # report the failure of a probe as data
            result = {"error": type(e).__name__ + ": " + str(e)}
        result.update({"count": count, "session": self.headers.get(SESSION_HEADER),
                       "requestId": self.headers.get("X-Amzn-Bedrock-AgentCore-Runtime-Request-Id"),
                       "pid": os.getpid()})
        self.send_json(200, result)

    def mirror(self, length):
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, n, delay):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(n):
            frame = ("data: " + json.dumps({"i": i, "t": time.time()}) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
            time.sleep(delay)
        self.wfile.write(b"0\r\n\r\n")


def run(op, req):
    if op == "echo":
        print("echo:", req.get("prompt", ""), flush=True)
        return {"echo": req.get("prompt", ""), "env": {k: os.environ.get(k) for k in req.get("env", [])}}
    if op == "headers":
        return {"headers": {k.lower(): v for k, v in HEADERS.items()}}
    if op == "write":
        with open(req["path"], "w") as f:
            f.write(req["data"])
        return {"ok": True}
    if op == "read":
        with open(req["path"]) as f:
            return {"data": f.read()}
    if op == "ps":
        return {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
    if op == "connect":
        s = socket.create_connection((req["host"], int(req["port"])), timeout=1)
        s.close()
        return {"ok": True}
    if op == "busy":
        state["busy_until"] = time.time() + float(req["seconds"])
        return {"ok": True}
    if op == "crash":
        sys.stderr.write("agent: crashing on request\n")
        sys.stderr.flush()
        os._exit(3)
    return {"error": "unknown op " + op}


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
