"""Static checks of deploy/ and docker-compose.yml, run by scripts/check-deploy.sh in its venv.

Prints one line per check ("ok   NAME: detail" or "FAIL NAME: reason") and exits 1 if any
failed. Nothing here needs a container engine, a cluster or the network: the schemas are the
files committed under deploy/schemas/ (provenance in deploy/schemas/README.md) and the ones
kubernetes-validate bundles.

    python scripts/lib/check_deploy.py static          # compose, Dockerfile, k8s, healthcheck,
                                                       # Grafana dashboard, Prometheus alert rules
    python scripts/lib/check_deploy.py build-command   # print the Dockerfile's cargo build line
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "example"
K8S_VERSIONS = os.environ.get("RAGQ_CHECK_DEPLOY_K8S_VERSIONS", "1.33.0 1.37.0").split()

# Added to the configuration by a change in progress (32-byte key, hex); not yet in the doc.
PENDING_ENV = {"RAGQ_SECRET_KEY"}
# Read by RabbitMQ's, PostgreSQL's and the Rust runtime's own code, not by ragq's settings.
OTHER_ENV = re.compile(r"^(RUST_LOG|RABBITMQ_DEFAULT_(USER|PASS|VHOST)|POSTGRES_(USER|PASSWORD|DB))$")

# Kubernetes resource.Quantity (the bundled schemas accept any string).
QUANTITY = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")

results: list[tuple[bool, str, str]] = []


def check(name: str):
    """Decorator: run the function as one check; AssertionError or any exception is a failure."""

    def wrap(fn):
        try:
            detail = fn() or ""
            results.append((True, name, detail))
            print(f"ok   {name}: {detail}" if detail else f"ok   {name}", flush=True)
        except AssertionError as e:
            msg = str(e) or "assertion failed"
        except KeyError as e:
            msg = f"missing key {e}"
        except Exception as e:  # noqa: BLE001 - every failure becomes one FAIL line
            msg = f"{type(e).__name__}: {e}"
        else:
            return fn
        results.append((False, name, msg))
        print(f"FAIL {name}: {msg}", flush=True)
        return fn

    return wrap


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def known_env() -> set[str]:
    """Every RAGQ_* name of docs/ARCHITECTURE.md's Configuration section, plus PENDING_ENV."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    m = re.search(r"^## Configuration$(.*?)^## ", doc, re.S | re.M)
    assert m, "docs/ARCHITECTURE.md has no '## Configuration' section"
    names = set(re.findall(r"RAGQ_[A-Z0-9_]+", m.group(1)))
    assert "RAGQ_DATABASE_URL" in names, "could not read the configuration table"
    return names | PENDING_ENV


def check_env_names(where: str, names, known: set[str]) -> None:
    bad = sorted(n for n in names if n.startswith("RAGQ_") and n not in known)
    assert not bad, f"{where}: unknown RAGQ_* settings {bad} (not in docs/ARCHITECTURE.md, Configuration)"
    other = sorted(n for n in names if not n.startswith("RAGQ_") and not OTHER_ENV.match(n))
    assert not other, f"{where}: unexpected variables {other}"


def check_secret_key(where: str, value) -> None:
    assert isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value), \
        f"{where}: RAGQ_SECRET_KEY must be 64 lowercase hex digits (32 bytes), got {value!r}"


def cli_subcommands() -> set[str]:
    """Subcommands of the `ragq` CLI, from the clap enum in cli/src/main.rs (kebab-case)."""
    src = (ROOT / "cli" / "src" / "main.rs").read_text()
    m = re.search(r"enum Cmd \{(.*?)\n\}", src, re.S)
    assert m, "cli/src/main.rs: enum Cmd not found"
    variants = re.findall(r"^    ([A-Z][A-Za-z0-9]*)\b", m.group(1), re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}


# ---------------------------------------------------------------- docker-compose.yml

