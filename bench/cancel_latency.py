#!/usr/bin/env python3
"""How long after a client gives up on a non-streaming request its generation
stops: the time from the client closing its connection to the worker's log
line "request_id=... finished: cancelled" (both clocks are this machine's).

Run against `tools/dev up` (its worker decodes at 50 tokens/s, a step every
20 ms, so a cancel is noticed at the next step):

    source .dev/env && bench/cancel_latency.py --log .dev/logs/inference-worker.log

Requests go one at a time, so the newest cancelled line is this request's.
"""
import argparse
import datetime
import json
import os
import re
import socket
import statistics
import time

LINE = re.compile(r"^(\S+Z) info service=inference-worker request_id=(\S+) finished: cancelled")


def last_cancel(log_path, after):
    """The timestamp of the newest cancellation logged after `after`."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        found = None
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            if t >= after - 0.001:
                found = t
        return found


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8080"))
    p.add_argument("--key", default=os.environ.get("SWITCHBOARD_API_KEY", ""))
    p.add_argument("--log", required=True, help="the inference worker's log file")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--hold_ms", type=int, default=150, help="how long the client waits before leaving")
    args = p.parse_args()
    host, port = args.url.split("//")[1].split(":")
    body = json.dumps({"model": "sim-small", "max_tokens": 4000,
                       "messages": [{"role": "user", "content": "a long answer nobody waits for"}]})
    request = (f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nx-api-key: {args.key}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}")
    delays = []
    for _ in range(args.trials):
        s = socket.create_connection((host, int(port)))
        s.sendall(request.encode())
        time.sleep(args.hold_ms / 1000)
        left = time.time()
        s.close()
        for _ in range(100):
            time.sleep(0.02)
            t = last_cancel(args.log, left)
            if t is not None:
                delays.append((t - left) * 1000)
                break
        else:
            print("no cancellation logged for one trial")
        time.sleep(0.2)
    delays.sort()
    print(json.dumps({"trials": args.trials, "cancelled": len(delays),
                      "p50_ms": round(statistics.median(delays), 1) if delays else None,
                      "max_ms": round(delays[-1], 1) if delays else None}))


if __name__ == "__main__":
    main()
