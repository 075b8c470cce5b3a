"""Behind the Kubernetes Gateway API Inference Extension: the InferencePool and HTTPRoute manifests
(deploy/k8s/gateway/) validate against the CRD schemas of pinned releases (tests/fixtures/crds/) and
fit the Deployment they front; a live server exports the gauges the extension's endpoint picker
scrapes (vllm:num_requests_waiting, vllm:num_requests_running, vllm:kv_cache_usage_perc and
vllm:cache_config_info), equal to CastServe's own figures, and they move under load."""

import concurrent.futures
import json
import os
import time
import unittest

from castserve_harness import MODEL_ID, Server, metric_value

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

try:
    import yaml
except ImportError:  # PyYAML: tests/test_deploy_sync.py needs it too
    yaml = None


def load_yaml(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return yaml.safe_load(f)


def crd_schema(name):
    with open(os.path.join(ROOT, "tests", "fixtures", "crds", name)) as f:
        return json.load(f)


@unittest.skipIf(yaml is None, "PyYAML is not installed")
class GatewayManifestTests(unittest.TestCase):
    def validate(self, manifest, schema_file):
        import jsonschema
        crd = crd_schema(schema_file)
        group, version = manifest["apiVersion"].split("/")
        self.assertEqual((group, version, manifest["kind"]), (crd["group"], crd["version"], crd["kind"]))
        jsonschema.validate(manifest, crd["schema"])

    def test_inference_pool_validates_and_selects_the_deployment(self):
        pool = load_yaml("deploy", "k8s", "gateway", "inferencepool.yaml")
        self.validate(pool, "InferencePool-v1.schema.json")
        ref = pool["spec"]["endpointPickerRef"]
        # The CRD's CEL rule: a Service (the default kind) needs a port.
        if ref.get("kind", "Service") == "Service":
            self.assertIn("port", ref)
        deployment = load_yaml("deploy", "k8s", "deployment.yaml")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        for key, value in pool["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(pod_labels.get(key), value, f"the pool selects {key}={value}, the pods do not carry it")
        ports = [p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        for target in pool["spec"]["targetPorts"]:
            self.assertIn(target["number"], ports)

    def test_http_route_validates_and_targets_the_pool(self):
        route = load_yaml("deploy", "k8s", "gateway", "httproute.yaml")
        self.validate(route, "HTTPRoute-v1.schema.json")
        pool = load_yaml("deploy", "k8s", "gateway", "inferencepool.yaml")
        backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
        self.assertIn({"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": pool["metadata"]["name"]},
                      [{k: b.get(k) for k in ("group", "kind", "name")} for b in backends])

    def test_schemas_catch_a_broken_manifest(self):
        import jsonschema
        pool = load_yaml("deploy", "k8s", "gateway", "inferencepool.yaml")
        del pool["spec"]["selector"]
        with self.assertRaises(jsonschema.ValidationError):
            self.validate(pool, "InferencePool-v1.schema.json")
        route = load_yaml("deploy", "k8s", "gateway", "httproute.yaml")
        route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Glob"
        with self.assertRaises(jsonschema.ValidationError):
            self.validate(route, "HTTPRoute-v1.schema.json")


class GatewayMetricsTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(slots=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def assert_same_as_castserve(self, families):
        labels = {"model_name": MODEL_ID}
        self.assertEqual(metric_value(families, "vllm:num_requests_waiting", **labels),
                         metric_value(families, "castserve_requests_waiting"))
        self.assertEqual(metric_value(families, "vllm:num_requests_running", **labels),
                         metric_value(families, "castserve_requests_running"))
        used = metric_value(families, "castserve_kv_blocks_used")
        total = used + metric_value(families, "castserve_kv_blocks_free")
        self.assertAlmostEqual(metric_value(families, "vllm:kv_cache_usage_perc", **labels), used / total)

    def test_idle_gauges_and_cache_geometry(self):
        families = self.server.metrics()
        for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
            self.assertIn(name, families)
            self.assertEqual(families[name].type, "gauge")
            self.assertEqual([s.labels for s in families[name].samples], [{"model_name": MODEL_ID}])
        self.assert_same_as_castserve(families)
        info = families["vllm:cache_config_info"].samples
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0].value, 1)
        self.assertEqual(int(info[0].labels["block_size"]), 16)
        total = metric_value(families, "castserve_kv_blocks_used") + metric_value(families, "castserve_kv_blocks_free")
        self.assertEqual(int(info[0].labels["num_gpu_blocks"]), total)

    def test_gauges_follow_the_queue_under_load(self):
        body = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(self.server.json, "POST", "/v1/completions", dict(body, seed=i), None, 90) for i in range(4)]
            deadline = time.monotonic() + 30
            while True:
                families = self.server.metrics()
                if metric_value(families, "vllm:num_requests_waiting", model_name=MODEL_ID) >= 1:
                    break
                self.assertLess(time.monotonic(), deadline, "no request was ever reported waiting (1 slot, 4 requests)")
                self.assertFalse(all(f.done() for f in futures), "every request ended before one was seen waiting")
                time.sleep(0.02)
            self.assert_same_as_castserve(families)
            self.assertEqual(metric_value(families, "vllm:num_requests_running", model_name=MODEL_ID), 1)
            self.assertGreater(metric_value(families, "vllm:kv_cache_usage_perc", model_name=MODEL_ID), 0)
            for f in futures:
                status, _ = f.result(timeout=120)
                self.assertEqual(status, 200)
        families = self.server.metrics()
        self.assertEqual(metric_value(families, "vllm:num_requests_waiting", model_name=MODEL_ID), 0)
        self.assertEqual(metric_value(families, "vllm:num_requests_running", model_name=MODEL_ID), 0)


if __name__ == "__main__":
    unittest.main()
