#!/usr/bin/env python3
"""Pod startup through the API: create → Running seen by a watcher, for one pod and for a
burst of N, beside `h8s run` of the same image. Usage:
  pod_startup.py KUBECONFIG NODE H8S_BIN [BURST] [SINGLES]
The cluster must have a node agent on NODE with busybox in its image store. SINGLES (default
3) pods are started one at a time before the burst."""
import json, os, subprocess, sys, threading, time

kc, node, h8s = sys.argv[1], sys.argv[2], sys.argv[3]
burst = int(sys.argv[4]) if len(sys.argv) > 4 else 20
singles = int(sys.argv[5]) if len(sys.argv) > 5 else 3
K = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
ns = f"bench-{os.getpid()}"

def kubectl(*a, stdin=None):
    return subprocess.run([K, "--kubeconfig", kc, *a], input=stdin, capture_output=True, text=True, check=True).stdout

running = {}
def watch():
    p = subprocess.Popen([K, "--kubeconfig", kc, "-n", ns, "get", "pods", "--watch", "-o", "json"],
                         stdout=subprocess.PIPE, text=True)
    buf = ""
    depth = 0
    for line in p.stdout:
        buf += line
        depth += line.count("{") - line.count("}")
        if depth == 0 and buf.strip():
            o = json.loads(buf); buf = ""
            n = o["metadata"]["name"]
            if o.get("status", {}).get("phase") == "Running" and n not in running:
                running[n] = time.monotonic()

def pod(name):
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
---
"""

def run_burst(prefix, n):
    created = {}
    doc = "".join(pod(f"{prefix}-{i}") for i in range(n))
    t0 = time.monotonic()
    kubectl("-n", ns, "apply", "-f", "-", stdin=doc)
    for i in range(n):
        created[f"{prefix}-{i}"] = t0
    deadline = time.monotonic() + 600
    while len([k for k in created if k in running]) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    lat = sorted(running[k] - created[k] for k in created if k in running)
    kubectl("-n", ns, "delete", "pod", "--all", "--wait=true")
    return lat

def q(lat, p):
    return lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]

kubectl("create", "namespace", ns)
threading.Thread(target=watch, daemon=True).start()
time.sleep(1)
single = [run_burst(f"one{i}", 1)[0] for i in range(singles)]
b = run_burst("burst", burst)
runs = []
for _ in range(3):
    t = time.monotonic()
    subprocess.run([h8s, "run", "--rm", "busybox", "--", "true"], capture_output=True, check=True)
    runs.append(time.monotonic() - t)
kubectl("delete", "namespace", ns, "--wait=false")
print(json.dumps({
    "single_s": [round(x, 3) for x in single],
    "burst": burst, "burst_min_s": round(b[0], 3), "burst_median_s": round(q(b, 0.5), 3),
    "burst_p99_s": round(q(b, 0.99), 3), "burst_done": len(b),
    "h8s_run_s": [round(x, 2) for x in runs],
}))
