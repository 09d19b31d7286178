#!/usr/bin/env python3
"""Pod startup through the API: create → Running seen by a watcher, for pods one at a time
and for a burst of N, beside `h8s run` of the same image. Usage:
  pod_startup.py KUBECONFIG NODE H8S_BIN [BURST] [SINGLES] [MODES]
The cluster must have a node agent on NODE with busybox in its image store. SINGLES (default
3) pods are started one at a time, then BURST (default 20) at once, in each of MODES (a
comma-separated list, default `apply`):
  apply  `kubectl apply` of the pod(s) → the pod's first `Running` in a `kubectl get pods
         --watch` of the namespace (kubectl's own start-up, ~50 ms here, is in the figure);
  post   a direct HTTPS POST of the pod (connection opened beforehand) → its first `Running`
         in a watch of the namespace opened beforehand; timed from just before the POST.
  timeline  SINGLES pods by POST, one at a time: the median offset of every step the node
         agent logs for the pod (env SERVER_LOG: the server's log, h8s_agent at debug level)
         and of the pod VM's start timeline; no burst.
Then SINGLES `h8s run -d busybox -- sleep 3600` (the same image, same runtime state root as
the server's agent, so the same VM template): the CLI's wall time (it returns once the
container runs) and the pod's `ready` in its start timeline (`h8s ps --json`), each counted
from just before the CLI starts.
Prints one JSON object: for the first mode the legacy keys (`single_s`, `burst_*`), and per
mode `modes.<mode>` = {single_ms, burst_ms}; `h8s_run` = {wall_ms, ready_ms, accel}."""
import base64, http.client, json, os, re, ssl, subprocess, sys, tempfile, threading, time
from datetime import datetime

import yaml

kc, node, h8s = sys.argv[1], sys.argv[2], sys.argv[3]
burst = int(sys.argv[4]) if len(sys.argv) > 4 else 20
singles = int(sys.argv[5]) if len(sys.argv) > 5 else 3
modes = (sys.argv[6] if len(sys.argv) > 6 else "apply").split(",")
K = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
ns = f"bench-{os.getpid()}"


def kubectl(*a, stdin=None):
    return subprocess.run([K, "--kubeconfig", kc, *a], input=stdin, capture_output=True, text=True, check=True).stdout


def pod_obj(name):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}


# --- apply mode: kubectl, a kubectl watch of the namespace -------------------------------
running = {}


def kubectl_watch():
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


def wait_running(names, t0):
    deadline = time.monotonic() + 600
    while len([k for k in names if k in running]) < len(names) and time.monotonic() < deadline:
        time.sleep(0.005)
    return sorted((running[k] - t0) * 1000 for k in names if k in running)


def apply_run(prefix, n):
    names = [f"{prefix}-{i}" for i in range(n)]
    doc = "".join("---\n" + json.dumps(pod_obj(x)) + "\n" for x in names)
    t0 = time.monotonic()
    kubectl("-n", ns, "apply", "-f", "-", stdin=doc)
    return wait_running(names, t0)


# --- post mode: HTTPS straight to the API server -----------------------------------------
cfg = yaml.safe_load(open(kc))
cluster = cfg["clusters"][0]["cluster"]; user = cfg["users"][0]["user"]
host = cluster["server"].split("//")[1]
ctx = ssl.create_default_context()
tmp = tempfile.mkdtemp()


def tmpfile(n, b64):
    p = os.path.join(tmp, n); open(p, "wb").write(base64.b64decode(b64)); return p


ctx.load_verify_locations(tmpfile("ca", cluster["certificate-authority-data"]))
if "client-certificate-data" in user:
    ctx.load_cert_chain(tmpfile("crt", user["client-certificate-data"]), tmpfile("key", user["client-key-data"]))
hdr = {"Content-Type": "application/json"}
if "token" in user:
    hdr["Authorization"] = "Bearer " + user["token"]


def conn():
    c = http.client.HTTPSConnection(host, context=ctx)
    c.connect()
    return c


def post_run(prefix, n):
    """POSTs n pods at once (one pre-opened connection each); their Running times (ms) from
    just before the POSTs, seen by one watch of the namespace opened beforehand."""
    names = [f"{prefix}-{i}" for i in range(n)]
    seen = {}
    wc = conn()
    wc.request("GET", f"/api/v1/namespaces/{ns}/pods?watch=1&allowWatchBookmarks=false", headers=hdr)
    wr = wc.getresponse()

    def watch():
        while len(seen) < n:
            line = wr.readline()
            if not line:
                return
            o = json.loads(line)["object"]
            nm = o["metadata"]["name"]
            if nm in names and nm not in seen and o.get("status", {}).get("phase") == "Running":
                seen[nm] = time.monotonic()
    wt = threading.Thread(target=watch, daemon=True); wt.start()
    conns = [conn() for _ in names]
    bodies = [json.dumps(pod_obj(x)) for x in names]
    go = threading.Event()

    def create(c, body):
        go.wait()
        c.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body, headers=hdr)
        r = c.getresponse(); r.read()
        assert r.status == 201, (r.status, body)
    ts = [threading.Thread(target=create, args=(c, b)) for c, b in zip(conns, bodies)]
    for t in ts: t.start()
    t0 = time.monotonic()
    go.set()
    for t in ts: t.join()
    wt.join(600)
    for c in conns: c.close()
    wc.close()
    return sorted((seen[k] - t0) * 1000 for k in names if k in seen)