def compose_checks(known: set[str]) -> None:
    path = ROOT / "docker-compose.yml"
    compose = yaml.safe_load(path.read_text())  # merge keys (<<) resolved by the loader
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())

    @check("compose: docker-compose.yml valid against the compose-spec JSON schema")
    def _():
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
        assert not errors, "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5])
        return f"{len(compose['services'])} services"

    @check("compose: services, dependencies, replicas and profiles")
    def _():
        s = compose["services"]
        need = {"rabbitmq", "redis", "postgres", "migrate", "api", "worker", "sim"}
        assert need <= set(s), f"missing services {sorted(need - set(s))}"
        for name, svc in s.items():
            for dep, spec in (svc.get("depends_on") or {}).items():
                assert dep in s, f"{name} depends on unknown service {dep}"
                assert isinstance(spec, dict) and spec.get("condition") in (
                    "service_healthy", "service_completed_successfully"), \
                    f"{name} -> {dep}: needs condition service_healthy or service_completed_successfully"
                if spec["condition"] == "service_healthy":
                    hc = s[dep].get("healthcheck") or {}
                    assert hc.get("test") and not hc.get("disable"), f"{name} waits for {dep}'s health, which has no healthcheck"
        for name in ("api", "worker"):
            deps = s[name]["depends_on"]
            assert deps.get("migrate", {}).get("condition") == "service_completed_successfully", \
                f"{name} must wait for migrate to complete"
            for dep in ("rabbitmq", "redis", "postgres"):
                assert deps.get(dep, {}).get("condition") == "service_healthy", f"{name} must wait for {dep} healthy"
        assert s["worker"].get("deploy", {}).get("replicas") == 2, "worker: deploy.replicas must be 2"
        assert s["sim"].get("profiles") == ["sim"], "sim: profiles must be [sim]"
        assert all("profiles" not in s[n] for n in need - {"sim"}), "only sim has a profile"
        cmd = s["migrate"]["command"]
        assert cmd[:1] == ["ragq"] and len(cmd) == 2 and cmd[1] in cli_subcommands(), \
            f"migrate runs {cmd}; `ragq` subcommands are {sorted(cli_subcommands())}"
        assert "--requirepass" in s["redis"]["command"], "redis: --requirepass missing"
        assert "pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"]), "postgres: healthcheck is not pg_isready"
        assert "management" in s["rabbitmq"]["image"], "rabbitmq: use the management image"
        for n in ("migrate", "api", "worker", "sim"):
            b = s[n]["build"]
            assert (ROOT / b["context"] / b["dockerfile"]).is_file(), f"{n}: build file missing"
        return "depends_on conditions, worker x2, sim under --profile sim, migrate = `ragq migrate`"

    @check("compose: settings (known RAGQ_* names, passwords on every URL, no TLS, secret key)")
    def _():
        s = compose["services"]
        for name in ("migrate", "api", "worker", "sim"):
            check_env_names(f"compose {name}", s[name].get("environment", {}), known)
        for name in ("migrate", "api", "worker"):
            env = s[name]["environment"]
            urls = {k: env[k] for k in ("RAGQ_DATABASE_URL", "RAGQ_AMQP_URL", "RAGQ_REDIS_URL")}
            assert re.fullmatch(r"postgres://ragq:[^@:/]+@postgres:5432/ragq", urls["RAGQ_DATABASE_URL"]), urls
            assert re.fullmatch(r"amqp://ragq:[^@:/]+@rabbitmq:5672/ragq", urls["RAGQ_AMQP_URL"]), urls
            assert re.fullmatch(r"redis://:[^@:/]+@redis:6379/", urls["RAGQ_REDIS_URL"]), urls
            check_secret_key(f"compose {name}", env.get("RAGQ_SECRET_KEY"))
        env = s["api"]["environment"]
        pg = re.match(r"postgres://([^:]+):([^@]+)@", env["RAGQ_DATABASE_URL"])
        pge = s["postgres"]["environment"]
        assert (pge["POSTGRES_USER"], pge["POSTGRES_PASSWORD"]) == pg.groups(), "postgres password differs from the URL's"
        mq = re.match(r"amqp://([^:]+):([^@]+)@[^/]+/(.+)$", env["RAGQ_AMQP_URL"])
        mqe = s["rabbitmq"]["environment"]
        assert (mqe["RABBITMQ_DEFAULT_USER"], mqe["RABBITMQ_DEFAULT_PASS"], mqe["RABBITMQ_DEFAULT_VHOST"]) == mq.groups(), \
            "rabbitmq user/password/vhost differ from the URL's"
        redis_pass = re.match(r"redis://:([^@]+)@", env["RAGQ_REDIS_URL"]).group(1)
        rc = s["redis"]["command"]
        assert rc[rc.index("--requirepass") + 1] == redis_pass, "redis --requirepass differs from the URL's"
        values = [str(v) for svc in s.values() for v in (svc.get("environment") or {}).values()]
        tls = [v for v in values if re.search(r"^(rediss|amqps)://|sslmode=", v)]
        assert not tls, f"local compose must not use TLS URLs: {tls}"
        assert s["worker"]["environment"].get("RAGQ_WORKER_HEALTH_ADDR", "").endswith(":9400"), \
            "worker: RAGQ_WORKER_HEALTH_ADDR must be set (its health check needs it)"
        drain = int(s["worker"]["environment"]["RAGQ_DRAIN_TIMEOUT_S"])
        grace = duration_s(s["worker"]["stop_grace_period"])
        assert grace > drain, f"worker stop_grace_period {grace}s must exceed RAGQ_DRAIN_TIMEOUT_S {drain}s"
        return f"worker stop_grace_period {grace}s > drain {drain}s"


