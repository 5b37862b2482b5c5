#!/usr/bin/env python3
"""Offline checks of rendered kustomize output (deploy/kubernetes/check.sh runs this).

    validate.py [--kubernetes-version 1.32.0] [--alerts deploy/prometheus/alerts.yml]
                [--dump-configs DIR] NAME=RENDERED.yaml ...

For every rendered file (the output of `kubectl kustomize`):

1. every core resource against the Kubernetes JSON schemas of that version, strict (unknown
   fields are errors), with PyPI's kubernetes-validate; the Prometheus Operator's kinds
   (ServiceMonitor, PrometheusRule) are not in those schemas: they are skipped there, with a
   note, and checked for structure here (apiVersion, kind, metadata.name, spec; a PrometheusRule's
   groups have names and every rule has `alert` and `expr`);
2. the PrometheusRule's spec.groups equal deploy/prometheus/alerts.yml's groups (parsed);
3. the resources agree with each other: Services, the PodDisruptionBudget and the ServiceMonitor
   select pods or Services that exist, named target ports exist, the HPA's target exists and has
   CPU requests, referenced ConfigMaps exist, every namespaced object is in one namespace;
4. every pod meets the "restricted" Pod Security Standard's rules (non-root, no privilege
   escalation, ALL capabilities dropped, seccomp RuntimeDefault) plus this deployment's own
   (read-only root filesystem, requests and limits, imagePullPolicy IfNotPresent);
5. the gateway's config (the TOML in its ConfigMap) agrees with its Deployment: the listen ports
   are the container ports and not loopback, admin.token_env is set in the container, the
   models' repositories are mounted, the probes use the V2 health endpoints, [fleet].redis_url
   names a Service of the render (where Redis is part of it), and terminationGracePeriodSeconds
   exceeds the preStop sleep plus twice server.drain_timeout_ms.

--dump-configs DIR writes each render's gateway config to DIR/NAME.toml (check.sh then runs
`gateway check-config` on them when a gateway binary is at hand). Exit 1 on any problem.
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

try:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
except ImportError:  # pragma: no cover - check.sh installs it
    sys.exit("validate.py: needs kubernetes-validate (pip install kubernetes-validate); check.sh installs it")

CRD_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume"}
DEFAULT_DRAIN_MS = 30000  # server.drain_timeout_ms's default (gateway/src/config/REFERENCE.md)
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class Report:
    def __init__(self, target):
        self.target = target
        self.problems = []
        self.notes = []

    def problem(self, where, message):
        self.problems.append(f"{where}: {message}")

    def note(self, message):
        if message not in self.notes:
            self.notes.append(message)


def ident(doc):
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def selects(selector, labels):
    """A matchLabels-style selector (a plain dict, or {matchLabels, matchExpressions})."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        if selector.get("matchExpressions"):
            return False  # not used here; treat as unmatched so it gets looked at
        selector = selector.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def pod_templates(docs):
    for d in docs:
        if d.get("kind") in WORKLOAD_KINDS:
            tpl = (d.get("spec") or {}).get("template") or {}
            yield d, tpl


# ------------------------------------------------------------------------------ 1. the schemas
def check_schemas(docs, version, rep):
    for d in docs:
        kind = d.get("kind")
        if kind in CRD_KINDS:
            rep.note(f"{kind}: a Prometheus Operator CRD, not in Kubernetes' schemas: schema check "
                     "skipped, structure checked instead")
            check_crd_structure(d, rep)
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            rep.problem(ident(d), f"schema ({version}, strict): {path}: {e.message}")
        except SchemaNotFoundError as e:
            rep.problem(ident(d), e.message)


