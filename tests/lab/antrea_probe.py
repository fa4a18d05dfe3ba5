"""Probes run inside a lab Pod's network namespace (stdlib only), for the Antrea-native policy tests.

    ip netns exec NS python3 antrea_probe.py tcp IP:PORT ... [--timeout 1]
    ip netns exec NS python3 antrea_probe.py udp IP:PORT ... [--timeout 1]
    ip netns exec NS python3 antrea_probe.py udpserve PORT
    ip netns exec NS python3 antrea_probe.py stream IP:PORT --period 0.02 --duration 5

tcp / udp: every destination at once (one thread each); prints a JSON list of {"dst", "result", "ms"}:
tcp results "connected", "refused" (a RST came back), "timeout"; udp results "reply" (the echo server
answered), "refused" (an ICMP port unreachable came back), "timeout". udpserve: a UDP echo server.
stream: a new TCP connection every --period seconds (each given 0.5 s) until --duration; prints
{"attempts", "connected", "refused", "timeout", "results": [...]} (results as tcp's, in order).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time


def tcp(dst: str, timeout: float) -> dict[str, object]:
    ip, port = dst.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(timeout)
    t = time.monotonic()
    try:
        s.connect((ip, int(port)))
        res = "connected"
    except ConnectionRefusedError:
        res = "refused"
    except (socket.timeout, TimeoutError):
        res = "timeout"
    except OSError as e:
        res = f"error {e.errno}"
    finally:
        s.close()
    return {"dst": dst, "result": res, "ms": round((time.monotonic() - t) * 1000, 2)}


def udp(dst: str, timeout: float) -> dict[str, object]:
    ip, port = dst.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    t = time.monotonic()
    try:
        s.connect((ip, int(port)))
        s.send(b"antrea-probe")
        res = "reply" if s.recv(100) == b"antrea-probe" else "other"
    except ConnectionRefusedError:
        res = "refused"
    except (socket.timeout, TimeoutError):
        res = "timeout"
    except OSError as e:
        res = f"error {e.errno}"
    finally:
        s.close()
    return {"dst": dst, "result": res, "ms": round((time.monotonic() - t) * 1000, 2)}


def many(fn: object, dsts: list[str], timeout: float) -> list[dict[str, object]]:
    out: list[dict[str, object] | None] = [None] * len(dsts)

    def run(i: int) -> None:
        out[i] = fn(dsts[i], timeout)  # type: ignore[operator]

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(dsts))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [x for x in out if x is not None]


def udpserve(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)


def stream(dst: str, period: float, duration: float) -> dict[str, object]:
    results: list[dict[str, object]] = []
    lock = threading.Lock()
    threads = []
    end = time.monotonic() + duration
    nxt = time.monotonic()

    def one(i: int) -> None:
        r = tcp(dst, 0.5)
        r["i"] = i
        with lock:
            results.append(r)

    i = 0
    print("ready", flush=True)
    while time.monotonic() < end:
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        i += 1
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))
    for t in threads:
        t.join()
    results.sort(key=lambda r: int(r["i"]))  # type: ignore[call-overload]
    counts = {k: sum(1 for r in results if r["result"] == k) for k in ("connected", "refused", "timeout")}
    return {"attempts": len(results), **counts, "results": results}


def main() -> int:
    args = sys.argv[1:]
    timeout = 1.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    mode = args[0]
    if mode == "udpserve":
        udpserve(int(args[1]))
        return 0
    if mode == "stream":
        period = float(args[args.index("--period") + 1])
        duration = float(args[args.index("--duration") + 1])
        print(json.dumps(stream(args[1], period, duration)), flush=True)
        return 0
    fn = tcp if mode == "tcp" else udp
    print(json.dumps(many(fn, args[1:], timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