def duration_s(v: str) -> int:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v))
    assert m and any(m.groups()), f"unsupported duration {v!r}"
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


# ---------------------------------------------------------------- deploy/Dockerfile

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, cur = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not cur and (line.strip().startswith("#") or not line.strip()):
            continue
        if cur and line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def build_command() -> str:
    """The one `cargo build …` command of the Dockerfile's RUN lines, exactly as written."""
    lines = [l.strip().rstrip("\\").strip() for l in (DEPLOY / "Dockerfile").read_text().splitlines()
             if re.match(r"\s*cargo build\b", l)]
    assert len(lines) == 1, f"expected exactly one line starting with `cargo build` in deploy/Dockerfile, found {len(lines)}"
    cmd = lines[0]
    assert re.fullmatch(r"cargo build( --?[a-z][a-z-]*( [a-z][a-z0-9-]*)?)+", cmd), \
        f"the build line must be plain `cargo build` flags (no shell syntax): {cmd!r}"
    runs = [args for ins, args in dockerfile_instructions() if ins == "RUN" and cmd in args]
    assert len(runs) == 1, "the cargo build line is not part of exactly one RUN instruction"
    return cmd


def dockerfile_checks() -> None:
    @check("dockerfile: stages, user, ports, health check, command, build line")
    def _():
        ins = dockerfile_instructions()
        text = (DEPLOY / "Dockerfile").read_text()
        assert text.startswith("# syntax=docker/dockerfile:1"), "needs the BuildKit syntax line (cache mounts)"
        args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
        froms = [a for i, a in ins if i == "FROM"]
        assert args.get("RUST_IMAGE") == "rust:1.95-bookworm", "builder must be rust:1.95-bookworm"
        assert args.get("RUNTIME_IMAGE") == "debian:bookworm-slim", "runtime must be debian:bookworm-slim"
        stages = [f.split(" AS ")[-1] for f in froms]
        assert stages == ["builder", "base", "sim", "runtime"], f"stages {stages}"
        assert stages[-1] == "runtime", "the last stage (the default target) must be the runtime"
        cmd = build_command()
        for b in ("ragq-api", "ragq-worker", "ragq"):
            assert f"--bin {b} " in cmd + " ", f"build line lacks --bin {b}"
        assert "--release" in cmd and "--locked" in cmd, "build with --release --locked"
        run = next(a for i, a in ins if i == "RUN" and cmd in a)
        assert "type=cache,target=/usr/local/cargo/registry" in run, "no cargo registry cache mount"
        assert any(i == "COPY" and a == ". ." for i, a in ins), "the builder must copy the whole workspace"
        # the runtime stage: after its FROM
        rt = ins[[k for k, (i, a) in enumerate(ins) if i == "FROM" and a.endswith(" AS runtime")][0]:]
        base = ins[[k for k, (i, a) in enumerate(ins) if i == "FROM" and a.endswith(" AS base")][0]:]
        base = base[:[k for k, (i, a) in enumerate(base) if i == "FROM" and k > 0][0]]
        apt = " ".join(a for i, a in base if i == "RUN")
        pkgs = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", apt)
        assert pkgs and pkgs.group(1).split() == ["ca-certificates"], "the runtime installs ca-certificates only"
        assert "--uid 10001" in apt and ("USER", "10001:10001") in base, "non-root user 10001"
        copy_bins = next(a for i, a in rt if i == "COPY" and "--from=builder" in a)
        for b in ("ragq-api", "ragq-worker", "ragq"):
            assert f"/out/{b} " in copy_bins, f"runtime lacks {b}"
        assert copy_bins.endswith("/usr/local/bin/"), "binaries go to /usr/local/bin"
        assert ("EXPOSE", "9380") in rt, "EXPOSE 9380"
        assert ("CMD", '["ragq-api"]') in rt, "default command must be ragq-api"
        hc = [a for i, a in rt if i == "HEALTHCHECK"]
        assert hc and hc[0].endswith('CMD ["ragq-healthcheck"]'), "runtime HEALTHCHECK must run ragq-healthcheck"
        src = re.search(r"COPY --chmod=0755 (\S+) /usr/local/bin/ragq-healthcheck", text)
        assert src and (ROOT / src.group(1)).is_file(), "healthcheck script not copied or missing"
        ignore = (ROOT / ".dockerignore").read_text().split()
        for p in ("target/", ".ragq/", ".git/"):
            assert p in ignore, f".dockerignore lacks {p}"
        return f"`{cmd}`"