def check_crd_structure(d, rep):
    where = ident(d)
    kind = d.get("kind")
    if d.get("apiVersion") != CRD_KINDS[kind]:
        rep.problem(where, f"apiVersion {d.get('apiVersion')!r}, expected {CRD_KINDS[kind]!r}")
    if not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
        rep.problem(where, "no metadata.name")
    spec = d.get("spec")
    if not isinstance(spec, dict) or not spec:
        rep.problem(where, "no spec")
        return
    if kind == "PrometheusRule":
        groups = spec.get("groups")
        if not isinstance(groups, list) or not groups:
            rep.problem(where, "spec.groups is not a non-empty list")
            return
        names = [g.get("name") for g in groups if isinstance(g, dict)]
        if len(names) != len(set(names)) or not all(names):
            rep.problem(where, "group names missing or repeated")
        for gi, g in enumerate(groups):
            rules = g.get("rules") if isinstance(g, dict) else None
            if not isinstance(rules, list) or not rules:
                rep.problem(where, f"spec.groups[{gi}] has no rules")
                continue
            for ri, r in enumerate(rules):
                at = f"spec.groups[{gi}].rules[{ri}]"
                if not isinstance(r, dict):
                    rep.problem(where, f"{at} is not a mapping")
                    continue
                if not isinstance(r.get("alert"), str) or not r["alert"]:
                    rep.problem(where, f"{at} has no alert name")
                if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                    rep.problem(where, f"{at} ({r.get('alert')}) has no expr")
                if "for" in r and not DURATION.match(str(r["for"])):
                    rep.problem(where, f"{at} ({r.get('alert')}): for: {r['for']!r} is not a duration")
                for key in ("labels", "annotations"):
                    if key in r and not (isinstance(r[key], dict)
                                         and all(isinstance(v, str) for v in r[key].values())):
                        rep.problem(where, f"{at} ({r.get('alert')}): {key} must map names to strings")
    elif kind == "ServiceMonitor":
        if not isinstance(spec.get("selector"), dict):
            rep.problem(where, "no spec.selector")
        eps = spec.get("endpoints")
        if not isinstance(eps, list) or not eps:
            rep.problem(where, "spec.endpoints is not a non-empty list")
        else:
            for i, ep in enumerate(eps):
                if not isinstance(ep, dict) or not (ep.get("port") or ep.get("targetPort")):
                    rep.problem(where, f"spec.endpoints[{i}] names no port")
                elif "interval" in ep and not DURATION.match(str(ep["interval"])):
                    rep.problem(where, f"spec.endpoints[{i}].interval {ep['interval']!r} is not a duration")


# ------------------------------------------------------------------------ 2. rules == alerts.yml
def check_rules(docs, alerts_path, rep):
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        rep.problem("PrometheusRule", f"expected exactly one, found {len(rules)}")
        return
    want = yaml.safe_load(Path(alerts_path).read_text(encoding="utf-8"))["groups"]
    got = (rules[0].get("spec") or {}).get("groups")
    if got != want:
        got_names = {r.get("alert") for g in got or [] for r in g.get("rules", [])}
        want_names = {r.get("alert") for g in want for r in g.get("rules", [])}
        detail = []
        for g_want, g_got in zip(want, got or []):
            for r_want, r_got in zip(g_want.get("rules", []), (g_got or {}).get("rules", [])):
                if r_want != r_got:
                    keys = sorted(k for k in set(r_want) | set(r_got or {}) if (r_got or {}).get(k) != r_want.get(k))
                    detail.append(f"first difference: group {g_want.get('name')}, rule {r_want.get('alert')}, {keys}")
                    break
            if detail:
                break
        if want_names - got_names:
            detail.append(f"missing {sorted(want_names - got_names)}")
        if got_names - want_names:
            detail.append(f"extra {sorted(got_names - want_names)}")
        rep.problem(ident(rules[0]), f"spec.groups differ from {alerts_path} ({'; '.join(detail) or 'rule contents differ'})"
                    ": run deploy/kubernetes/make_prometheusrule.py")
    else:
        n = sum(len(g["rules"]) for g in want)
        rep.note(f"PrometheusRule: spec.groups equal {alerts_path}'s ({len(want)} groups, {n} rules)")


# ------------------------------------------------------------------- 3. resources agree with each other
def index(docs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), {})[(d.get("metadata") or {}).get("name")] = d
    return by_kind