def boot_of(pod):
    """How pod `pod`'s VM started (`h8s ps --json` `boot`: template, warm clone, cold …)."""
    ps = json.loads(subprocess.run([h8s, "ps", "--json"], capture_output=True, text=True, check=True).stdout)
    me = next((p for p in ps if p.get("config", {}).get("labels", {}).get("io.kubernetes.pod.name") == pod), {})
    return me.get("boot") or "?"


def delete_all():
    kubectl("-n", ns, "delete", "pod", "--all", "--wait=true")


def q(v, p):
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def timeline(n, log):
    """n pods, one at a time, by POST: where each one's time went, from just before the POST
    (wall clock): the node agent's log lines of the pod (`log`, at debug level for h8s_agent)
    and the pod VM's start timeline (`h8s ps --json`). Per step, the median offset (ms)."""
    steps, pods = {}, []
    for i in range(n):
        name = f"tl{i}"
        t0w = time.time()
        running = post_run(name, 1)
        pod = f"{ns}/{name}-0"
        ps = json.loads(subprocess.run([h8s, "ps", "--json"], capture_output=True, text=True, check=True).stdout)
        sb = next((p for p in ps if p.get("config", {}).get("labels", {}).get("io.kubernetes.pod.name") == f"{name}-0"), {})
        marks = [(m["phase"], m["at_us"] / 1e6) for m in sb.get("start_timeline", [])]
        for line in open(log, errors="replace"):
            if pod + " " not in line and pod + "}" not in line:
                continue
            plain = re.sub(r"\[[0-9;]*m", "", "".join(ch for ch in line if ch.isprintable()))
            ts = plain.split(" ")[0]
            m = re.search(r"(\w+(?:::\w+)+): (.*)$", plain)
            if not m:
                continue
            msg = re.sub(r" \w+=\S+", "", m.group(2)).strip()
            try:
                at = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            marks.append(("agent: " + msg, at))
        seen, mine = set(), []
        for ph, at in sorted(marks, key=lambda m: m[1]):
            if ph in seen:
                continue
            seen.add(ph)
            steps.setdefault(ph, []).append((at - t0w) * 1000)
            mine.append([ph, round((at - t0w) * 1000, 1)])
        pods.append({"running_ms": round(running[0], 1) if running else None, "steps": mine})
        delete_all()
        time.sleep(0.5)
    rows = sorted(((q(sorted(v), 0.5), ph, len(v)) for ph, v in steps.items()))
    return [{"step": ph, "median_ms": round(m, 1), "n": k} for m, ph, k in rows], pods


kubectl("create", "namespace", ns)
threading.Thread(target=kubectl_watch, daemon=True).start()
time.sleep(1)
out = {"modes": {}}
for mode in modes:
    if mode == "timeline":
        out["timeline"], out["timeline_pods"] = timeline(singles, os.environ["SERVER_LOG"])
        continue
    run = apply_run if mode == "apply" else post_run
    single, boots = [], []
    for i in range(singles):
        single += run(f"{mode}{i}", 1)
        boots.append(boot_of(f"{mode}{i}-0"))
        delete_all()
        time.sleep(0.5)
    b = run(f"{mode}-burst", burst)
    delete_all()
    out["modes"][mode] = {"single_ms": [round(x, 1) for x in single], "burst_ms": [round(x, 1) for x in b],
                          "single_boot": boots}
    if "single_s" not in out:
        out.update({"single_s": [round(x / 1000, 3) for x in single], "burst": burst,
                    "burst_min_s": round(b[0] / 1000, 3), "burst_median_s": round(q(b, 0.5) / 1000, 3),
                    "burst_p99_s": round(q(b, 0.99) / 1000, 3), "burst_done": len(b)})
wall, ready, accel = [], [], None
for i in range(singles):
    name = f"{ns}-run-{i}"
    t = time.time()
    subprocess.run([h8s, "run", "-d", "--name", name, "busybox", "--", "sleep", "3600"], capture_output=True, check=True)
    wall.append((time.time() - t) * 1000)
    ps = json.loads(subprocess.run([h8s, "ps", "--json"], capture_output=True, text=True, check=True).stdout)
    me = next((p for p in ps if name in (p.get("id"), p.get("config", {}).get("name"))), {})
    tl = me.get("start_timeline", [])
    accel = me.get("accel") or accel
    r = [m["at_us"] for m in tl if m["phase"] == "ready"]
    if r:
        ready.append(r[0] / 1000 - t * 1000)
    subprocess.run([h8s, "rm", "-f", name], capture_output=True)
out["h8s_run"] = {"wall_ms": [round(x, 1) for x in wall], "ready_ms": [round(x, 1) for x in ready], "accel": accel}
kubectl("delete", "namespace", ns, "--wait=false")
print(json.dumps(out))