# ---------------------------------------------------------------- deploy/healthcheck.sh

class QuietServer(http.server.ThreadingHTTPServer):
    """The health check closes after the status line; the resets that follow are expected."""

    def handle_error(self, request, client_address):
        pass


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def healthcheck_checks() -> None:
    @check("healthcheck: ragq-healthcheck (bash /dev/tcp) answers 0 on 200, 1 on 404 and on a closed port")
    def _():
        script = str(DEPLOY / "healthcheck.sh")
        with tempfile.TemporaryDirectory() as d:
            Path(d, "healthz").write_text("ok\n")
            handler = lambda *a, **k: QuietHandler(*a, directory=d, **k)  # noqa: E731
            srv = QuietServer(("127.0.0.1", 0), handler)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            port = srv.server_address[1]
            try:
                def run(env, *args):
                    e = {k: v for k, v in os.environ.items() if not k.startswith("RAGQ_")}
                    e.update(env)
                    return subprocess.run(["bash", script, *args], env=e, capture_output=True,
                                          text=True, timeout=15).returncode
                assert run({"RAGQ_API_ADDR": f"0.0.0.0:{port}"}) == 0, "200 not seen as healthy"
                assert run({"RAGQ_WORKER_HEALTH_ADDR": f"0.0.0.0:{port}", "RAGQ_API_ADDR": "0.0.0.0:1"}) == 0, \
                    "RAGQ_WORKER_HEALTH_ADDR must take precedence"
                assert run({"RAGQ_SIM_ADDR": f"0.0.0.0:{port}"}) == 0, "RAGQ_SIM_ADDR not used"
                assert run({"RAGQ_API_ADDR": f"0.0.0.0:{port}"}, "/readyz") == 1, "404 seen as healthy"
            finally:
                srv.shutdown()
                srv.server_close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        e = {k: v for k, v in os.environ.items() if not k.startswith("RAGQ_")}
        e["RAGQ_API_ADDR"] = f"0.0.0.0:{closed}"
        assert subprocess.run(["bash", script], env=e, capture_output=True, timeout=15).returncode == 1, \
            "a closed port seen as healthy"
        return "against a local HTTP server"


# ---------------------------------------------------------------- Kubernetes

def render(path: Path) -> list[dict]:
    import pykustomize

    result = asyncio.run(pykustomize.build_json(str(path)))
    assert result.resources, f"{path} rendered no resources"
    return result.resources