def check_references(docs, by_kind, alerts_path, rep):
    templates = list(pod_templates(docs))

    namespaces = {(d.get("metadata") or {}).get("namespace") for d in docs if d.get("kind") not in CLUSTER_SCOPED}
    if len(namespaces) > 1:
        rep.problem("namespaces", f"namespaced objects are spread over {sorted(map(str, namespaces))}")
    declared = set(by_kind.get("Namespace", {}))
    for ns in namespaces - {None}:
        if declared and ns not in declared:
            rep.problem("namespaces", f"{ns} is used but the render's Namespace objects are {sorted(declared)}")

    for name, svc in by_kind.get("Service", {}).items():
        sel = (svc.get("spec") or {}).get("selector") or {}
        matched = [(w, t) for w, t in templates if selects(sel, (t.get("metadata") or {}).get("labels") or {})]
        if not matched:
            rep.problem(ident(svc), f"its selector {sel} matches no pod template")
            continue
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort", p.get("port"))
            for w, t in matched:
                ports = [cp for c in t["spec"].get("containers", []) for cp in c.get("ports", [])]
                if isinstance(tp, str) and tp not in {cp.get("name") for cp in ports}:
                    rep.problem(ident(svc), f"targetPort {tp!r} is no container port name of {ident(w)}")
                if isinstance(tp, int) and tp not in {cp.get("containerPort") for cp in ports}:
                    rep.problem(ident(svc), f"targetPort {tp} is no container port of {ident(w)}")

    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        sel = (pdb.get("spec") or {}).get("selector")
        if not any(selects(sel, (t.get("metadata") or {}).get("labels") or {}) for _, t in templates):
            rep.problem(ident(pdb), f"its selector {sel} matches no pod template")

    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        target = by_kind.get(ref.get("kind"), {}).get(ref.get("name"))
        if target is None:
            rep.problem(ident(hpa), f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the render")
            continue
        cpu_metric = any(m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"
                         for m in hpa["spec"].get("metrics", []))
        if cpu_metric:
            for c in target["spec"]["template"]["spec"].get("containers", []):
                if "cpu" not in ((c.get("resources") or {}).get("requests") or {}):
                    rep.problem(ident(hpa), f"scales on CPU utilisation but {ident(target)}'s container "
                                f"{c.get('name')} has no CPU request")
        replicas = (target.get("spec") or {}).get("replicas")
        lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas")
        if replicas is not None and not lo <= replicas <= hi:
            rep.problem(ident(hpa), f"{ident(target)} asks for {replicas} replicas, outside {lo}..{hi}")

    for sm in by_kind.get("ServiceMonitor", {}).values():
        sel = (sm.get("spec") or {}).get("selector") or {}
        svcs = [s for s in by_kind.get("Service", {}).values()
                if selects(sel, (s.get("metadata") or {}).get("labels") or {})]
        if not svcs:
            rep.problem(ident(sm), f"its selector {sel} matches no Service")
        # The alerts name the scrape job (GatewayDown: up{job="inference-gateway"}): every endpoint
        # must set that job label, or those alerts would never fire.
        jobs = set(re.findall(r'job="([^"]+)"', Path(alerts_path).read_text(encoding="utf-8")))
        for ep in (sm.get("spec") or {}).get("endpoints") or []:
            set_job = {r.get("replacement") for r in ep.get("relabelings") or []
                       if r.get("targetLabel") == "job" and r.get("action", "replace") == "replace"}
            if jobs and not jobs & set_job:
                rep.problem(ident(sm), f"endpoint {ep.get('port')!r} does not set job to {sorted(jobs)} "
                            f"(the job {alerts_path} selects): add a relabeling with targetLabel job")
            for s in svcs:
                if ep.get("port") and ep["port"] not in {p.get("name") for p in s["spec"].get("ports", [])}:
                    rep.problem(ident(sm), f"endpoint port {ep['port']!r} is not a port name of {ident(s)}")

    for w, t in templates:
        for v in t["spec"].get("volumes", []):
            cm = (v.get("configMap") or {}).get("name")
            if cm and cm not in by_kind.get("ConfigMap", {}):
                rep.problem(ident(w), f"volume {v.get('name')} names ConfigMap {cm}, which is not in the render")
        for c in t["spec"].get("containers", []) + t["spec"].get("initContainers", []):
            for e in c.get("env", []):
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
                if ref and ref.get("name") not in by_kind.get("Secret", {}):
                    rep.note(f"{ident(w)} reads Secret {ref['name']} (key {ref.get('key')}), which is not in "
                             "the render: created by hand (README.md)")


# ------------------------------------------------------------------------ 4. pod security
def check_pod_security(docs, rep):
    for w, t in pod_templates(docs):
        spec = t.get("spec") or {}
        where = ident(w)
        psc = spec.get("securityContext") or {}
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            rep.problem(where, "uses the host's network, PID or IPC namespace")
        for v in spec.get("volumes", []):
            if "hostPath" in v:
                rep.problem(where, f"volume {v.get('name')} is a hostPath")
        if psc.get("runAsUser") == 0:
            rep.problem(where, "pod runAsUser 0")
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            at = f"{where} container {c.get('name')}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                rep.problem(at, "runAsNonRoot is not true (pod or container)")
            if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
                rep.problem(at, "no non-zero runAsUser (pod or container): the images' USER is not relied on")
            if sc.get("allowPrivilegeEscalation") is not False:
                rep.problem(at, "allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                rep.problem(at, "privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                rep.problem(at, "capabilities.drop does not include ALL")
            if ((sc.get("capabilities") or {}).get("add")):
                rep.problem(at, f"adds capabilities {sc['capabilities']['add']}")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                rep.problem(at, f"seccompProfile is {seccomp!r}, not RuntimeDefault")
            if sc.get("readOnlyRootFilesystem") is not True:
                rep.problem(at, "readOnlyRootFilesystem is not true")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(kind) or {})
                if missing:
                    rep.problem(at, f"no {kind} for {', '.join(sorted(missing))}")
            if c.get("imagePullPolicy") != "IfNotPresent":
                rep.problem(at, f"imagePullPolicy {c.get('imagePullPolicy')!r}, expected IfNotPresent "
                            "(the images are built locally and loaded into the nodes)")


# ----------------------------------------------------------------- 5. the gateway config vs the Deployment
def port_of(addr, where, rep):
    m = re.match(r"^(\[[^\]]+\]|[^:]+):(\d+)$", addr or "")
    if not m:
        rep.problem(where, f"{addr!r} is not ip:port")
        return None, None
    return m.group(1).strip("[]"), int(m.group(2))


def duration_s(spec):
    """preStop sleep seconds: the sleep action, or an exec of sleep N."""
    if not spec:
        return 0
    if "sleep" in spec:
        return int(spec["sleep"].get("seconds", 0))
    cmd = (spec.get("exec") or {}).get("command") or []
    if cmd and cmd[0].endswith("sleep") and len(cmd) > 1:
        return float(cmd[1])
    return 0


def check_gateway_config(docs, by_kind, target, dump_dir, rep):
    gateways = [(w, t, c) for w, t in pod_templates(docs)
                for c in t["spec"].get("containers", []) if c.get("name") == "gateway"]
    if len(gateways) != 1:
        rep.problem("gateway", f"expected one workload with a container named gateway, found {len(gateways)}")
        return
    w, t, c = gateways[0]
    where = ident(w)
    args = c.get("args") or []
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        rep.problem(where, "the gateway container gets no --config FILE")
        return
    config_path = args[args.index("--config") + 1]
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    mount = mounts.get(str(Path(config_path).parent))
    if not mount:
        rep.problem(where, f"--config {config_path}: its directory is not a mount of the gateway container")
        return
    if mount.get("subPath"):
        rep.problem(where, f"{mount['mountPath']} is a subPath mount: ConfigMap updates would never reach it")
    volume = next((v for v in t["spec"].get("volumes", []) if v.get("name") == mount["name"]), {})
    cm_name = (volume.get("configMap") or {}).get("name")
    cm = by_kind.get("ConfigMap", {}).get(cm_name)
    key = Path(config_path).name
    text = ((cm or {}).get("data") or {}).get(key)
    if text is None:
        rep.problem(where, f"--config {config_path}: ConfigMap {cm_name} has no key {key}")
        return
    if dump_dir:
        Path(dump_dir, f"{target}.toml").write_text(text, encoding="utf-8")
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        rep.problem(f"ConfigMap/{cm_name}", f"{key} is not valid TOML: {e}")
        return
    at = f"ConfigMap/{cm_name} {key}"
    server = cfg.get("server") or {}
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    for cfg_key, port_name in (("listen", "http"), ("grpc_listen", "grpc"), ("admin_listen", "admin")):
        host, port = port_of(server.get(cfg_key), f"{at} server.{cfg_key}", rep)
        if port is None:
            continue
        if host in ("127.0.0.1", "::1", "localhost"):
            rep.problem(at, f"server.{cfg_key} = {server[cfg_key]!r} is loopback: no Service could reach it")
        if ports.get(port_name) != port:
            rep.problem(at, f"server.{cfg_key} port {port} is not the container port {port_name!r} "
                        f"({ports.get(port_name)})")
    for flag in ("--listen", "--grpc-listen", "--admin-listen"):
        if flag in args:
            rep.note(f"{where}: {flag} overrides the config file's address; the port check read the file")

    token_env = (cfg.get("admin") or {}).get("token_env")
    env_names = {e.get("name") for e in c.get("env", [])}
    if not token_env:
        rep.problem(at, "no admin.token_env: the gateway refuses a non-loopback admin_listen without a token")
    elif token_env not in env_names:
        rep.problem(where, f"admin.token_env is {token_env!r} but the container sets no such variable")

    for name, model in (cfg.get("models") or {}).items():
        repo = model.get("repository", "models")
        if not repo.startswith("/") or not any(repo == m or repo.startswith(m.rstrip("/") + "/") for m in mounts):
            rep.problem(at, f"models.{name}.repository = {repo!r} is not (under) a mount of the gateway container")

    probes = {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
    for probe, path in probes.items():
        got = ((c.get(probe) or {}).get("httpGet") or {})
        if got.get("path") != path or got.get("port") not in ("http", ports.get("http")):
            rep.problem(where, f"{probe} is not GET {path} on the http port (got {got})")

    fleet = cfg.get("fleet")
    if fleet is None:
        rep.problem(at, "no [fleet] table: the replicas would not share labels and rollouts")
    else:
        url = urlparse(fleet.get("redis_url", ""))
        if url.scheme != "redis" or not url.hostname:
            rep.problem(at, f"fleet.redis_url {fleet.get('redis_url')!r} is not redis://host:port/db")
        else:
            svc_name = url.hostname.split(".")[0]
            svc = by_kind.get("Service", {}).get(svc_name)
            if svc is None:
                rep.note(f"fleet.redis_url names {url.hostname}:{url.port or 6379}, which this render does not "
                         "contain (the base expects components/redis or a Redis of your own)")
            elif (url.port or 6379) not in {p.get("port") for p in svc["spec"].get("ports", [])}:
                rep.problem(at, f"fleet.redis_url port {url.port or 6379} is not a port of Service/{svc_name}")
            else:
                rep.note(f"fleet.redis_url {fleet['redis_url']} -> Service/{svc_name} in the render")

    drain_s = server.get("drain_timeout_ms", DEFAULT_DRAIN_MS) / 1000
    pre_stop = duration_s(((c.get("lifecycle") or {}).get("preStop")))
    grace = t["spec"].get("terminationGracePeriodSeconds", 30)
    if pre_stop <= 0:
        rep.problem(where, "no preStop sleep: the drain would start while endpoints still send traffic")
    if grace <= pre_stop + 2 * drain_s:
        rep.problem(where, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop:g} s + 2 x "
                    f"drain_timeout {drain_s:g} s (requests in flight, then shadow copies)")
    else:
        rep.note(f"shutdown: preStop {pre_stop:g} s + drain {drain_s:g} s (+ {drain_s:g} s for shadow "
                 f"copies) < terminationGracePeriodSeconds {grace}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubernetes-version", default="1.32.0")
    ap.add_argument("--alerts", default="deploy/prometheus/alerts.yml")
    ap.add_argument("--dump-configs")
    ap.add_argument("rendered", nargs="+", metavar="NAME=FILE")
    a = ap.parse_args()

    failed = False
    for item in a.rendered:
        target, _, path = item.partition("=")
        rep = Report(target)
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
        except yaml.YAMLError as e:
            print(f"== {target}: not YAML: {e}")
            failed = True
            continue
        kinds = {}
        for d in docs:
            kinds[d.get("kind")] = kinds.get(d.get("kind"), 0) + 1
        by_kind = index(docs)
        for check in ("schemas", "rules", "references", "pod security", "gateway config"):
            # A resource the schema refused may trip the later checks: that is reported, not raised.
            try:
                if check == "schemas":
                    check_schemas(docs, a.kubernetes_version, rep)
                elif check == "rules":
                    check_rules(docs, a.alerts, rep)
                elif check == "references":
                    check_references(docs, by_kind, a.alerts, rep)
                elif check == "pod security":
                    check_pod_security(docs, rep)
                else:
                    check_gateway_config(docs, by_kind, target, a.dump_configs, rep)
            except Exception as e:  # noqa: BLE001
                rep.problem(f"{check} check", f"could not run on this input: {type(e).__name__}: {e}")

        core = sum(n for k, n in kinds.items() if k not in CRD_KINDS)
        print(f"== {target}: {len(docs)} resources ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
              f"{core} validated against Kubernetes {a.kubernetes_version} (strict)")
        for n in rep.notes:
            print(f"   note: {n}")
        for p in rep.problems:
            print(f"   PROBLEM: {p}")
        if rep.problems:
            failed = True
            print(f"   {target}: {len(rep.problems)} problem(s)")
        else:
            print(f"   {target}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