def crd_schema(file: str, version: str) -> tuple[str, str, dict]:
    """(group, kind, JSON schema) from a CRD: the openAPIV3Schema of `version`, made strict."""
    crd = load_yaml_docs(SCHEMAS / file)[0]
    v = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    assert v["served"], f"{file}: {version} not served"
    return crd["spec"]["group"], crd["spec"]["names"]["kind"], strict_openapi(v["schema"]["openAPIV3Schema"])


def strict_openapi(s):
    """OpenAPI v3 (structural CRD schema) -> JSON Schema: `nullable`, int-or-string, and
    additionalProperties: false on every object with properties, as the API server prunes (or,
    with strict field validation, rejects) unknown fields. x-kubernetes-validations (CEL) are not
    evaluated."""
    if isinstance(s, list):
        return [strict_openapi(x) for x in s]
    if not isinstance(s, dict):
        return s
    s = {k: strict_openapi(v) for k, v in s.items()}
    if s.pop("x-kubernetes-int-or-string", False):
        s.pop("type", None)
        s.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if ("properties" in s and "additionalProperties" not in s
            and not s.get("x-kubernetes-preserve-unknown-fields")):
        s["additionalProperties"] = False
    return s


def by_kind(resources: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def k8s_checks(known: set[str]) -> None:
    rendered: dict[str, list[dict]] = {}

    @check("k8s: kustomize build of base and overlay (pykustomize, kustomize's Go library)")
    def _():
        import pykustomize

        for name, path in (("base", K8S / "base"), ("overlay", OVERLAY)):
            rendered[name] = render(path)
        kinds = sorted({r["kind"] for r in rendered["overlay"]})
        detail = f"{pykustomize.native_version()}; overlay: {len(rendered['overlay'])} resources ({', '.join(kinds)})"
        if shutil.which("kubectl"):  # a second opinion where kubectl happens to be installed
            out = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60)
            if out.returncode == 0:
                theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
                assert theirs == rendered["overlay"], "pykustomize and `kubectl kustomize` render the overlay differently"
                detail += "; identical to `kubectl kustomize`"
        return detail

    if len(rendered) < 2:  # a build failed: nothing to validate
        return
    keda_kinds = {"ScaledObject", "TriggerAuthentication"}

    for version in K8S_VERSIONS:
        @check(f"k8s: built-in resources valid for Kubernetes {version} (kubernetes-validate, strict)")
        def _(version=version):
            import kubernetes_validate

            n = 0
            for name, resources in rendered.items():
                for r in resources:
                    if r["kind"] in keda_kinds:
                        continue
                    try:
                        kubernetes_validate.validate(r, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        path = ".".join(map(str, e.path))
                        raise AssertionError(f"{name} {r['kind']}/{r['metadata']['name']}: {path}: {e.message}") from None
                    n += 1
            return f"{n} resources (base and overlay), kubernetes-validate {kubernetes_validate.__version__}"

    @check("k8s: KEDA ScaledObject and TriggerAuthentication valid against the KEDA v2.20.2 CRD schemas")
    def _():
        schemas = {}
        for f in ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"):
            group, kind, schema = crd_schema(f, "v1alpha1")
            schemas[kind] = (f"{group}/v1alpha1", schema)
        n = 0
        for name, resources in rendered.items():
            for r in resources:
                if r["kind"] not in keda_kinds:
                    continue
                api, schema = schemas[r["kind"]]
                assert r["apiVersion"] == api, f"{r['kind']}: apiVersion {r['apiVersion']}, CRD serves {api}"
                errors = list(jsonschema.Draft202012Validator(schema).iter_errors(r))
                assert not errors, f"{name} {r['kind']}/{r['metadata']['name']}: " + "; ".join(
                    f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
                n += 1
        assert n == 4, f"expected a ScaledObject and a TriggerAuthentication in base and overlay, found {n}"
        return f"{n} resources"

    @check("k8s: KEDA trigger reads RabbitMQ's management HTTP API (protocol: http), not AMQP")
    def _():
        res = by_kind(rendered["overlay"])
        so = res[("ScaledObject", "ragq-worker")]
        assert so["spec"]["scaleTargetRef"]["name"] == "ragq-worker" and ("Deployment", "ragq-worker") in res, \
            "the ScaledObject must target Deployment ragq-worker"
        assert so["spec"]["minReplicaCount"] >= 1, "minReplicaCount 0 would leave the ingest/batch lanes unconsumed"
        trig = [t for t in so["spec"]["triggers"] if t["type"] == "rabbitmq"]
        assert len(trig) == 1, "one rabbitmq trigger"
        md = trig[0]["metadata"]
        assert md.get("protocol") == "http", f"protocol must be http (kedacore/keda#5050), is {md.get('protocol')!r}"
        assert md.get("mode") == "QueueLength", f"mode {md.get('mode')!r}"
        assert md.get("queueName") == "ragq.jobs.interactive", f"queueName {md.get('queueName')!r}"
        assert "host" not in md and "hostFromEnv" not in md, "the host must come from the TriggerAuthentication"
        ta = res[("TriggerAuthentication", trig[0]["authenticationRef"]["name"])]
        ref = next(r for r in ta["spec"]["secretTargetRef"] if r["parameter"] == "host")
        secret = res[("Secret", ref["name"])]
        host = (secret.get("stringData") or {}).get(ref["key"])
        assert host and re.match(r"https?://[^:@/]+:[^@/]+@[^/]+:\d+/", host), \
            f"Secret {ref['name']}.{ref['key']} must be http(s)://user:pass@host:port/vhost"
        return f"queue {md['queueName']}, mode {md['mode']}, value {md['value']}, host from Secret {ref['name']}"

    @check("k8s: workloads (envFrom, settings, probes, grace > preStop + drain, security, resources)")
    def _():
        notes = []
        for name, resources in rendered.items():
            res = by_kind(resources)
            cm = res[("ConfigMap", "ragq-config")]["data"]
            sec = res[("Secret", "ragq-secrets")]["stringData"]
            check_env_names(f"{name} ConfigMap ragq-config", cm, known)
            check_env_names(f"{name} Secret ragq-secrets", sec, known)
            check_secret_key(f"{name} Secret ragq-secrets", sec.get("RAGQ_SECRET_KEY"))
            for k in ("RAGQ_DATABASE_URL", "RAGQ_AMQP_URL", "RAGQ_REDIS_URL"):
                assert k in sec and k not in cm, f"{k} (has a password) belongs in the Secret only"
            assert not any(re.search(r"://[^/]*:[^/]*@", str(v)) for v in cm.values()), "a URL with a password in the ConfigMap"
            for comp, port, stop_setting in (("api", 9380, "RAGQ_SHUTDOWN_GRACE_S"), ("worker", 9400, "RAGQ_DRAIN_TIMEOUT_S")):
                dep = res[("Deployment", f"ragq-{comp}")]
                pod = dep["spec"]["template"]
                labels = pod["metadata"]["labels"]
                assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"ragq-{comp}: selector"
                assert "replicas" not in dep["spec"], f"ragq-{comp}: replicas belong to the autoscaler"
                ps = pod["spec"]
                assert ps["securityContext"].get("runAsNonRoot") and ps["securityContext"].get("runAsUser") == 10001, \
                    f"ragq-{comp}: pod must run as non-root uid 10001"
                (c,) = ps["containers"]
                assert {e.get("configMapRef", {}).get("name") for e in c["envFrom"]} >= {"ragq-config"}, \
                    f"ragq-{comp}: envFrom lacks ConfigMap ragq-config"
                assert {e.get("secretRef", {}).get("name") for e in c["envFrom"]} >= {"ragq-secrets"}, \
                    f"ragq-{comp}: envFrom lacks Secret ragq-secrets"
                check_env_names(f"{name} ragq-{comp} env", [e["name"] for e in c.get("env", [])], known)
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                ports = {p["name"]: p["containerPort"] for p in c["ports"]}
                if comp == "api":
                    assert cm["RAGQ_API_ADDR"] == f"0.0.0.0:{port}", f"RAGQ_API_ADDR must be 0.0.0.0:{port}"
                else:
                    assert env.get("RAGQ_WORKER_HEALTH_ADDR") == f"0.0.0.0:{port}", "worker: RAGQ_WORKER_HEALTH_ADDR"
                for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                    g = c[probe]["httpGet"]
                    assert g["path"] == path, f"ragq-{comp} {probe} path {g['path']}"
                    assert ports.get(g["port"], g["port"]) == port, f"ragq-{comp} {probe} port {g['port']} is not {port}"
                sc = c["securityContext"]
                assert sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False, \
                    f"ragq-{comp}: readOnlyRootFilesystem true and allowPrivilegeEscalation false"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"ragq-{comp}: drop ALL capabilities"
                for kind in ("requests", "limits"):
                    q = c["resources"].get(kind, {})
                    assert {"cpu", "memory"} <= set(q), f"ragq-{comp}: resources.{kind} needs cpu and memory"
                    bad = [v for v in q.values() if not QUANTITY.fullmatch(str(v))]
                    assert not bad, f"ragq-{comp}: resources.{kind}: not a quantity: {bad}"
                sleep = c["lifecycle"]["preStop"]["exec"]["command"]
                assert sleep[0] == "sleep", f"ragq-{comp}: preStop is not a sleep"
                bound = int(cm[stop_setting])
                grace = ps["terminationGracePeriodSeconds"]
                assert grace > int(sleep[1]) + bound, \
                    f"ragq-{comp}: terminationGracePeriodSeconds {grace} <= preStop {sleep[1]} + {stop_setting} {bound}"
                pdb = res[("PodDisruptionBudget", f"ragq-{comp}")]
                assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"PDB ragq-{comp} selects nothing"
                if name == "overlay":
                    notes.append(f"{comp}: grace {grace}s > preStop {sleep[1]}s + {stop_setting} {bound}s")
            svc = res[("Service", "ragq-api")]
            api_labels = res[("Deployment", "ragq-api")]["spec"]["template"]["metadata"]["labels"]
            assert svc["spec"]["selector"].items() <= api_labels.items(), "Service ragq-api selects no api pod"
            hpa = res[("HorizontalPodAutoscaler", "ragq-api")]
            assert hpa["spec"]["scaleTargetRef"]["name"] == "ragq-api", "HPA ragq-api targets another workload"
            assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu", "HPA ragq-api must scale on CPU"
        return "; ".join(notes)

    @check("k8s: base is namespace-agnostic; the overlay sets namespace, image and replica bounds")
    def _():
        base, over = rendered["base"], rendered["overlay"]
        assert not [r for r in base if "namespace" in r["metadata"]], "base sets a namespace"
        ns = [r["metadata"]["name"] for r in over if r["kind"] == "Namespace"]
        assert len(ns) == 1, "the overlay declares its namespace"
        stray = [f"{r['kind']}/{r['metadata']['name']}" for r in over
                 if r["kind"] != "Namespace" and r["metadata"].get("namespace") != ns[0]]
        assert not stray, f"outside namespace {ns[0]}: {stray}"
        images = {c["image"] for r in over if r["kind"] == "Deployment" for c in r["spec"]["template"]["spec"]["containers"]}
        assert len(images) == 1 and re.fullmatch(r".+/ragq:[\w.-]+", next(iter(images))), f"overlay images {images}"
        res, bres = by_kind(over), by_kind(base)
        hpa, so = res[("HorizontalPodAutoscaler", "ragq-api")]["spec"], res[("ScaledObject", "ragq-worker")]["spec"]
        assert (hpa["minReplicas"], so["minReplicaCount"]) != (
            bres[("HorizontalPodAutoscaler", "ragq-api")]["spec"]["minReplicas"],
            bres[("ScaledObject", "ragq-worker")]["spec"]["minReplicaCount"]), "the overlay changes no replica count"
        return (f"namespace {ns[0]}, image {next(iter(images))}, api {hpa['minReplicas']}-{hpa['maxReplicas']}, "
                f"worker {so['minReplicaCount']}-{so['maxReplicaCount']}")


DASHBOARD = DEPLOY / "grafana" / "ragq-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
METRIC = re.compile(r"\bragq_[a-z_]+")


def metric_names(expr: str) -> set[str]:
    """The ragq metrics an expression reads (a histogram's series under the histogram's name)."""
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in METRIC.findall(expr)}


def documented_metrics() -> set[str]:
    """Metric names in the table of docs/ARCHITECTURE.md's "Metrics and traces" section."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Metrics and traces", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(ragq_[a-z_]+)`", section, re.M))


def balanced(expr: str) -> bool:
    depth = 0
    for ch in expr:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def observability_checks() -> None:
    documented = documented_metrics()

    @check("grafana: deploy/grafana/ragq-dashboard.json (panels, targets, documented metrics)")
    def _():
        dash = json.loads(DASHBOARD.read_text())
        assert dash.get("uid") and dash.get("title"), "uid and title"
        panels = dash["panels"]
        assert panels, "no panel"
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
        used: set[str] = set()
        for p in panels:
            assert p.get("title"), f"panel {p['id']} has no title"
            targets = p.get("targets") or []
            assert targets, f"panel {p['title']!r} has no target"
            for t in targets:
                expr = t["expr"]
                assert balanced(expr), f"{p['title']!r}: unbalanced parentheses in {expr}"
                names = metric_names(expr)
                assert names, f"{p['title']!r}: {expr} reads no ragq metric"
                used |= names
        for want in ("ragq_ttfc_seconds", "ragq_jobs_total", "ragq_errors_total", "ragq_queue_depth",
                     "ragq_queue_consumers", "ragq_worker_jobs_in_flight", "ragq_worker_prefetch_limit",
                     "ragq_db_pool_connections", "ragq_open_streams", "ragq_upstream_request_seconds",
                     "ragq_upstream_requests_total", "ragq_job_overhead_seconds"):
            assert want in used, f"no panel shows {want}"
        undocumented = used - documented
        assert not undocumented, f"not in ARCHITECTURE.md's metric table: {sorted(undocumented)}"
        return f"{len(panels)} panels, {len(used)} metrics"

    @check("prometheus: deploy/prometheus/alerts.yml (rules, durations, severities, documented metrics)")
    def _():
        doc = yaml.safe_load(ALERTS.read_text())
        rules = [r for g in doc["groups"] for r in g["rules"]]
        names = [r["alert"] for r in rules]
        assert len(names) == len(set(names)), f"duplicate alerts {names}"
        used: set[str] = set()
        for r in rules:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, f"{r['alert']}: {sorted(r)}"
            assert balanced(r["expr"]), f"{r['alert']}: unbalanced parentheses"
            if "for" in r:
                assert re.fullmatch(r"\d+[smh]", r["for"]), f"{r['alert']}: for {r['for']}"
            assert r["labels"]["severity"] in {"warning", "critical"}, f"{r['alert']}: severity"
            assert r["annotations"]["summary"], f"{r['alert']}: summary"
            got = metric_names(r["expr"])
            assert got, f"{r['alert']} reads no ragq metric"
            used |= got
        for alert in ("RagqTtfcP99High", "RagqErrorRateHigh", "RagqQueueGrowing", "RagqQueueWithoutConsumers",
                      "RagqDbPoolSaturated", "RagqDeadLetters"):
            assert alert in names, f"missing alert {alert}"
        undocumented = used - documented
        assert not undocumented, f"not in ARCHITECTURE.md's metric table: {sorted(undocumented)}"
        if shutil.which("promtool"):
            out = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr
            return f"{len(rules)} rules, promtool ok"
        return f"{len(rules)} rules, {len(used)} metrics (promtool not installed: not run)"


def main() -> int:
    if sys.argv[1:] == ["build-command"]:
        print(build_command())
        return 0
    if sys.argv[1:] != ["static"]:
        print(__doc__, file=sys.stderr)
        return 2
    known = known_env()
    compose_checks(known)
    dockerfile_checks()
    healthcheck_checks()
    observability_checks()
    k8s_checks(known)
    failed = [n for ok, n, _ in results if not ok]
    if failed:
        print(f"{len(failed)} of {len(results)} static checks failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
